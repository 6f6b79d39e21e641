-- Agents: `quire agent`s that serve data sources from networks the instances cannot reach.
-- A row is created with the agent's token (kept as its SHA-256 only) and deleting it revokes the
-- token. The rest is the last connection as the instance holding it reports it: `session`
-- names that connection, so a late write from an old one never overwrites a newer one, and
-- `last_seen` (database clock) tells a live connection from one whose instance died.

CREATE TABLE agents (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    token_digest     TEXT NOT NULL UNIQUE,
    created_at       INTEGER NOT NULL,
    created_by       TEXT,
    session          TEXT,
    agent_id         TEXT,
    reported_name    TEXT,
    version          TEXT,
    protocol         INTEGER,
    instance_id      TEXT,
    address          TEXT,
    connected_at     INTEGER,
    disconnected_at  INTEGER,
    last_seen        INTEGER,
    datasources      TEXT NOT NULL DEFAULT '[]',
    in_flight        INTEGER NOT NULL DEFAULT 0,
    queries          INTEGER NOT NULL DEFAULT 0,
    errors           INTEGER NOT NULL DEFAULT 0,
    p50_us           INTEGER,
    p99_us           INTEGER,
    last_error       TEXT
);

-- The data sources served by agents that a job queries, as a LIKE pattern over the names an
-- instance can reach (`%|a|%|b|%`); NULL for jobs that need no agent. Claims use it so that a
-- job is taken only by an instance that can reach its agents.
ALTER TABLE render_jobs ADD COLUMN agent_sources TEXT;
