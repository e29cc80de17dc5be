//! Lease rows: what an ACK promised, written before the ACK leaves.

use std::net::Ipv4Addr;

use serde::Serialize;
use sqlx::SqliteConnection;

use super::{Pool, StoreError};
use crate::types::MacAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    Active,
    Released,
    /// The client said the address was in use; it is kept out of the pool until expiry.
    Declined,
}

impl LeaseState {
    fn as_str(self) -> &'static str {
        match self {
            LeaseState::Active => "active",
            LeaseState::Released => "released",
            LeaseState::Declined => "declined",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => LeaseState::Active,
            "released" => LeaseState::Released,
            "declined" => LeaseState::Declined,
            _ => return None,
        })
    }
}

impl TryFrom<String> for LeaseState {
    type Error = StoreError;
    fn try_from(s: String) -> Result<Self, StoreError> {
        LeaseState::parse(&s).ok_or_else(|| StoreError::Corrupt(format!("lease state `{s}`")))
    }
}

/// A lease as stored: the address as text, the rest parsed by their types.
#[derive(sqlx::FromRow)]
struct LeaseRow {
    ip: String,
    #[sqlx(try_from = "String")]
    mac: MacAddr,
    #[sqlx(try_from = "String")]
    state: LeaseState,
    hostname: Option<String>,
    expires_at: i64,
    updated_at: i64,
}

/// One address and what it is bound to. Times are Unix seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub state: LeaseState,
    pub hostname: Option<String>,
    pub expires_at: i64,
    pub updated_at: i64,
}

impl Lease {
    pub fn is_active(&self, now: i64) -> bool {
        self.state == LeaseState::Active && self.expires_at > now
    }

    /// Whether the address is unavailable to anyone else at `now`.
    pub fn holds(&self, now: i64) -> bool {
        match self.state {
            LeaseState::Active | LeaseState::Declined => self.expires_at > now,
            LeaseState::Released => false,
        }
    }

    /// The state shown to people: an active lease past its end is `expired`.
    pub fn shown_state(&self, now: i64) -> &'static str {
        if self.state == LeaseState::Active && self.expires_at <= now {
            "expired"
        } else {
            self.state.as_str()
        }
    }
}

/// Writes a batch of leases in one statement per few hundred rows, in the caller's
/// transaction. Later writes of the same address win; rows keep the order of their last
/// write, so a MAC's old binding is released before its new one becomes active.
pub async fn upsert_many(conn: &mut SqliteConnection, leases: &[&Lease]) -> Result<(), StoreError> {
    let mut last = std::collections::HashMap::with_capacity(leases.len());
    for (i, l) in leases.iter().enumerate() {
        last.insert(l.ip, i);
    }
    let rows: Vec<&Lease> = leases
        .iter()
        .enumerate()
        .filter(|(i, l)| last.get(&l.ip) == Some(i))
        .map(|(_, l)| *l)
        .collect();
    for chunk in rows.chunks(500) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO leases (ip, mac, state, hostname, expires_at, updated_at) ",
        );
        q.push_values(chunk, |mut row, l| {
            row.push_bind(l.ip.to_string())
                .push_bind(l.mac.to_string())
                .push_bind(l.state.as_str())
                .push_bind(l.hostname.clone())
                .push_bind(l.expires_at)
                .push_bind(l.updated_at);
        });
        q.push(
            " ON CONFLICT (ip) DO UPDATE SET mac = excluded.mac, state = excluded.state, \
             hostname = excluded.hostname, expires_at = excluded.expires_at, \
             updated_at = excluded.updated_at",
        );
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Every lease row, for rebuilding the DHCP table at start and for the API.
pub async fn all(pool: &Pool) -> Result<Vec<Lease>, StoreError> {
    let rows: Vec<LeaseRow> = sqlx::query_as(
        "SELECT ip, mac, state, hostname, expires_at, updated_at FROM leases ORDER BY ip",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Lease {
                ip: r
                    .ip
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("lease ip `{}`", r.ip)))?,
                mac: r.mac,
                state: r.state,
                hostname: r.hostname,
                expires_at: r.expires_at,
                updated_at: r.updated_at,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SyncMode;

    fn lease(ip: &str, mac: u8, state: LeaseState) -> Lease {
        Lease {
            ip: ip.parse().unwrap(),
            mac: MacAddr([2, 0, 0, 0, 0, mac]),
            state,
            hostname: Some("n1".into()),
            expires_at: 100,
            updated_at: 1,
        }
    }

    #[tokio::test]
    async fn upsert_round_trips_and_replaces_by_address() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::store::open(dir.path(), SyncMode::Normal)
            .await
            .unwrap();
        let mut conn = pool.acquire().await.unwrap();
        upsert_many(&mut conn, &[&lease("10.0.0.5", 1, LeaseState::Active)])
            .await
            .unwrap();
        upsert_many(&mut conn, &[&lease("10.0.0.5", 2, LeaseState::Active)])
            .await
            .unwrap();
        drop(conn);
        let rows = all(&pool).await.unwrap();
        assert_eq!(rows, vec![lease("10.0.0.5", 2, LeaseState::Active)]);
    }

    #[tokio::test]
    async fn a_batch_keeps_the_last_write_of_each_address_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::store::open(dir.path(), SyncMode::Normal)
            .await
            .unwrap();
        let mut conn = pool.acquire().await.unwrap();
        let a5 = lease("10.0.0.5", 1, LeaseState::Active);
        let r5 = lease("10.0.0.5", 1, LeaseState::Released);
        let a6 = lease("10.0.0.6", 1, LeaseState::Active);
        // MAC 1 takes .5, then moves to .6: .5 must be released before .6 is active.
        upsert_many(&mut conn, &[&a5, &r5, &a6]).await.unwrap();
        drop(conn);
        assert_eq!(all(&pool).await.unwrap(), vec![r5, a6]);
    }

    #[tokio::test]
    async fn one_active_lease_per_mac_is_enforced_by_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::store::open(dir.path(), SyncMode::Normal)
            .await
            .unwrap();
        let mut conn = pool.acquire().await.unwrap();
        upsert_many(&mut conn, &[&lease("10.0.0.5", 1, LeaseState::Active)])
            .await
            .unwrap();
        assert!(
            upsert_many(&mut conn, &[&lease("10.0.0.6", 1, LeaseState::Active)])
                .await
                .is_err()
        );
        upsert_many(&mut conn, &[&lease("10.0.0.5", 1, LeaseState::Released)])
            .await
            .unwrap();
        upsert_many(&mut conn, &[&lease("10.0.0.6", 1, LeaseState::Active)])
            .await
            .unwrap();
    }
}
