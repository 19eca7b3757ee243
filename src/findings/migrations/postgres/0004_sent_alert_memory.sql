-- Version 3: the repeat/update memory of "one fact, one alert". For each
-- sink, the alert last sent for each fact (its stable id), with what an
-- update needs (every place, event and pushed list so far) as JSON the
-- alert dispatcher owns. A restart, or another replica,
-- then updates the alert instead of raising a new one.
CREATE TABLE sent_alerts (
    sink           TEXT    NOT NULL,
    fact           TEXT    NOT NULL,
    first_seen_ms  BIGINT  NOT NULL,
    sent_at_ms     BIGINT  NOT NULL,
    body           TEXT    NOT NULL,
    PRIMARY KEY (sink, fact)
);
CREATE INDEX sent_alerts_by_first_seen ON sent_alerts (sink, first_seen_ms);
