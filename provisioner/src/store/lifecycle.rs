//! Lifecycle tables of `provisioner.db`: nodes, their transitions, the rack plan, agent and
//! admin tokens, and refused calls. The decisions are in `crate::lifecycle`; this is only
//! how they are kept.

use serde::Serialize;
use sqlx::{Row, Sqlite, Transaction};

use super::{Pool, StoreError};
use crate::lifecycle::machine::State;
use crate::lifecycle::plan::Slot;
use crate::types::MacAddr;

/// A node as stored.
#[derive(Clone, Debug, Serialize)]
pub struct NodeRecord {
    pub id: i64,
    pub mac: MacAddr,
    pub state: State,
    pub state_since_ms: i64,
    pub slot: Option<String>,
    pub inspected_at_ms: Option<i64>,
    pub created_at_ms: i64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TransitionRow {
    pub at_ms: i64,
    pub from: String,
    pub to: String,
    pub cause: String,
    pub actor: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct RefusalRow {
    pub at_ms: i64,
    pub peer: String,
    pub path: String,
    pub reason: String,
}

fn node_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<NodeRecord, StoreError> {
    let json: String = r.try_get("state_json")?;
    let state = serde_json::from_str(&json)
        .map_err(|e| StoreError::Corrupt(format!("node state `{json}`: {e}")))?;
    let mac: String = r.try_get("mac")?;
    Ok(NodeRecord {
        id: r.try_get("id")?,
        mac: mac
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("node MAC `{mac}`")))?,
        state,
        state_since_ms: r.try_get("state_since_ms")?,
        slot: r.try_get("slot")?,
        inspected_at_ms: r.try_get("inspected_at_ms")?,
        created_at_ms: r.try_get("created_at_ms")?,
    })
}

macro_rules! node_select {
    ($rest:literal) => {
        concat!(
            "SELECT id, mac, state_json, state_since_ms, slot, inspected_at_ms, created_at_ms FROM nodes ",
            $rest
        )
    };
}

pub async fn all_nodes(pool: &Pool) -> Result<Vec<NodeRecord>, StoreError> {
    let rows = sqlx::query(node_select!("ORDER BY id"))
        .fetch_all(pool)
        .await?;
    rows.iter().map(node_from_row).collect()
}

/// The nodes that hold a slot of the rack `site/row/rack`.
pub async fn rack_nodes(
    pool: &Pool,
    site: &str,
    row: &str,
    rack: &str,
) -> Result<Vec<NodeRecord>, StoreError> {
    let rows = sqlx::query(node_select!(
        "WHERE slot IN (SELECT slot FROM plan_slots WHERE site = ? AND row = ? AND rack = ?)
         ORDER BY id"
    ))
    .bind(site)
    .bind(row)
    .bind(rack)
    .fetch_all(pool)
    .await?;
    rows.iter().map(node_from_row).collect()
}

/// The nodes whose state is one of `states` (by name).
pub async fn nodes_in_states(pool: &Pool, states: &[&str]) -> Result<Vec<NodeRecord>, StoreError> {
    // One query per name keeps the SQL static; the names are the lifecycle's own.
    let mut out = Vec::new();
    for state in states {
        let rows = sqlx::query(node_select!("WHERE state = ? ORDER BY id"))
            .bind(state)
            .fetch_all(pool)
            .await?;
        for r in &rows {
            out.push(node_from_row(r)?);
        }
    }
    Ok(out)
}

pub async fn node_by_mac(
    tx: &mut Transaction<'_, Sqlite>,
    mac: MacAddr,
) -> Result<Option<NodeRecord>, StoreError> {
    let row = sqlx::query(node_select!("WHERE mac = ?"))
        .bind(mac.to_string())
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(node_from_row).transpose()
}

pub async fn node_by_id(pool: &Pool, id: i64) -> Result<Option<NodeRecord>, StoreError> {
    let row = sqlx::query(node_select!("WHERE id = ?"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(node_from_row).transpose()
}

pub async fn insert_node(
    tx: &mut Transaction<'_, Sqlite>,
    mac: MacAddr,
    state: &State,
    now_ms: i64,
) -> Result<NodeRecord, StoreError> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO nodes (mac, state, state_json, state_since_ms, created_at_ms)
         VALUES (?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(mac.to_string())
    .bind(state.name())
    .bind(state_json(state))
    .bind(now_ms)
    .bind(now_ms)
    .fetch_one(&mut **tx)
    .await?;
    Ok(NodeRecord {
        id,
        mac,
        state: state.clone(),
        state_since_ms: now_ms,
        slot: None,
        inspected_at_ms: None,
        created_at_ms: now_ms,
    })
}

fn state_json(state: &State) -> String {
    serde_json::to_string(state).expect("a state serializes")
}

pub async fn set_state(
    tx: &mut Transaction<'_, Sqlite>,
    id: i64,
    state: &State,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE nodes SET state = ?, state_json = ?, state_since_ms = ? WHERE id = ?")
        .bind(state.name())
        .bind(state_json(state))
        .bind(now_ms)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn set_slot(
    tx: &mut Transaction<'_, Sqlite>,
    id: i64,
    slot: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE nodes SET slot = ? WHERE id = ?")
        .bind(slot)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn set_facts(
    tx: &mut Transaction<'_, Sqlite>,
    id: i64,
    facts: Option<&str>,
    now_ms: Option<i64>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE nodes SET facts = ?, inspected_at_ms = ? WHERE id = ?")
        .bind(facts)
        .bind(now_ms)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn facts(pool: &Pool, id: i64) -> Result<Option<serde_json::Value>, StoreError> {
    let text: Option<String> = sqlx::query_scalar("SELECT facts FROM nodes WHERE id = ?")
        .bind(id)
        .fetch_optional(pool)
        .await?
        .flatten();
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(format!("node facts: {e}")))
    })
    .transpose()
}

pub async fn add_transition(
    tx: &mut Transaction<'_, Sqlite>,
    id: i64,
    row: &TransitionRow,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO transitions (node_id, at_ms, from_state, to_state, cause, actor)
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(id)
    .bind(row.at_ms)
    .bind(&row.from)
    .bind(&row.to)
    .bind(&row.cause)
    .bind(&row.actor)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn timeline(pool: &Pool, id: i64) -> Result<Vec<TransitionRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT at_ms, from_state, to_state, cause, actor FROM transitions
         WHERE node_id = ? ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(TransitionRow {
                at_ms: r.try_get("at_ms")?,
                from: r.try_get("from_state")?,
                to: r.try_get("to_state")?,
                cause: r.try_get("cause")?,
                actor: r.try_get("actor")?,
            })
        })
        .collect()
}

/// The slots taken, and by which node's MAC.
pub async fn taken_slots(
    tx: &mut Transaction<'_, Sqlite>,
) -> Result<Vec<(String, String)>, StoreError> {
    let rows = sqlx::query("SELECT slot, mac FROM nodes WHERE slot IS NOT NULL")
        .fetch_all(&mut **tx)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("slot")?, r.try_get("mac")?)))
        .collect()
}

/// The SKU the rack plan puts in `slot`.
pub async fn slot_sku(
    tx: &mut Transaction<'_, Sqlite>,
    slot: &str,
) -> Result<Option<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT sku FROM plan_slots WHERE slot = ?")
            .bind(slot)
            .fetch_optional(&mut **tx)
            .await?,
    )
}

/// The NICs the rack plan cables `slot` for: (count, Mb/s), when it says.
pub async fn slot_nics(
    tx: &mut Transaction<'_, Sqlite>,
    slot: &str,
) -> Result<Option<(u32, u32)>, StoreError> {
    let row = sqlx::query("SELECT nics, nic_mbps FROM plan_slots WHERE slot = ?")
        .bind(slot)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(r) = row else { return Ok(None) };
    let nics: Option<i64> = r.try_get("nics")?;
    let mbps: Option<i64> = r.try_get("nic_mbps")?;
    Ok(mbps.map(|m| (nics.unwrap_or(1) as u32, m as u32)))
}

pub async fn plan(tx: &mut Transaction<'_, Sqlite>) -> Result<Vec<Slot>, StoreError> {
    let rows =
        sqlx::query("SELECT site, row, rack, u, serial, mac, sku, nics, nic_mbps FROM plan_slots")
            .fetch_all(&mut **tx)
            .await?;
    rows.iter()
        .map(|r| {
            let mac: Option<String> = r.try_get("mac")?;
            Ok(Slot {
                site: r.try_get("site")?,
                row: r.try_get("row")?,
                rack: r.try_get("rack")?,
                u: r.try_get::<i64, _>("u")? as u16,
                serial: r.try_get("serial")?,
                mac: mac
                    .map(|m| {
                        m.parse()
                            .map_err(|_| StoreError::Corrupt(format!("plan MAC `{m}`")))
                    })
                    .transpose()?,
                sku: r.try_get("sku")?,
                nics: r.try_get::<Option<i64>, _>("nics")?.map(|n| n as u32),
                nic_mbps: r.try_get::<Option<i64>, _>("nic_mbps")?.map(|n| n as u32),
            })
        })
        .collect()
}

/// Replaces the rack plan inside `tx`, and records the import. Whether the new plan may
/// replace the old (no held slot may vanish) is the lifecycle's to decide, before this.
pub async fn replace_plan(
    tx: &mut Transaction<'_, Sqlite>,
    slots: &[Slot],
    source: &str,
    skus_version: u32,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM plan_slots")
        .execute(&mut **tx)
        .await?;
    for s in slots {
        sqlx::query(
            "INSERT INTO plan_slots (slot, site, row, rack, u, serial, mac, sku, nics, nic_mbps)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(s.id())
        .bind(&s.site)
        .bind(&s.row)
        .bind(&s.rack)
        .bind(i64::from(s.u))
        .bind(&s.serial)
        .bind(s.mac.map(|m| m.to_string()))
        .bind(&s.sku)
        .bind(s.nics.map(i64::from))
        .bind(s.nic_mbps.map(i64::from))
        .execute(&mut **tx)
        .await?;
    }
    sqlx::query(
        "INSERT INTO plan_imports (at_ms, source, slots, skus_version) VALUES (?, ?, ?, ?)",
    )
    .bind(now_ms)
    .bind(source)
    .bind(slots.len() as i64)
    .bind(i64::from(skus_version))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Where an agent token stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenStatus {
    /// Issued for the node's current boot, not used for its report yet.
    Issued,
    /// It carried this boot's inspection report.
    Reported,
    /// An earlier boot's, or the node started over.
    Superseded,
}

impl TokenStatus {
    fn parse(s: &str) -> Result<TokenStatus, StoreError> {
        match s {
            "issued" => Ok(TokenStatus::Issued),
            "reported" => Ok(TokenStatus::Reported),
            "superseded" => Ok(TokenStatus::Superseded),
            other => Err(StoreError::Corrupt(format!("agent token status `{other}`"))),
        }
    }
}

/// An agent token's record: its node's MAC and where it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentToken {
    pub mac: MacAddr,
    pub status: TokenStatus,
}

/// How long a superseded token is kept, so that its replay is named as one; after that it is
/// only "unknown", which is refused all the same.
const SUPERSEDED_KEPT_MS: i64 = 24 * 3600 * 1000;

/// Stores a new agent token for `mac`, issued to the requester at `peer`, and supersedes the
/// node's earlier ones.
pub async fn issue_agent_token(
    tx: &mut Transaction<'_, Sqlite>,
    hash: &str,
    mac: MacAddr,
    peer: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE agent_tokens SET status = 'superseded' WHERE mac = ? AND status != 'superseded'",
    )
    .bind(mac.to_string())
    .execute(&mut **tx)
    .await?;
    // A node that loops on its script (iPXE retries) must not grow the table without bound.
    sqlx::query(
        "DELETE FROM agent_tokens WHERE mac = ? AND status = 'superseded' AND issued_at_ms < ?",
    )
    .bind(mac.to_string())
    .bind(now_ms - SUPERSEDED_KEPT_MS)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO agent_tokens (hash, mac, issued_at_ms, status, peer)
         VALUES (?, ?, ?, 'issued', ?)",
    )
    .bind(hash)
    .bind(mac.to_string())
    .bind(now_ms)
    .bind(peer)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// To whom the token of `mac`'s current boot was issued, while it has not carried its report.
pub async fn unreported_agent_token(
    tx: &mut Transaction<'_, Sqlite>,
    mac: MacAddr,
) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT peer FROM agent_tokens WHERE mac = ? AND status = 'issued' AND peer IS NOT NULL
         ORDER BY issued_at_ms DESC LIMIT 1",
    )
    .bind(mac.to_string())
    .fetch_optional(&mut **tx)
    .await?)
}

/// Supersedes every token of the node `mac` (it starts over, or is retired).
pub async fn end_agent_tokens(
    tx: &mut Transaction<'_, Sqlite>,
    mac: MacAddr,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE agent_tokens SET status = 'superseded' WHERE mac = ? AND status != 'superseded'",
    )
    .bind(mac.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn agent_token(
    tx: &mut Transaction<'_, Sqlite>,
    hash: &str,
) -> Result<Option<AgentToken>, StoreError> {
    let row = sqlx::query("SELECT mac, status FROM agent_tokens WHERE hash = ?")
        .bind(hash)
        .fetch_optional(&mut **tx)
        .await?;
    row.map(|r| {
        let mac: String = r.try_get("mac")?;
        Ok(AgentToken {
            mac: mac
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("agent token MAC `{mac}`")))?,
            status: TokenStatus::parse(&r.try_get::<String, _>("status")?)?,
        })
    })
    .transpose()
}

pub async fn mark_token_reported(
    tx: &mut Transaction<'_, Sqlite>,
    hash: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE agent_tokens SET status = 'reported' WHERE hash = ?")
        .bind(hash)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn add_admin_token(
    pool: &Pool,
    hash: &str,
    name: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO admin_tokens (hash, name, created_at_ms) VALUES (?, ?, ?)
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(hash)
    .bind(name)
    .bind(now_ms)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes the admin token `name` and its web sessions; whether there was one.
pub async fn delete_admin_token(pool: &Pool, name: &str) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM web_sessions WHERE token_name = ?")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    let done = sqlx::query("DELETE FROM admin_tokens WHERE name = ?")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done.rows_affected() == 1)
}

/// The name of the admin token with this hash.
pub async fn admin_token(pool: &Pool, hash: &str) -> Result<Option<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT name FROM admin_tokens WHERE hash = ?")
            .bind(hash)
            .fetch_optional(pool)
            .await?,
    )
}

/// How long refused calls are kept: long enough to look into an incident.
pub const REFUSALS_KEPT_MS: i64 = 90 * 24 * 60 * 60 * 1000;

/// Records a refused call, and forgets those older than `REFUSALS_KEPT_MS`.
pub async fn add_refusal(
    pool: &Pool,
    mac: Option<&str>,
    peer: &str,
    path: &str,
    reason: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM auth_refusals WHERE at_ms < ?")
        .bind(now_ms - REFUSALS_KEPT_MS)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO auth_refusals (at_ms, mac, peer, path, reason) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(now_ms)
    .bind(mac)
    .bind(peer)
    .bind(path)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// How many calls from `peer` were recorded as refused since `since_ms`.
pub async fn refusals_since(pool: &Pool, peer: &str, since_ms: i64) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM auth_refusals WHERE peer = ? AND at_ms >= ?")
            .bind(peer)
            .bind(since_ms)
            .fetch_one(pool)
            .await?,
    )
}

pub async fn refusals(pool: &Pool, mac: &str) -> Result<Vec<RefusalRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT at_ms, peer, path, reason FROM auth_refusals WHERE mac = ? ORDER BY id",
    )
    .bind(mac)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(RefusalRow {
                at_ms: r.try_get("at_ms")?,
                peer: r.try_get("peer")?,
                path: r.try_get("path")?,
                reason: r.try_get("reason")?,
            })
        })
        .collect()
}

/// The slots the plan has in one rack, lowest U first: (slot id, whether it plans NIC speed).
pub async fn rack_slots(
    pool: &Pool,
    site: &str,
    row: &str,
    rack: &str,
) -> Result<Vec<(String, bool)>, StoreError> {
    let rows = sqlx::query(
        "SELECT slot, nic_mbps FROM plan_slots WHERE site = ? AND row = ? AND rack = ? ORDER BY u",
    )
    .bind(site)
    .bind(row)
    .bind(rack)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let mbps: Option<i64> = r.try_get("nic_mbps")?;
            Ok((r.try_get("slot")?, mbps.is_some()))
        })
        .collect()
}

/// The node matched to `slot`, if any.
pub async fn node_by_slot(pool: &Pool, slot: &str) -> Result<Option<NodeRecord>, StoreError> {
    let row = sqlx::query(node_select!("WHERE slot = ?"))
        .bind(slot)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(node_from_row).transpose()
}

/// One slot of the plan as the status pages show it, with the slot's id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanRow {
    pub slot: String,
    pub site: String,
    pub row: String,
    pub rack: String,
    pub u: i64,
    pub serial: Option<String>,
    pub mac: Option<String>,
    pub sku: String,
}

fn plan_row(r: &sqlx::sqlite::SqliteRow) -> Result<PlanRow, StoreError> {
    Ok(PlanRow {
        slot: r.try_get("slot")?,
        site: r.try_get("site")?,
        row: r.try_get("row")?,
        rack: r.try_get("rack")?,
        u: r.try_get("u")?,
        serial: r.try_get("serial")?,
        mac: r.try_get("mac")?,
        sku: r.try_get("sku")?,
    })
}

/// The whole rack plan, by site, row, rack and U.
/// The latest rack plan import's id (0 before any): every change of the plan is an import.
pub async fn plan_version(pool: &Pool) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM plan_imports")
            .fetch_one(pool)
            .await?,
    )
}

pub async fn plan_rows(pool: &Pool) -> Result<Vec<PlanRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT slot, site, row, rack, u, serial, mac, sku FROM plan_slots
         ORDER BY site, row, rack, u",
    )
    .fetch_all(pool)
    .await?;
    rows.iter().map(plan_row).collect()
}

/// One rack's slots of the plan, lowest U first.
pub async fn rack_plan_rows(
    pool: &Pool,
    site: &str,
    row: &str,
    rack: &str,
) -> Result<Vec<PlanRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT slot, site, row, rack, u, serial, mac, sku FROM plan_slots
         WHERE site = ? AND row = ? AND rack = ? ORDER BY u",
    )
    .bind(site)
    .bind(row)
    .bind(rack)
    .fetch_all(pool)
    .await?;
    rows.iter().map(plan_row).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SyncMode;

    #[tokio::test]
    async fn refusals_older_than_kept_are_forgotten_when_another_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::store::open(dir.path(), SyncMode::Normal)
            .await
            .unwrap();
        let now = 10 * REFUSALS_KEPT_MS;
        let old = now - REFUSALS_KEPT_MS - 1;
        add_refusal(
            &pool,
            Some("52:54:00:00:00:01"),
            "10.0.0.9",
            "/x",
            "old",
            old,
        )
        .await
        .unwrap();
        assert_eq!(refusals_since(&pool, "10.0.0.9", 0).await.unwrap(), 1);
        add_refusal(
            &pool,
            Some("52:54:00:00:00:01"),
            "10.0.0.9",
            "/x",
            "new",
            now,
        )
        .await
        .unwrap();
        let kept = refusals(&pool, "52:54:00:00:00:01").await.unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].reason, "new");
        assert_eq!(
            refusals_since(&pool, "10.0.0.9", now - 60_000)
                .await
                .unwrap(),
            1
        );
    }
}
