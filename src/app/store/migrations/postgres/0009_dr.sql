-- Disaster recovery. An epoch is recorded at every takeover (a replica promoted and its
-- instances turned active), once per timeline: a region whose database has an older epoch than
-- its peer's knows that the peer took over after it, and fences itself. The events are the
-- history the HA page shows.

CREATE TABLE dr_epochs (
    epoch     BIGINT PRIMARY KEY,
    timeline  BIGINT NOT NULL UNIQUE,
    wal       TEXT,
    at        BIGINT NOT NULL,
    instance  TEXT
);

CREATE TABLE dr_events (
    id        TEXT PRIMARY KEY,
    at        BIGINT NOT NULL,
    instance  TEXT NOT NULL,
    event     TEXT NOT NULL,
    timeline  BIGINT,
    wal       TEXT,
    epoch     BIGINT,
    detail    TEXT
);
