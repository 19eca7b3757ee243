-- Version 2: the undecided retry budget, one for every replica. When each
-- still-undecided delivery was first seen; the row goes when the delivery
-- is decided.
CREATE TABLE undecided (
    source          TEXT    NOT NULL,
    endpoint        TEXT    NOT NULL,
    event_id        TEXT    NOT NULL,
    first_seen_ms   BIGINT  NOT NULL,
    PRIMARY KEY (source, endpoint, event_id)
);
CREATE INDEX undecided_by_first_seen ON undecided (first_seen_ms);
