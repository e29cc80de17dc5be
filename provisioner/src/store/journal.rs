//! Nodes seen while booting and their boot events (DHCP, TFTP, HTTP), recorded against MACs.

use std::net::Ipv4Addr;

use serde::Serialize;
use std::collections::HashMap;

use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use super::{Pool, StoreError};
use crate::types::MacAddr;

/// Which part of the boot plane saw the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Dhcp,
    Tftp,
    Http,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            EventKind::Dhcp => "dhcp",
            EventKind::Tftp => "tftp",
            EventKind::Http => "http",
        }
    }
}

/// One thing that happened to a node while it booted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootEvent {
    pub mac: MacAddr,
    pub ip: Option<Ipv4Addr>,
    /// Unix milliseconds.
    pub at_ms: i64,
    pub kind: EventKind,
    pub detail: String,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq, sqlx::FromRow)]
pub struct NodeRow {
    pub mac: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub last_ip: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq, sqlx::FromRow)]
pub struct EventRow {
    pub at_ms: i64,
    pub kind: String,
    pub detail: String,
}

/// Rows per multi-row INSERT: well under SQLite's limit on bound parameters.
const ROWS_PER_STATEMENT: usize = 500;

/// Records `events` in the caller's transaction: each node row is created or touched once,
/// the events appended, a few hundred rows per statement (a busy boot network sends
/// thousands a second).
pub async fn record(conn: &mut SqliteConnection, events: &[BootEvent]) -> Result<(), StoreError> {
    let mut latest: HashMap<MacAddr, (i64, Option<Ipv4Addr>)> = HashMap::new();
    for ev in events {
        let e = latest.entry(ev.mac).or_insert((ev.at_ms / 1000, ev.ip));
        e.0 = e.0.max(ev.at_ms / 1000);
        if ev.ip.is_some() {
            e.1 = ev.ip;
        }
    }
    let nodes: Vec<_> = latest.into_iter().collect();
    for chunk in nodes.chunks(ROWS_PER_STATEMENT) {
        let mut q =
            QueryBuilder::<Sqlite>::new("INSERT INTO nodes (mac, first_seen, last_seen, last_ip) ");
        q.push_values(chunk, |mut row, (mac, (secs, ip))| {
            row.push_bind(mac.to_string())
                .push_bind(*secs)
                .push_bind(*secs)
                .push_bind(ip.map(|ip| ip.to_string()));
        });
        q.push(
            " ON CONFLICT (mac) DO UPDATE SET last_seen = MAX(nodes.last_seen, excluded.last_seen), \
             last_ip = COALESCE(excluded.last_ip, nodes.last_ip)",
        );
        q.build().execute(&mut *conn).await?;
    }
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        let mut q =
            QueryBuilder::<Sqlite>::new("INSERT INTO boot_events (mac, at_ms, kind, detail) ");
        q.push_values(chunk, |mut row, ev| {
            row.push_bind(ev.mac.to_string())
                .push_bind(ev.at_ms)
                .push_bind(ev.kind.as_str())
                .push_bind(ev.detail.clone());
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Forgets all but the latest `keep` events of each of `macs`.
pub async fn keep_latest(pool: &Pool, macs: &[MacAddr], keep: u32) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    for mac in macs {
        let mac = mac.to_string();
        sqlx::query(
            "DELETE FROM boot_events WHERE mac = ?1 AND id < (
               SELECT id FROM boot_events WHERE mac = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
        )
        .bind(&mac)
        .bind(i64::from(keep.max(1)) - 1)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// How long the journal keeps a MAC it has not seen since.
pub const SEEN_KEPT_SECS: i64 = 30 * 24 * 3600;

/// Forgets MACs not seen for `SEEN_KEPT_SECS`, and past `max` MACs the longest unseen ones,
/// with their events: a flood of made-up MACs on the wire churns the journal, never grows
/// it past that. Returns how many were forgotten.
pub async fn forget_unseen(pool: &Pool, now_secs: i64, max: u32) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await?;
    let mut gone: Vec<String> =
        sqlx::query_scalar("DELETE FROM nodes WHERE last_seen < ? RETURNING mac")
            .bind(now_secs - SEEN_KEPT_SECS)
            .fetch_all(&mut *tx)
            .await?;
    gone.extend(
        sqlx::query_scalar::<_, String>(
            "DELETE FROM nodes WHERE mac IN (
               SELECT mac FROM nodes ORDER BY last_seen DESC LIMIT -1 OFFSET ?) RETURNING mac",
        )
        .bind(i64::from(max))
        .fetch_all(&mut *tx)
        .await?,
    );
    for mac in &gone {
        sqlx::query("DELETE FROM boot_events WHERE mac = ?")
            .bind(mac)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(gone.len() as u64)
}

pub async fn list(pool: &Pool) -> Result<Vec<NodeRow>, StoreError> {
    Ok(
        sqlx::query_as("SELECT mac, first_seen, last_seen, last_ip FROM nodes ORDER BY mac")
            .fetch_all(pool)
            .await?,
    )
}

pub async fn get(
    pool: &Pool,
    mac: MacAddr,
) -> Result<Option<(NodeRow, Vec<EventRow>)>, StoreError> {
    let mac = mac.to_string();
    let Some(row): Option<NodeRow> =
        sqlx::query_as("SELECT mac, first_seen, last_seen, last_ip FROM nodes WHERE mac = ?1")
            .bind(&mac)
            .fetch_optional(pool)
            .await?
    else {
        return Ok(None);
    };
    let events =
        sqlx::query_as("SELECT at_ms, kind, detail FROM boot_events WHERE mac = ?1 ORDER BY id")
            .bind(&mac)
            .fetch_all(pool)
            .await?;
    Ok(Some((row, events)))
}
