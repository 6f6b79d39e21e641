-- Instances (one row per process), leader-role leases with their history, and cache versions.

CREATE TABLE instances (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    version             TEXT NOT NULL,
    build               TEXT NOT NULL,
    address             TEXT NOT NULL,
    started_at          BIGINT NOT NULL,
    heartbeat_at        BIGINT NOT NULL,
    key_fingerprint     TEXT NOT NULL,
    license_fingerprint TEXT NOT NULL,
    schema_version      BIGINT NOT NULL,
    draining            BIGINT NOT NULL DEFAULT 0,
    drain_requested     BIGINT NOT NULL DEFAULT 0,
    nats                TEXT NOT NULL DEFAULT 'off',
    stopped_at          BIGINT
);
CREATE INDEX instances_heartbeat ON instances(heartbeat_at);

-- A role is held by `holder` until `expires_at` (database clock); `term` grows with every
-- change of holder and fences the holder's writes.
CREATE TABLE leases (
    role        TEXT PRIMARY KEY,
    holder      TEXT,
    term        BIGINT NOT NULL DEFAULT 0,
    expires_at  BIGINT NOT NULL DEFAULT 0,
    acquired_at BIGINT
);
INSERT INTO leases (role) VALUES ('scheduler'), ('mailer'), ('janitor');

CREATE TABLE lease_history (
    role       TEXT NOT NULL,
    term       BIGINT NOT NULL,
    holder     TEXT NOT NULL,
    held_from  BIGINT NOT NULL,
    held_until BIGINT,
    ended      TEXT,
    PRIMARY KEY (role, term)
);

-- History is written by a trigger so that acquiring and releasing stay single statements.
CREATE FUNCTION lease_history_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.term > OLD.term THEN
        UPDATE lease_history SET held_until = OLD.expires_at, ended = 'expired'
            WHERE role = OLD.role AND term = OLD.term AND held_until IS NULL;
        INSERT INTO lease_history (role, term, holder, held_from) VALUES (NEW.role, NEW.term, NEW.holder, NEW.acquired_at);
    ELSIF NEW.holder IS NULL AND OLD.holder IS NOT NULL THEN
        UPDATE lease_history SET held_until = NEW.expires_at, ended = 'released'
            WHERE role = OLD.role AND term = OLD.term AND held_until IS NULL;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER lease_history_track AFTER UPDATE ON leases FOR EACH ROW EXECUTE FUNCTION lease_history_track();

-- Bumped when something instances cache changes; instances compare it every few seconds, so
-- caches stay right even when the NATS hint is lost.
CREATE TABLE cache_versions (
    kind    TEXT PRIMARY KEY,
    version BIGINT NOT NULL
);
INSERT INTO cache_versions (kind, version) VALUES ('fonts', 0);
