//! Installs in `provisioner.db`: per node, the image and disk the appliance chose, the hash of
//! the credential its installed system uses, and how far the install got. What they mean is
//! decided in `crate::lifecycle`; this is how they are kept.

use sqlx::{Sqlite, Transaction};

use super::StoreError;

/// A node's install as stored.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct InstallRecord {
    pub id: i64,
    pub node_id: i64,
    pub image: String,
    pub raw_sha256: String,
    /// `provisioner_protocol::install::TargetDisk` as JSON.
    pub disk_json: String,
    pub started_ms: i64,
    pub written_ms: Option<i64>,
    pub installed_ms: Option<i64>,
    pub ended_ms: Option<i64>,
}

macro_rules! install_select {
    ($rest:literal) => {
        concat!(
            "SELECT id, node_id, image, raw_sha256, disk_json, started_ms, written_ms, \
             installed_ms, ended_ms FROM installs ",
            $rest
        )
    };
}

/// Starts a new install of `node_id`, ending any earlier one (its credential no longer stands).
pub async fn start(
    tx: &mut Transaction<'_, Sqlite>,
    node_id: i64,
    image: &str,
    raw_sha256: &str,
    disk_json: &str,
    now_ms: i64,
) -> Result<i64, StoreError> {
    end_all(tx, node_id, now_ms).await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO installs (node_id, image, raw_sha256, disk_json, started_ms)
         VALUES (?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(node_id)
    .bind(image)
    .bind(raw_sha256)
    .bind(disk_json)
    .bind(now_ms)
    .fetch_one(&mut **tx)
    .await?;
    Ok(id)
}

/// The node's install under way (not ended), if any.
pub async fn current(
    tx: &mut Transaction<'_, Sqlite>,
    node_id: i64,
) -> Result<Option<InstallRecord>, StoreError> {
    Ok(sqlx::query_as(install_select!(
        "WHERE node_id = ? AND ended_ms IS NULL ORDER BY id DESC LIMIT 1"
    ))
    .bind(node_id)
    .fetch_optional(&mut **tx)
    .await?)
}

/// Replaces the install's credential hash: a credential is given out once, with the install
/// instruction, and a second instruction makes a new one.
pub async fn set_credential(
    tx: &mut Transaction<'_, Sqlite>,
    install_id: i64,
    hash: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE installs SET credential_hash = ? WHERE id = ?")
        .bind(hash)
        .bind(install_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The install a credential belongs to, while it stands.
pub async fn by_credential(
    tx: &mut Transaction<'_, Sqlite>,
    hash: &str,
) -> Result<Option<InstallRecord>, StoreError> {
    Ok(sqlx::query_as(install_select!(
        "WHERE credential_hash = ? AND ended_ms IS NULL"
    ))
    .bind(hash)
    .fetch_optional(&mut **tx)
    .await?)
}

/// The agent wrote the image and read it back.
pub async fn set_written(
    tx: &mut Transaction<'_, Sqlite>,
    install_id: i64,
    written_bytes: u64,
    received_bytes: u64,
    seconds: f64,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE installs SET written_ms = ?, written_bytes = ?, received_bytes = ?, write_seconds = ?
         WHERE id = ?",
    )
    .bind(now_ms)
    .bind(i64::try_from(written_bytes).unwrap_or(i64::MAX))
    .bind(i64::try_from(received_bytes).unwrap_or(i64::MAX))
    .bind(seconds)
    .bind(install_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The installed system reported in.
pub async fn set_installed(
    tx: &mut Transaction<'_, Sqlite>,
    install_id: i64,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE installs SET installed_ms = ? WHERE id = ?")
        .bind(now_ms)
        .bind(install_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The install whose written disk is to be wiped (ended by a retire or reprovision, not
/// wiped yet, no failed wipe in this boot), the latest first.
pub async fn pending_wipe(
    tx: &mut Transaction<'_, Sqlite>,
    node_id: i64,
) -> Result<Option<InstallRecord>, StoreError> {
    Ok(sqlx::query_as(install_select!(
        "WHERE node_id = ? AND written_ms IS NOT NULL AND ended_ms IS NOT NULL
           AND wiped_ms IS NULL AND wipe_error IS NULL
         ORDER BY id DESC LIMIT 1"
    ))
    .bind(node_id)
    .fetch_optional(&mut **tx)
    .await?)
}

/// The agent wiped the disk of `install_id`: every earlier written install of the node was on
/// a disk the same hints chose, so those are done as well.
pub async fn set_wiped(
    tx: &mut Transaction<'_, Sqlite>,
    node_id: i64,
    install_id: i64,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE installs SET wiped_ms = ? WHERE id = ? OR (node_id = ? AND id < ? AND ended_ms IS NOT NULL AND wiped_ms IS NULL)",
    )
    .bind(now_ms)
    .bind(install_id)
    .bind(node_id)
    .bind(install_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The wipe failed, and why: not asked again until the node's next discovery boot.
pub async fn set_wipe_error(
    tx: &mut Transaction<'_, Sqlite>,
    install_id: i64,
    reason: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE installs SET wipe_error = ? WHERE id = ?")
        .bind(reason)
        .bind(install_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Why the node's last wipe failed in this boot, if it did.
pub async fn wipe_error(
    tx: &mut Transaction<'_, Sqlite>,
    node_id: i64,
) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT wipe_error FROM installs WHERE node_id = ? AND wipe_error IS NOT NULL
         ORDER BY id DESC LIMIT 1",
    )
    .bind(node_id)
    .fetch_optional(&mut **tx)
    .await?)
}

/// A new discovery boot tries a failed wipe again.
pub async fn clear_wipe_errors(
    tx: &mut Transaction<'_, Sqlite>,
    node_id: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE installs SET wipe_error = NULL WHERE node_id = ? AND wipe_error IS NOT NULL",
    )
    .bind(node_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Ends every install of the node not yet ended: failed, retried, reprovisioned, retired.
pub async fn end_all(
    tx: &mut Transaction<'_, Sqlite>,
    node_id: i64,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE installs SET ended_ms = ? WHERE node_id = ? AND ended_ms IS NULL")
        .bind(now_ms)
        .bind(node_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Records the installed system's driver report on its install.
pub async fn set_drivers(
    tx: &mut Transaction<'_, Sqlite>,
    install_id: i64,
    now_ms: i64,
    report_json: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE installs SET drivers_ms = ?, drivers_report = ? WHERE id = ?")
        .bind(now_ms)
        .bind(report_json)
        .bind(install_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The driver report of an install, if its system sent one.
pub async fn drivers_report(
    tx: &mut Transaction<'_, Sqlite>,
    install_id: i64,
) -> Result<Option<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT drivers_report FROM installs WHERE id = ?")
            .bind(install_id)
            .fetch_optional(&mut **tx)
            .await?
            .flatten(),
    )
}

/// The node's latest install that has a driver report: the image, when it came, and the
/// report (JSON).
pub async fn latest_drivers(
    pool: &super::Pool,
    node_id: i64,
) -> Result<Option<(String, i64, String)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT image, drivers_ms, drivers_report FROM installs
         WHERE node_id = ? AND drivers_report IS NOT NULL ORDER BY id DESC LIMIT 1",
    )
    .bind(node_id)
    .fetch_optional(pool)
    .await?)
}
