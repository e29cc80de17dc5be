//! Credentials in `provisioner.db`, kept only as hashes: the agents' one-time tokens, bound to
//! a node's MAC and boot, and the operators' admin tokens.

use sqlx::{Sqlite, Transaction};

use super::{Pool, StoreError};
use crate::types::MacAddr;

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

impl TryFrom<String> for TokenStatus {
    type Error = StoreError;
    fn try_from(s: String) -> Result<TokenStatus, StoreError> {
        match s.as_str() {
            "issued" => Ok(TokenStatus::Issued),
            "reported" => Ok(TokenStatus::Reported),
            "superseded" => Ok(TokenStatus::Superseded),
            other => Err(StoreError::Corrupt(format!("agent token status `{other}`"))),
        }
    }
}

/// An agent token's record: its node's MAC and where it stands.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct AgentToken {
    #[sqlx(try_from = "String")]
    pub mac: MacAddr,
    #[sqlx(try_from = "String")]
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
    Ok(
        sqlx::query_as("SELECT mac, status FROM agent_tokens WHERE hash = ?")
            .bind(hash)
            .fetch_optional(&mut **tx)
            .await?,
    )
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
