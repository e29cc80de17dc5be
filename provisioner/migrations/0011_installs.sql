-- Root device hints of a slot (Ironic's schema, compact form `serial=S1;size=>=100`); none:
-- the SKU's, else the smallest disk of at least 4 GiB.
ALTER TABLE plan_slots ADD COLUMN root_device TEXT;

-- Each install of a node: the image and disk the appliance chose, the node's credential for
-- its installed system (only its sha256), and how far it got. `written_ms` set: the disk holds
-- the image, read back, and the node boots its disk from then on; a node that network-boots
-- before that is given the discovery image and writes again.
CREATE TABLE installs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id          INTEGER NOT NULL REFERENCES nodes (id),
    image            TEXT    NOT NULL,
    raw_sha256       TEXT    NOT NULL,
    disk_json        TEXT    NOT NULL,
    credential_hash  TEXT    UNIQUE,
    started_ms       BIGINT  NOT NULL,
    written_ms       BIGINT,
    written_bytes    BIGINT,
    received_bytes   BIGINT,
    write_seconds    REAL,
    installed_ms     BIGINT,
    -- Ended by a failure, a new install, a retire or a reprovision: its credential no longer
    -- stands.
    ended_ms         BIGINT,
    -- A written disk of an install ended by a retire or a reprovision has its signatures wiped
    -- by the agent at the node's next discovery boot: then this is set.
    wiped_ms         BIGINT,
    -- Why the last wipe failed; cleared at the node's next discovery boot, which tries again.
    wipe_error       TEXT
);
CREATE INDEX installs_by_node ON installs (node_id, id);
