-- Schedules, their occurrences (one row per schedule and fire time, so each fires once however
-- many instances run), and the mail outbox (one row per recipient).

CREATE TABLE schedules (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    template_id       TEXT NOT NULL,
    template_name     TEXT NOT NULL,
    cron              TEXT NOT NULL,
    timezone          TEXT NOT NULL,
    parameters        TEXT NOT NULL,
    data              TEXT NOT NULL,
    recipients        TEXT NOT NULL,
    subject           TEXT NOT NULL,
    body              TEXT NOT NULL,
    enabled           BIGINT NOT NULL,
    hold_for_review   BIGINT NOT NULL,
    jitter_ms         BIGINT NOT NULL,
    misfire           TEXT NOT NULL,
    misfire_window_ms BIGINT NOT NULL,
    next_fire_at      BIGINT,
    last_fire_at      BIGINT,
    skipped_total     BIGINT NOT NULL DEFAULT 0,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    created_by        TEXT
);
CREATE INDEX schedules_due ON schedules(enabled, next_fire_at);

CREATE TABLE occurrences (
    id          TEXT PRIMARY KEY,
    schedule_id TEXT NOT NULL REFERENCES schedules(id) ON DELETE CASCADE,
    fire_at     BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    term        BIGINT NOT NULL,
    instance    TEXT NOT NULL,
    job_id      TEXT,
    state       TEXT NOT NULL,
    error       TEXT,
    reviewed_by TEXT,
    reviewed_at BIGINT,
    UNIQUE (schedule_id, fire_at)
);
CREATE INDEX occurrences_state ON occurrences(state);

CREATE TABLE outbox (
    id               TEXT PRIMARY KEY,
    occurrence_id    TEXT REFERENCES occurrences(id) ON DELETE CASCADE,
    job_id           TEXT,
    recipient        TEXT NOT NULL,
    subject          TEXT NOT NULL,
    body             TEXT NOT NULL,
    attachment_name  TEXT,
    message_id       TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    last_reply       TEXT,
    claimed_by       TEXT,
    claim_expires_at BIGINT,
    sent_at          BIGINT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX outbox_due ON outbox(state, next_attempt_at);
CREATE INDEX outbox_occurrence ON outbox(occurrence_id);
