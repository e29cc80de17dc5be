-- Rack installation checklists: one per rack, on the template version it started with.
CREATE TABLE checklists (
    rack              TEXT    NOT NULL PRIMARY KEY,   -- site/row/rack
    rack_type         TEXT    NOT NULL,
    template_version  INTEGER NOT NULL,
    started_at_ms     BIGINT  NOT NULL,
    started_by        TEXT    NOT NULL
);

-- Every tick by a person; an undo keeps the tick and says who undid it and why.
CREATE TABLE checklist_ticks (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    rack          TEXT    NOT NULL REFERENCES checklists (rack),
    step          TEXT    NOT NULL,
    slot          TEXT,                                -- the slot of a per-slot step
    by            TEXT    NOT NULL,
    at_ms         BIGINT  NOT NULL,
    undone_by     TEXT,
    undone_at_ms  BIGINT,
    undo_reason   TEXT
);
CREATE INDEX checklist_ticks_by_rack ON checklist_ticks (rack, step, slot);

-- The rack's audit trail: every change, by whom, when.
CREATE TABLE checklist_audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    rack    TEXT    NOT NULL,
    at_ms   BIGINT  NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    detail  TEXT    NOT NULL
);
CREATE INDEX checklist_audit_by_rack ON checklist_audit (rack, id);
