-- Version 7: alerts in flight. Before a dispatcher sends an alert it writes
-- the alert here; the send's success moves it to `sent_alerts` (in the
-- transaction that marks its findings delivered), a receiver's refusal
-- deletes it. An entry still here when another process takes over the sink
-- is an alert that may have arrived without being remembered (its sender
-- lost the store, or died, between the send and the record): the successor
-- treats it as sent, so that the fact's next alert is an update, never a
-- second `new`.
CREATE TABLE alerts_in_flight (
    sink           TEXT    NOT NULL,
    fact           TEXT    NOT NULL,
    first_seen_ms  BIGINT  NOT NULL,
    started_at_ms  BIGINT  NOT NULL,
    body           TEXT    NOT NULL,
    PRIMARY KEY (sink, fact)
);
