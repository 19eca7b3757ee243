-- Version 6: triage. A finding is open, acknowledged or resolved, with who,
-- when and a note of the last change. A resolution is owed to every sink
-- the finding's alert was delivered to: one outbox row per (finding, sink),
-- written when the finding is resolved (for sinks already told) or when a
-- resolved finding's alert is delivered (for the others), and claimed with
-- leases (FOR UPDATE SKIP LOCKED) and retried like the alerts.
ALTER TABLE findings ADD COLUMN triage_state TEXT NOT NULL DEFAULT 'open'
    CHECK (triage_state IN ('open', 'acknowledged', 'resolved'));
ALTER TABLE findings ADD COLUMN triage_by TEXT;
ALTER TABLE findings ADD COLUMN triage_at_ms BIGINT;
ALTER TABLE findings ADD COLUMN triage_note TEXT;
CREATE INDEX findings_by_triage_state ON findings (triage_state, id);

CREATE TABLE resolutions (
    finding         BIGINT  NOT NULL REFERENCES findings (id),
    sink            TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'delivered')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT  NOT NULL,
    delivered_at_ms BIGINT,
    last_error      TEXT,
    PRIMARY KEY (finding, sink)
);
CREATE INDEX resolutions_due ON resolutions (sink, next_attempt_ms, finding) WHERE state = 'pending';
