-- Version 4: exceptions. A finding an exceptions entry covers is kept with
-- the entry's `file:line` and owed to no sink. NULL for every earlier
-- finding: they were all alerted.
ALTER TABLE findings ADD COLUMN excepted_by TEXT;
