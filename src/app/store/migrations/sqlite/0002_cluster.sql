-- Instances (one row per process), leader-role leases with their history, and cache versions.

CREATE TABLE instances (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    version             TEXT NOT NULL,
    build               TEXT NOT NULL,
    address             TEXT NOT NULL,
    started_at          INTEGER NOT NULL,
    heartbeat_at        INTEGER NOT NULL,
    key_fingerprint     TEXT NOT NULL,
    license_fingerprint TEXT NOT NULL,
    schema_version      INTEGER NOT NULL,
    draining            INTEGER NOT NULL DEFAULT 0,
    drain_requested     INTEGER NOT NULL DEFAULT 0,
    nats                TEXT NOT NULL DEFAULT 'off',
    stopped_at          INTEGER
);
CREATE INDEX instances_heartbeat ON instances(heartbeat_at);

-- A role is held by `holder` until `expires_at` (database clock); `term` grows with every
-- change of holder and fences the holder's writes.
CREATE TABLE leases (
    role        TEXT PRIMARY KEY,
    holder      TEXT,
    term        INTEGER NOT NULL DEFAULT 0,
    expires_at  INTEGER NOT NULL DEFAULT 0,
    acquired_at INTEGER
);
INSERT INTO leases (role) VALUES ('scheduler'), ('mailer'), ('janitor');

CREATE TABLE lease_history (
    role       TEXT NOT NULL,
    term       INTEGER NOT NULL,
    holder     TEXT NOT NULL,
    held_from  INTEGER NOT NULL,
    held_until INTEGER,
    ended      TEXT,
    PRIMARY KEY (role, term)
);

-- History is written by triggers so that acquiring and releasing stay single statements.
CREATE TRIGGER lease_taken AFTER UPDATE OF term ON leases WHEN NEW.term > OLD.term
BEGIN
    UPDATE lease_history SET held_until = OLD.expires_at, ended = 'expired'
        WHERE role = OLD.role AND term = OLD.term AND held_until IS NULL;
    INSERT INTO lease_history (role, term, holder, held_from) VALUES (NEW.role, NEW.term, NEW.holder, NEW.acquired_at);
END;

CREATE TRIGGER lease_released AFTER UPDATE OF holder ON leases WHEN NEW.holder IS NULL AND OLD.holder IS NOT NULL
BEGIN
    UPDATE lease_history SET held_until = NEW.expires_at, ended = 'released'
        WHERE role = OLD.role AND term = OLD.term AND held_until IS NULL;
END;

-- Bumped when something instances cache changes; instances compare it every few seconds, so
-- caches stay right even when the NATS hint is lost.
CREATE TABLE cache_versions (
    kind    TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
INSERT INTO cache_versions (kind, version) VALUES ('fonts', 0);
