-- Bursting: a schedule's burst query (JSON {datasource, text, key_column, recipients_column,
-- parameters}) makes one report per row. Each row of an occurrence is one burst item, unique per
-- (occurrence, row key), so a row is rendered and mailed once however many leaders try.
-- `burst_rows` is set when the burst query has run and its items are written.
ALTER TABLE schedules ADD COLUMN burst TEXT;
ALTER TABLE occurrences ADD COLUMN burst_rows BIGINT;

CREATE TABLE burst_items (
    occurrence_id TEXT NOT NULL REFERENCES occurrences(id) ON DELETE CASCADE,
    row_key       TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    parameters    TEXT NOT NULL,
    recipients    TEXT NOT NULL,
    job_id        TEXT,
    state         TEXT NOT NULL,
    error         TEXT,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (occurrence_id, row_key)
);
CREATE INDEX burst_items_state ON burst_items(state);
CREATE INDEX burst_items_job ON burst_items(job_id);
