-- What a node's agent says while it works (burn-in progress), newest kept per node.
CREATE TABLE agent_progress (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id  INTEGER NOT NULL REFERENCES nodes (id),
    at_ms    BIGINT  NOT NULL,
    line     TEXT    NOT NULL
);
CREATE INDEX agent_progress_by_node ON agent_progress (node_id, id);
