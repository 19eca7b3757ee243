-- Version 3: the undecided retry budget. When each still-undecided delivery
-- was first seen, so that the budget survives a restart and is one for
-- every process on the file; the row goes when the delivery is decided.
CREATE TABLE undecided (
    source          TEXT    NOT NULL,
    endpoint        TEXT    NOT NULL,
    event_id        TEXT    NOT NULL,
    first_seen_ms   INTEGER NOT NULL,
    PRIMARY KEY (source, endpoint, event_id)
) WITHOUT ROWID;
CREATE INDEX undecided_by_first_seen ON undecided (first_seen_ms);
