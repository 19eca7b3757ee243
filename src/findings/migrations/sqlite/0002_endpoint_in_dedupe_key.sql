-- Version 2: the dedupe key gains the endpoint (webhook endpoint name, Pub/Sub
-- subscription): an event id is unique only within the endpoint that
-- sent it. SQLite cannot change a primary key in place, so both tables
-- are rebuilt (foreign keys are off while migrating) keeping every row
-- and finding id. Rows from before carry the empty endpoint, which is
-- what sources with one endpoint (scan, manifests) still use: their
-- dedupe carries over, while a webhook or Pub/Sub redelivery of an
-- event decided before the upgrade is decided once more (an alert may
-- repeat; none is lost).
CREATE TABLE decisions_v2 (
    source          TEXT    NOT NULL,
    endpoint        TEXT    NOT NULL,
    event_id        TEXT    NOT NULL,
    received_at_ms  INTEGER NOT NULL,
    verdict         TEXT    NOT NULL,
    PRIMARY KEY (source, endpoint, event_id)
) WITHOUT ROWID;
INSERT INTO decisions_v2 (source, endpoint, event_id, received_at_ms, verdict)
    SELECT source, '', event_id, received_at_ms, verdict FROM decisions;

CREATE TABLE findings_v2 (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at_ms    INTEGER NOT NULL,
    received_at_ms   INTEGER NOT NULL,
    source           TEXT    NOT NULL,
    endpoint         TEXT    NOT NULL,
    event_id         TEXT    NOT NULL,
    action           TEXT,
    repository       TEXT,
    digest           TEXT,
    tag              TEXT,
    verdict          TEXT    NOT NULL,
    reason           TEXT    NOT NULL,
    evidence         TEXT    NOT NULL,   -- JSON array of audit::Evidence
    manifest_commit  TEXT,
    index_generation INTEGER NOT NULL,
    UNIQUE (source, endpoint, event_id),
    FOREIGN KEY (source, endpoint, event_id) REFERENCES decisions (source, endpoint, event_id)
);
INSERT INTO findings_v2 (id, created_at_ms, received_at_ms, source, endpoint, event_id,
        action, repository, digest, tag, verdict, reason, evidence, manifest_commit,
        index_generation)
    SELECT id, created_at_ms, received_at_ms, source, '', event_id, action, repository,
        digest, tag, verdict, reason, evidence, manifest_commit, index_generation
    FROM findings;

DROP TABLE findings;
DROP TABLE decisions;
ALTER TABLE decisions_v2 RENAME TO decisions;
ALTER TABLE findings_v2 RENAME TO findings;
CREATE INDEX decisions_by_received  ON decisions (received_at_ms);
CREATE INDEX findings_by_verdict    ON findings (verdict, id);
CREATE INDEX findings_by_digest     ON findings (digest, id);
CREATE INDEX findings_by_repository ON findings (repository, id);
CREATE INDEX findings_by_received   ON findings (received_at_ms);
