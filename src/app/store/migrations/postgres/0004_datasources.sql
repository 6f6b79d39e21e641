-- Data sources: where reports fetch their data. `settings` is JSON without secrets; the secret
-- settings (passwords, URLs with credentials) are kept apart in `secrets`, sealed with
-- encryption.key. `checked_at` and `last_error` record the last connection test.

CREATE TABLE datasources (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    settings    TEXT NOT NULL,
    secrets     TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    created_by  TEXT,
    checked_at  BIGINT,
    last_error  TEXT
);
