-- DHCPv4 leases. One row per address, so an address can never be held by two MACs;
-- at most one active row per MAC.
CREATE TABLE leases (
    ip          TEXT    NOT NULL PRIMARY KEY,
    mac         TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('active', 'released', 'declined')),
    hostname    TEXT,
    expires_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);
CREATE UNIQUE INDEX leases_one_active_per_mac ON leases (mac) WHERE state = 'active';
CREATE INDEX leases_by_mac ON leases (mac);
