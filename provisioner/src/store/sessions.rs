//! Web sessions: an operator signed in to the status pages with an admin token. Only the
//! hash of the cookie's value is kept.

use super::{Pool, StoreError};

/// A new session for the admin token `token_name`, until `expires_at_ms`. Expired sessions
/// go at the same time, so the table stays the size of the people signed in.
pub async fn add(
    pool: &Pool,
    hash: &str,
    token_name: &str,
    now_ms: i64,
    expires_at_ms: i64,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM web_sessions WHERE expires_at_ms <= ?")
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO web_sessions (hash, token_name, created_at_ms, expires_at_ms)
         VALUES (?, ?, ?, ?)",
    )
    .bind(hash)
    .bind(token_name)
    .bind(now_ms)
    .bind(expires_at_ms)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The admin token's name of the session with this hash, if it has not expired and its
/// token still exists (a token deleted by hand, without the foreign keys on, ends its
/// sessions too).
pub async fn find(pool: &Pool, hash: &str, now_ms: i64) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT s.token_name FROM web_sessions s JOIN admin_tokens t ON t.name = s.token_name
         WHERE s.hash = ? AND s.expires_at_ms > ?",
    )
    .bind(hash)
    .bind(now_ms)
    .fetch_optional(pool)
    .await?)
}

/// Ends the session with this hash (signing out); none is fine.
pub async fn remove(pool: &Pool, hash: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM web_sessions WHERE hash = ?")
        .bind(hash)
        .execute(pool)
        .await?;
    Ok(())
}
