-- Disaster recovery. An epoch is recorded at every takeover (a replica promoted and its
-- instances turned active), once per timeline: a region whose database has an older epoch than
-- its peer's knows that the peer took over after it, and fences itself. The events are the
-- history the HA page shows.

CREATE TABLE dr_epochs (
    epoch     INTEGER PRIMARY KEY,
    timeline  INTEGER NOT NULL UNIQUE,
    wal       TEXT,
    at        INTEGER NOT NULL,
    instance  TEXT
);

CREATE TABLE dr_events (
    id        TEXT PRIMARY KEY,
    at        INTEGER NOT NULL,
    instance  TEXT NOT NULL,
    event     TEXT NOT NULL,
    timeline  INTEGER,
    wal       TEXT,
    epoch     INTEGER,
    detail    TEXT
);
