-- Version 1: decisions (dedupe), findings (the outbox), per-sink delivery state.
-- The same rows as the SQLite store's, with one difference in the outbox:
-- several writers commit findings out of id order, so a sink cannot keep a
-- watermark of what it has seen. Instead every finding has a deliveries row
-- for every known sink, written with the finding; a sink's first claim adds
-- the rows for the findings before it (under a table lock that makes the
-- two never miss each other).
CREATE TABLE decisions (
    source          TEXT    NOT NULL,
    endpoint        TEXT    NOT NULL,
    event_id        TEXT    NOT NULL,
    received_at_ms  BIGINT  NOT NULL,
    verdict         TEXT    NOT NULL,
    PRIMARY KEY (source, endpoint, event_id)
);
CREATE INDEX decisions_by_received ON decisions (received_at_ms);

CREATE TABLE findings (
    id               BIGSERIAL PRIMARY KEY,
    created_at_ms    BIGINT  NOT NULL,
    received_at_ms   BIGINT  NOT NULL,
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
    index_generation BIGINT  NOT NULL,
    UNIQUE (source, endpoint, event_id),
    FOREIGN KEY (source, endpoint, event_id) REFERENCES decisions (source, endpoint, event_id)
);
CREATE INDEX findings_by_verdict    ON findings (verdict, id);
CREATE INDEX findings_by_digest     ON findings (digest, id);
CREATE INDEX findings_by_repository ON findings (repository, id);
CREATE INDEX findings_by_received   ON findings (received_at_ms);

CREATE TABLE sinks (
    sink TEXT PRIMARY KEY
);

CREATE TABLE deliveries (
    finding         BIGINT  NOT NULL REFERENCES findings (id),
    sink            TEXT    NOT NULL REFERENCES sinks (sink),
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'delivered')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT  NOT NULL,
    delivered_at_ms BIGINT,
    last_error      TEXT,
    PRIMARY KEY (finding, sink)
);
CREATE INDEX deliveries_due ON deliveries (sink, next_attempt_ms, finding) WHERE state = 'pending';
