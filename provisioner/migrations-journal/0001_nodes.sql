-- The boot journal lives in its own SQLite file (journal.db): a busy boot network writes
-- thousands of events a second, and they must never wait on, or delay, a lease commit.
-- Nodes seen on the provisioning network, and what happened to each while it booted:
-- every DHCP exchange, TFTP transfer and HTTP fetch, against its MAC.
CREATE TABLE nodes (
    mac         TEXT    NOT NULL PRIMARY KEY,
    first_seen  BIGINT  NOT NULL,
    last_seen   BIGINT  NOT NULL,
    last_ip     TEXT
);
CREATE TABLE boot_events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    mac     TEXT    NOT NULL,
    at_ms   BIGINT  NOT NULL,
    kind    TEXT    NOT NULL CHECK (kind IN ('dhcp', 'tftp', 'http')),
    detail  TEXT    NOT NULL
);
CREATE INDEX boot_events_by_mac ON boot_events (mac, id);
