-- Version 1: decisions (dedupe), findings (the outbox), per-sink delivery state.
CREATE TABLE decisions (
    source          TEXT    NOT NULL,
    event_id        TEXT    NOT NULL,
    received_at_ms  INTEGER NOT NULL,
    verdict         TEXT    NOT NULL,
    PRIMARY KEY (source, event_id)
) WITHOUT ROWID;
CREATE INDEX decisions_by_received ON decisions (received_at_ms);

CREATE TABLE findings (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at_ms    INTEGER NOT NULL,
    received_at_ms   INTEGER NOT NULL,
    source           TEXT    NOT NULL,
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
    UNIQUE (source, event_id),
    FOREIGN KEY (source, event_id) REFERENCES decisions (source, event_id)
);
CREATE INDEX findings_by_verdict    ON findings (verdict, id);
CREATE INDEX findings_by_digest     ON findings (digest, id);
CREATE INDEX findings_by_repository ON findings (repository, id);
CREATE INDEX findings_by_received   ON findings (received_at_ms);

-- A sink is known from its first claim. Every finding with id <= watermark
-- has a deliveries row for the sink; later ones are pending implicitly.
CREATE TABLE sinks (
    sink      TEXT    PRIMARY KEY,
    watermark INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE deliveries (
    finding         INTEGER NOT NULL REFERENCES findings (id),
    sink            TEXT    NOT NULL REFERENCES sinks (sink),
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'delivered')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    delivered_at_ms INTEGER,
    last_error      TEXT,
    PRIMARY KEY (finding, sink)
) WITHOUT ROWID;
CREATE INDEX deliveries_due ON deliveries (sink, next_attempt_ms, finding) WHERE state = 'pending';
