//! The lifecycle's nodes in `provisioner.db`: each node's state, slot and facts, and its
//! timeline of transitions. What they mean is decided in `crate::lifecycle`; this is how they
//! are kept.

use serde::Serialize;
use sqlx::{Sqlite, Transaction};

use super::{Pool, StoreError};
use crate::lifecycle::machine::State;
use crate::types::MacAddr;

/// A node as stored.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct NodeRecord {
    pub id: i64,
    #[sqlx(try_from = "String")]
    pub mac: MacAddr,
    #[sqlx(json, rename = "state_json")]
    pub state: State,
    pub state_since_ms: i64,
    pub slot: Option<String>,
    pub inspected_at_ms: Option<i64>,
    pub created_at_ms: i64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq, sqlx::FromRow)]
pub struct TransitionRow {
    pub at_ms: i64,
    #[sqlx(rename = "from_state")]
    pub from: String,
    #[sqlx(rename = "to_state")]
    pub to: String,
    pub cause: String,
    pub actor: String,
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
    Ok(sqlx::query_as(node_select!("ORDER BY id"))
        .fetch_all(pool)
        .await?)
}

/// The nodes that hold a slot of the rack `site/row/rack`.
pub async fn rack_nodes(
    pool: &Pool,
    site: &str,
    row: &str,
    rack: &str,
) -> Result<Vec<NodeRecord>, StoreError> {
    Ok(sqlx::query_as(node_select!(
        "WHERE slot IN (SELECT slot FROM plan_slots WHERE site = ? AND row = ? AND rack = ?)
         ORDER BY id"
    ))
    .bind(site)
    .bind(row)
    .bind(rack)
    .fetch_all(pool)
    .await?)
}

/// The nodes whose state is one of `states` (by name).
pub async fn nodes_in_states(pool: &Pool, states: &[&str]) -> Result<Vec<NodeRecord>, StoreError> {
    // One query per name keeps the SQL static; the names are the lifecycle's own.
    let mut out = Vec::new();
    for state in states {
        out.extend(
            sqlx::query_as::<_, NodeRecord>(node_select!("WHERE state = ? ORDER BY id"))
                .bind(state)
                .fetch_all(pool)
                .await?,
        );
    }
    Ok(out)
}

pub async fn node_by_mac(
    tx: &mut Transaction<'_, Sqlite>,
    mac: MacAddr,
) -> Result<Option<NodeRecord>, StoreError> {
    Ok(sqlx::query_as(node_select!("WHERE mac = ?"))
        .bind(mac.to_string())
        .fetch_optional(&mut **tx)
        .await?)
}

pub async fn node_by_id(pool: &Pool, id: i64) -> Result<Option<NodeRecord>, StoreError> {
    Ok(sqlx::query_as(node_select!("WHERE id = ?"))
        .bind(id)
        .fetch_optional(pool)
        .await?)
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

/// The node's last inspection report, as the agent's type, inside `tx`.
pub async fn inspected_facts(
    tx: &mut Transaction<'_, Sqlite>,
    id: i64,
) -> Result<Option<provisioner_protocol::Facts>, StoreError> {
    let text: Option<String> = sqlx::query_scalar("SELECT facts FROM nodes WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut **tx)
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
    Ok(sqlx::query_as(
        "SELECT at_ms, from_state, to_state, cause, actor FROM transitions
         WHERE node_id = ? ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?)
}

/// The slots taken, and by which node's MAC.
pub async fn taken_slots(tx: &mut Transaction<'_, Sqlite>) -> Result<Vec<TakenSlot>, StoreError> {
    Ok(
        sqlx::query_as("SELECT slot, mac FROM nodes WHERE slot IS NOT NULL")
            .fetch_all(&mut **tx)
            .await?,
    )
}

/// A slot held by a node. A stored MAC that does not parse is an error, not a free slot.
#[derive(Debug, sqlx::FromRow)]
pub struct TakenSlot {
    pub slot: String,
    #[sqlx(try_from = "String")]
    pub mac: MacAddr,
}

/// The node matched to `slot`, if any.
pub async fn node_by_slot(pool: &Pool, slot: &str) -> Result<Option<NodeRecord>, StoreError> {
    Ok(sqlx::query_as(node_select!("WHERE slot = ?"))
        .bind(slot)
        .fetch_optional(pool)
        .await?)
}
