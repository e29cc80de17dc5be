//! Lease rows: what an ACK promised, written before the ACK leaves.

use std::net::Ipv4Addr;

use serde::Serialize;
use sqlx::{Row, SqliteConnection};

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

/// Writes `leases` in order, in the caller's transaction: the previous binding of a MAC must
/// come before its new one, as `LeaseTable::bind` returns them.
pub async fn upsert(conn: &mut SqliteConnection, lease: &Lease) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO leases (ip, mac, state, hostname, expires_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (ip) DO UPDATE SET mac = excluded.mac, state = excluded.state,
            hostname = excluded.hostname, expires_at = excluded.expires_at,
            updated_at = excluded.updated_at",
    )
    .bind(lease.ip.to_string())
    .bind(lease.mac.to_string())
    .bind(lease.state.as_str())
    .bind(lease.hostname.as_deref())
    .bind(lease.expires_at)
    .bind(lease.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Every lease row, for rebuilding the DHCP table at start and for the API.
pub async fn all(pool: &Pool) -> Result<Vec<Lease>, StoreError> {
    let rows = sqlx::query(
        "SELECT ip, mac, state, hostname, expires_at, updated_at FROM leases ORDER BY ip",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let ip: String = row.try_get("ip")?;
            let mac: String = row.try_get("mac")?;
            let state: String = row.try_get("state")?;
            Ok(Lease {
                ip: ip
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("lease ip `{ip}`")))?,
                mac: mac
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("lease mac `{mac}`")))?,
                state: LeaseState::parse(&state)
                    .ok_or_else(|| StoreError::Corrupt(format!("lease state `{state}`")))?,
                hostname: row.try_get("hostname")?,
                expires_at: row.try_get("expires_at")?,
                updated_at: row.try_get("updated_at")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SyncMode;

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
        upsert(&mut conn, &lease("10.0.0.5", 1, LeaseState::Active))
            .await
            .unwrap();
        upsert(&mut conn, &lease("10.0.0.5", 2, LeaseState::Active))
            .await
            .unwrap();
        drop(conn);
        let rows = all(&pool).await.unwrap();
        assert_eq!(rows, vec![lease("10.0.0.5", 2, LeaseState::Active)]);
    }

    #[tokio::test]
    async fn one_active_lease_per_mac_is_enforced_by_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::store::open(dir.path(), SyncMode::Normal)
            .await
            .unwrap();
        let mut conn = pool.acquire().await.unwrap();
        upsert(&mut conn, &lease("10.0.0.5", 1, LeaseState::Active))
            .await
            .unwrap();
        assert!(
            upsert(&mut conn, &lease("10.0.0.6", 1, LeaseState::Active))
                .await
                .is_err()
        );
        upsert(&mut conn, &lease("10.0.0.5", 1, LeaseState::Released))
            .await
            .unwrap();
        upsert(&mut conn, &lease("10.0.0.6", 1, LeaseState::Active))
            .await
            .unwrap();
    }
}
