-- Version 4: the checkpoint of an interrupted sweep, by name, as JSON the
-- sweep owns; kept in the store when the store is shared, so that any
-- replica resumes the sweep another one started.
CREATE TABLE scan_checkpoints (
    name           TEXT    PRIMARY KEY,
    body           TEXT    NOT NULL,
    updated_at_ms  BIGINT  NOT NULL
);
