//! Checklist tables of `provisioner.db`: the checklists started, every tick and undo, and
//! each rack's audit trail.

use serde::Serialize;
use sqlx::{Sqlite, Transaction};

use super::{Pool, StoreError};

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct ChecklistRow {
    pub rack: String,
    pub rack_type: String,
    pub template_version: i64,
    pub started_at_ms: i64,
    pub started_by: String,
}

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct TickRow {
    pub step: String,
    pub slot: Option<String>,
    pub by: String,
    pub at_ms: i64,
    pub undone_by: Option<String>,
    pub undone_at_ms: Option<i64>,
    pub undo_reason: Option<String>,
}

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct AuditRow {
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

pub async fn get(pool: &Pool, rack: &str) -> Result<Option<ChecklistRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT rack, rack_type, template_version, started_at_ms, started_by
         FROM checklists WHERE rack = ?",
    )
    .bind(rack)
    .fetch_optional(pool)
    .await?)
}

/// Starts a rack's checklist; false when it has one already.
pub async fn start(
    tx: &mut Transaction<'_, Sqlite>,
    row: &ChecklistRow,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO checklists (rack, rack_type, template_version, started_at_ms, started_by)
         VALUES (?, ?, ?, ?, ?) ON CONFLICT (rack) DO NOTHING",
    )
    .bind(&row.rack)
    .bind(&row.rack_type)
    .bind(row.template_version)
    .bind(row.started_at_ms)
    .bind(&row.started_by)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn ticks(pool: &Pool, rack: &str) -> Result<Vec<TickRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT step, slot, by, at_ms, undone_by, undone_at_ms, undo_reason
         FROM checklist_ticks WHERE rack = ? ORDER BY id",
    )
    .bind(rack)
    .fetch_all(pool)
    .await?)
}

/// The id of the standing (not undone) tick of a step, if any.
pub async fn standing_tick(
    tx: &mut Transaction<'_, Sqlite>,
    rack: &str,
    step: &str,
    slot: Option<&str>,
) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM checklist_ticks
         WHERE rack = ? AND step = ? AND slot IS ? AND undone_at_ms IS NULL",
    )
    .bind(rack)
    .bind(step)
    .bind(slot)
    .fetch_optional(&mut **tx)
    .await?)
}

pub async fn add_tick(
    tx: &mut Transaction<'_, Sqlite>,
    rack: &str,
    step: &str,
    slot: Option<&str>,
    by: &str,
    at_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO checklist_ticks (rack, step, slot, by, at_ms) VALUES (?, ?, ?, ?, ?)")
        .bind(rack)
        .bind(step)
        .bind(slot)
        .bind(by)
        .bind(at_ms)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn undo_tick(
    tx: &mut Transaction<'_, Sqlite>,
    id: i64,
    by: &str,
    reason: &str,
    at_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE checklist_ticks SET undone_by = ?, undone_at_ms = ?, undo_reason = ? WHERE id = ?",
    )
    .bind(by)
    .bind(at_ms)
    .bind(reason)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn audit(
    tx: &mut Transaction<'_, Sqlite>,
    rack: &str,
    at_ms: i64,
    actor: &str,
    action: &str,
    detail: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO checklist_audit (rack, at_ms, actor, action, detail) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(rack)
    .bind(at_ms)
    .bind(actor)
    .bind(action)
    .bind(detail)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn audit_trail(pool: &Pool, rack: &str) -> Result<Vec<AuditRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT at_ms, actor, action, detail FROM checklist_audit WHERE rack = ? ORDER BY id",
    )
    .bind(rack)
    .fetch_all(pool)
    .await?)
}
