-- The node lifecycle (DESIGN.md): one row per node, keyed by the MAC it network-boots from.
-- `state` is the state's name, for queries; `state_json` the whole state (a failure's step
-- and reason, where a held node was).
CREATE TABLE nodes (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    mac             TEXT    NOT NULL UNIQUE,
    state           TEXT    NOT NULL,
    state_json      TEXT    NOT NULL,
    state_since_ms  BIGINT  NOT NULL,
    -- The rack slot it was matched to: a slot holds one node at most.
    slot            TEXT    UNIQUE,
    -- The agent's last inspection report (provisioner_protocol::Facts as JSON).
    facts           TEXT,
    inspected_at_ms BIGINT,
    created_at_ms   BIGINT  NOT NULL
);
CREATE INDEX nodes_by_state ON nodes (state);

-- Every transition: the node's timeline.
CREATE TABLE transitions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id     INTEGER NOT NULL REFERENCES nodes (id),
    at_ms       BIGINT  NOT NULL,
    from_state  TEXT    NOT NULL,
    to_state    TEXT    NOT NULL,
    cause       TEXT    NOT NULL,
    actor       TEXT    NOT NULL
);
CREATE INDEX transitions_by_node ON transitions (node_id, id);

-- The rack plan, as last imported.
CREATE TABLE plan_slots (
    slot    TEXT    NOT NULL PRIMARY KEY,
    site    TEXT    NOT NULL,
    row     TEXT    NOT NULL,
    rack    TEXT    NOT NULL,
    u       INTEGER NOT NULL,
    serial  TEXT    UNIQUE,
    mac     TEXT    UNIQUE,
    sku     TEXT    NOT NULL
);
CREATE TABLE plan_imports (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms         BIGINT  NOT NULL,
    source        TEXT    NOT NULL,
    slots         INTEGER NOT NULL,
    skus_version  INTEGER NOT NULL
);

-- One-time agent tokens, issued in a node's iPXE script: bound to its MAC and to that boot.
-- Only the sha256 of a token is kept. A new boot supersedes the node's earlier tokens; a
-- token that has carried its inspection report cannot carry another.
CREATE TABLE agent_tokens (
    hash          TEXT    NOT NULL PRIMARY KEY,
    mac           TEXT    NOT NULL,
    issued_at_ms  BIGINT  NOT NULL,
    status        TEXT    NOT NULL CHECK (status IN ('issued', 'reported', 'superseded'))
);
CREATE INDEX agent_tokens_by_mac ON agent_tokens (mac, status);

-- Admin API tokens (`provisioner token create NAME`), stored hashed.
CREATE TABLE admin_tokens (
    hash           TEXT    NOT NULL PRIMARY KEY,
    name           TEXT    NOT NULL UNIQUE,
    created_at_ms  BIGINT  NOT NULL
);

-- Calls refused for a missing, forged, replayed or foreign token: who claimed to be whom.
CREATE TABLE auth_refusals (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms   BIGINT  NOT NULL,
    mac     TEXT,
    peer    TEXT    NOT NULL,
    path    TEXT    NOT NULL,
    reason  TEXT    NOT NULL
);
CREATE INDEX auth_refusals_by_mac ON auth_refusals (mac, id);
