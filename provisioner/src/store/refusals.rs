//! Refused calls in `provisioner.db`: who was refused, for what, and why, kept long enough to
//! look into an incident.

use serde::Serialize;

use super::{Pool, StoreError};

/// A refused call, as the node's record shows it.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct RefusalRow {
    pub at_ms: i64,
    pub peer: String,
    pub path: String,
    pub reason: String,
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
    Ok(sqlx::query_as(
        "SELECT at_ms, peer, path, reason FROM auth_refusals WHERE mac = ? ORDER BY id",
    )
    .bind(mac)
    .fetch_all(pool)
    .await?)
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
