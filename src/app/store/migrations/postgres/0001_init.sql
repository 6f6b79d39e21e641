-- Quire schema, version 1. Times are milliseconds since the Unix epoch; booleans are 0/1.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    is_root       BIGINT NOT NULL DEFAULT 0,
    disabled      BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_expiry ON sessions(expires_at);

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    expires_at   BIGINT
);
CREATE INDEX api_tokens_user ON api_tokens(user_id);

CREATE TABLE templates (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    description    TEXT NOT NULL DEFAULT '',
    latest_version BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);

CREATE TABLE template_versions (
    template_id TEXT NOT NULL REFERENCES templates(id) ON DELETE CASCADE,
    version     BIGINT NOT NULL,
    entry       TEXT NOT NULL,
    parameters  TEXT NOT NULL,
    sample_data TEXT,
    size        BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT,
    PRIMARY KEY (template_id, version)
);

CREATE TABLE template_files (
    template_id TEXT NOT NULL,
    version     BIGINT NOT NULL,
    path        TEXT NOT NULL,
    content     BYTEA NOT NULL,
    PRIMARY KEY (template_id, version, path),
    FOREIGN KEY (template_id, version) REFERENCES template_versions(template_id, version) ON DELETE CASCADE
);

-- Jobs keep the template's name so history stays readable after the template is deleted.
CREATE TABLE render_jobs (
    id               TEXT PRIMARY KEY,
    template_id      TEXT NOT NULL,
    template_name    TEXT NOT NULL,
    template_version BIGINT NOT NULL,
    data             TEXT NOT NULL,
    parameters       TEXT NOT NULL,
    state            TEXT NOT NULL,
    stage            TEXT NOT NULL,
    progress         BIGINT NOT NULL DEFAULT 0,
    error            TEXT,
    pages            BIGINT,
    output_size      BIGINT,
    created_by       TEXT,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    expires_at       BIGINT,
    attempts         BIGINT NOT NULL DEFAULT 0,
    claimed_by       TEXT,
    claim_token      TEXT,
    claim_expires_at BIGINT
);
CREATE INDEX render_jobs_queue ON render_jobs(state, created_at);
CREATE INDEX render_jobs_created ON render_jobs(created_at);
CREATE INDEX render_jobs_expiry ON render_jobs(expires_at);

CREATE TABLE render_outputs (
    job_id  TEXT PRIMARY KEY REFERENCES render_jobs(id) ON DELETE CASCADE,
    pdf     BYTEA NOT NULL
);

CREATE TABLE render_events (
    job_id      TEXT NOT NULL REFERENCES render_jobs(id) ON DELETE CASCADE,
    seq         BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    state       TEXT NOT NULL,
    stage       TEXT NOT NULL,
    progress    BIGINT NOT NULL,
    message     TEXT,
    error       TEXT,
    pages       BIGINT,
    output_size BIGINT,
    PRIMARY KEY (job_id, seq)
);

CREATE TABLE flags (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
