//! The appliance's store: SQLite in the data directory by default, through `sqlx` so the
//! same queries can later run on PostgreSQL. Schema changes are migrations in
//! `provisioner/migrations/`.

pub mod burnin;
pub mod checklists;
pub mod installs;
pub mod journal;
pub mod leases;
pub mod nodes;
pub mod plan;
pub mod refusals;
pub mod sessions;
pub mod tokens;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use serde::Deserialize;

pub type Pool = SqlitePool;

/// How hard the store pushes a commit to the disk before an ACK leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Survives the process being killed, not a power cut (Kea memfile's guarantee).
    Normal,
    /// Every commit reaches the disk (fsync) before it is acknowledged.
    #[default]
    Full,
}

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
    let pool = open_file(data_dir, "provisioner.db", sync).await?;
    sqlx::migrate!("./migrations").run(&pool).await?;
    Ok(pool)
}

/// Opens `DATA_DIR/journal.db`, the boot journal (nodes seen, boot events). It is a separate
/// file so that its stream of writes never shares SQLite's one write lock with the leases;
/// it commits without fsync: a power cut may lose the last events, never a lease.
pub async fn open_journal(data_dir: &Path) -> Result<Pool, StoreError> {
    let pool = open_file(data_dir, "journal.db", SyncMode::Normal).await?;
    sqlx::migrate!("./migrations-journal").run(&pool).await?;
    Ok(pool)
}

async fn open_file(data_dir: &Path, name: &str, sync: SyncMode) -> Result<Pool, StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
        path: data_dir.display().to_string(),
        source,
    })?;
    let path = data_dir.join(name);
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
    Ok(pool)
}
