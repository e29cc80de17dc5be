-- Burn-in: every report a node's agent sent, with the appliance's judgement of it.
CREATE TABLE burnin_runs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id          INTEGER NOT NULL REFERENCES nodes (id),
    at_ms            BIGINT  NOT NULL,
    sku              TEXT    NOT NULL,
    profile_version  INTEGER NOT NULL,
    -- PASS, WARN or FAIL; provisional while `retry` is not empty.
    level            TEXT    NOT NULL CHECK (level IN ('PASS', 'WARN', 'FAIL')),
    -- (device, check) pairs to run again before the node is judged, as JSON.
    retry            TEXT    NOT NULL,
    report           TEXT    NOT NULL,
    judgement        TEXT    NOT NULL
);
CREATE INDEX burnin_runs_by_node ON burnin_runs (node_id, id);

-- Every figure of every judged device: the cohort gate compares a device with its SKU's,
-- driver's and firmware's others.
CREATE TABLE burnin_figures (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      INTEGER NOT NULL REFERENCES burnin_runs (id),
    node_id     INTEGER NOT NULL REFERENCES nodes (id),
    sku         TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    device      TEXT    NOT NULL,
    driver      TEXT,
    firmware    TEXT,
    check_name  TEXT    NOT NULL,
    value       REAL    NOT NULL
);
CREATE INDEX burnin_figures_by_cohort ON burnin_figures (sku, kind, check_name, driver, firmware);
