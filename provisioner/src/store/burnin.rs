//! Burn-in tables of `provisioner.db`: each report with its judgement, and the figures the
//! cohort gate compares against.

use serde::Serialize;
use sqlx::{Sqlite, Transaction};

use super::{Pool, StoreError};

/// One judged report.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct RunRow {
    pub at_ms: i64,
    pub sku: String,
    pub profile_version: i64,
    pub level: String,
    /// (device, check) pairs still to run again.
    #[sqlx(json)]
    pub retry: Vec<(String, String)>,
    #[sqlx(json)]
    pub report: serde_json::Value,
    #[sqlx(json)]
    pub judgement: serde_json::Value,
}

/// A run to store.
pub struct NewRun<'a> {
    pub node_id: i64,
    pub at_ms: i64,
    pub sku: &'a str,
    pub profile_version: u32,
    pub level: &'a str,
    pub retry: &'a [(String, String)],
    pub report: &'a str,
    pub judgement: &'a str,
}

/// A figure of one device, for its cohort.
pub struct Figure<'a> {
    pub kind: &'a str,
    pub device: &'a str,
    pub driver: Option<&'a str>,
    pub firmware: Option<&'a str>,
    pub check: &'a str,
    pub value: f64,
}

pub async fn add_run(
    tx: &mut Transaction<'_, Sqlite>,
    run: &NewRun<'_>,
) -> Result<i64, StoreError> {
    let retry = serde_json::to_string(run.retry).expect("pairs of strings serialize");
    Ok(sqlx::query_scalar(
        "INSERT INTO burnin_runs (node_id, at_ms, sku, profile_version, level, retry, report, judgement)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(run.node_id)
    .bind(run.at_ms)
    .bind(run.sku)
    .bind(i64::from(run.profile_version))
    .bind(run.level)
    .bind(retry)
    .bind(run.report)
    .bind(run.judgement)
    .fetch_one(&mut **tx)
    .await?)
}

pub async fn add_figures(
    tx: &mut Transaction<'_, Sqlite>,
    run_id: i64,
    node_id: i64,
    sku: &str,
    figures: &[Figure<'_>],
) -> Result<(), StoreError> {
    for f in figures {
        sqlx::query(
            "INSERT INTO burnin_figures
               (run_id, node_id, sku, kind, device, driver, firmware, check_name, value)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(run_id)
        .bind(node_id)
        .bind(sku)
        .bind(f.kind)
        .bind(f.device)
        .bind(f.driver)
        .bind(f.firmware)
        .bind(f.check)
        .bind(f.value)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The cohort's latest figures for one check: other nodes of the same SKU, kind, driver and
/// firmware.
pub async fn cohort(
    tx: &mut Transaction<'_, Sqlite>,
    sku: &str,
    kind: &str,
    check: &str,
    driver: Option<&str>,
    firmware: Option<&str>,
    not_node: i64,
) -> Result<Vec<f64>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT value FROM burnin_figures
         WHERE sku = ? AND kind = ? AND check_name = ? AND driver IS ? AND firmware IS ?
           AND node_id != ?
         ORDER BY id DESC LIMIT 5000",
    )
    .bind(sku)
    .bind(kind)
    .bind(check)
    .bind(driver)
    .bind(firmware)
    .bind(not_node)
    .fetch_all(&mut **tx)
    .await?)
}

/// The node's latest run, if any.
pub async fn last_run(
    tx: &mut Transaction<'_, Sqlite>,
    node_id: i64,
) -> Result<Option<RunRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT at_ms, sku, profile_version, level, retry, report, judgement
         FROM burnin_runs WHERE node_id = ? ORDER BY id DESC LIMIT 1",
    )
    .bind(node_id)
    .fetch_optional(&mut **tx)
    .await?)
}

/// Every run of the node, oldest first.
pub async fn runs(pool: &Pool, node_id: i64) -> Result<Vec<RunRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT at_ms, sku, profile_version, level, retry, report, judgement
         FROM burnin_runs WHERE node_id = ? ORDER BY id",
    )
    .bind(node_id)
    .fetch_all(pool)
    .await?)
}

/// Lines of progress kept per node; older ones are dropped as new ones come.
pub const PROGRESS_KEPT: i64 = 500;

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct ProgressRow {
    pub at_ms: i64,
    pub line: String,
}

pub async fn add_progress(
    tx: &mut Transaction<'_, Sqlite>,
    node_id: i64,
    at_ms: i64,
    lines: &[String],
) -> Result<(), StoreError> {
    for line in lines {
        sqlx::query("INSERT INTO agent_progress (node_id, at_ms, line) VALUES (?, ?, ?)")
            .bind(node_id)
            .bind(at_ms)
            .bind(line)
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query(
        "DELETE FROM agent_progress WHERE node_id = ? AND id <= (
           SELECT id FROM agent_progress WHERE node_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
    )
    .bind(node_id)
    .bind(node_id)
    .bind(PROGRESS_KEPT)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The node's last `limit` progress lines, oldest first.
pub async fn progress(
    pool: &Pool,
    node_id: i64,
    limit: i64,
) -> Result<Vec<ProgressRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT at_ms, line FROM (
           SELECT id, at_ms, line FROM agent_progress WHERE node_id = ? ORDER BY id DESC LIMIT ?)
         ORDER BY id",
    )
    .bind(node_id)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// The latest progress line of each node in the rack `site/row/rack`, by node id.
pub async fn rack_progress(
    pool: &Pool,
    site: &str,
    row: &str,
    rack: &str,
) -> Result<std::collections::HashMap<i64, ProgressRow>, StoreError> {
    let rows: Vec<(i64, i64, String)> = sqlx::query_as(
        "SELECT node_id, at_ms, line FROM agent_progress WHERE id IN (
           SELECT MAX(p.id) FROM agent_progress p
           JOIN nodes n ON n.id = p.node_id
           JOIN plan_slots s ON s.slot = n.slot
           WHERE s.site = ? AND s.row = ? AND s.rack = ?
           GROUP BY p.node_id)",
    )
    .bind(site)
    .bind(row)
    .bind(rack)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(node, at_ms, line)| (node, ProgressRow { at_ms, line }))
        .collect())
}
