//! The appliance's store: SQLite in the data directory by default, through `sqlx` so the
//! same queries can later run on PostgreSQL. Schema changes are migrations in
//! `provisioner/migrations/`.

pub mod leases;
pub mod nodes;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::config::SyncMode;

pub type Pool = SqlitePool;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open the store at {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("cannot migrate the store: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("store query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
}

/// Opens (creating if needed) `DATA_DIR/provisioner.db` and brings its schema up to date.
pub async fn open(data_dir: &Path, sync: SyncMode) -> Result<Pool, StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
        path: data_dir.display().to_string(),
        source,
    })?;
    let path = data_dir.join("provisioner.db");
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?
        .create_if_missing(true)
        // WAL: readers (the API) never block the DHCP writer.
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match sync {
            SyncMode::Normal => SqliteSynchronous::Normal,
            SyncMode::Full => SqliteSynchronous::Full,
        })
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(opts)
        .await
        .map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
    sqlx::migrate!("./migrations").run(&pool).await?;
    Ok(pool)
}
