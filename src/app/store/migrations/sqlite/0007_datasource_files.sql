-- The file a CSV data source reads, uploaded through the API. One per data source, replaced by
-- each upload, and deleted with its data source.

CREATE TABLE datasource_files (
    datasource_id  TEXT PRIMARY KEY REFERENCES datasources(id) ON DELETE CASCADE,
    content        BLOB NOT NULL,
    size           INTEGER NOT NULL,
    uploaded_at    INTEGER NOT NULL
);
