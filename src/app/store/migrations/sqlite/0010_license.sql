-- Licensing. A seat is one instance name licensed under one licence (a `pool`: the licence id,
-- or `unlicensed` for the one server Quire runs on without a key). Seats are granted inside one
-- transaction that first locks the pool's row, so no two instances take the last seat. Releases
-- delete the seat; every grant, takeover and release is kept in the history the HA page shows.

CREATE TABLE license_pools (
    pool        TEXT PRIMARY KEY,
    touched_at  INTEGER NOT NULL
);

CREATE TABLE license_seats (
    pool          TEXT NOT NULL,
    instance_name TEXT NOT NULL,
    instance_id   TEXT NOT NULL,
    taken_at      INTEGER NOT NULL,
    seen_at       INTEGER NOT NULL,
    PRIMARY KEY (pool, instance_name)
);
CREATE INDEX license_seats_instance ON license_seats(instance_id);

CREATE TABLE license_events (
    id            TEXT PRIMARY KEY,
    at            INTEGER NOT NULL,
    pool          TEXT NOT NULL,
    instance_name TEXT NOT NULL,
    instance_id   TEXT NOT NULL,
    event         TEXT NOT NULL,
    actor         TEXT NOT NULL,
    detail        TEXT
);
CREATE INDEX license_events_at ON license_events(at);

-- Which licence each instance runs with, as the HA page names it (licence id and customer,
-- never the key).
ALTER TABLE instances ADD COLUMN license TEXT NOT NULL DEFAULT '';
