//! The rack plan in `provisioner.db`: its slots and its imports.

use sqlx::{Sqlite, Transaction};

use super::{Pool, StoreError};
use crate::lifecycle::plan::Slot;

/// The SKU the rack plan puts in `slot`.
pub async fn slot_sku(
    tx: &mut Transaction<'_, Sqlite>,
    slot: &str,
) -> Result<Option<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT sku FROM plan_slots WHERE slot = ?")
            .bind(slot)
            .fetch_optional(&mut **tx)
            .await?,
    )
}

/// The NICs the rack plan cables `slot` for: (count, Mb/s), when it says.
pub async fn slot_nics(
    tx: &mut Transaction<'_, Sqlite>,
    slot: &str,
) -> Result<Option<(u32, u32)>, StoreError> {
    let row: Option<(Option<i64>, Option<i64>)> =
        sqlx::query_as("SELECT nics, nic_mbps FROM plan_slots WHERE slot = ?")
            .bind(slot)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(row.and_then(|(nics, mbps)| Some((nics.unwrap_or(1) as u32, mbps? as u32))))
}

/// What the rack plan says of installing `slot`: (SKU, image, root device hints in their
/// compact form), each image and hint unset where the row leaves it to the SKU.
pub async fn slot_install(
    tx: &mut Transaction<'_, Sqlite>,
    slot: &str,
) -> Result<Option<(String, Option<String>, Option<String>)>, StoreError> {
    Ok(
        sqlx::query_as("SELECT sku, image, root_device FROM plan_slots WHERE slot = ?")
            .bind(slot)
            .fetch_optional(&mut **tx)
            .await?,
    )
}

/// A slot of the plan as its table holds it.
#[derive(sqlx::FromRow)]
struct SlotRow {
    site: String,
    row: String,
    rack: String,
    u: i64,
    serial: Option<String>,
    mac: Option<String>,
    sku: String,
    nics: Option<i64>,
    nic_mbps: Option<i64>,
    image: Option<String>,
    root_device: Option<String>,
}

impl TryFrom<SlotRow> for Slot {
    type Error = StoreError;
    fn try_from(r: SlotRow) -> Result<Slot, StoreError> {
        let corrupt = |what: String| {
            StoreError::Corrupt(format!(
                "plan slot {}/{}/{}/U{}: {what}",
                r.site, r.row, r.rack, r.u
            ))
        };
        Ok(Slot {
            u: u16::try_from(r.u).map_err(|_| corrupt("U out of range".into()))?,
            mac: r
                .mac
                .as_deref()
                .map(|m| m.parse().map_err(|_| corrupt(format!("MAC `{m}`"))))
                .transpose()?,
            nics: r.nics.map(|n| n as u32),
            nic_mbps: r.nic_mbps.map(|n| n as u32),
            image: r.image,
            root_device: r
                .root_device
                .as_deref()
                .map(|h| {
                    h.parse()
                        .map_err(|e| corrupt(format!("root_device `{h}`: {e}")))
                })
                .transpose()?,
            site: r.site,
            row: r.row,
            rack: r.rack,
            serial: r.serial,
            sku: r.sku,
        })
    }
}

pub async fn plan(tx: &mut Transaction<'_, Sqlite>) -> Result<Vec<Slot>, StoreError> {
    let rows: Vec<SlotRow> = sqlx::query_as(
        "SELECT site, row, rack, u, serial, mac, sku, nics, nic_mbps, image, root_device FROM plan_slots",
    )
    .fetch_all(&mut **tx)
    .await?;
    rows.into_iter().map(Slot::try_from).collect()
}

/// Replaces the rack plan inside `tx`, and records the import. Whether the new plan may
/// replace the old (no held slot may vanish) is the lifecycle's to decide, before this.
pub async fn replace_plan(
    tx: &mut Transaction<'_, Sqlite>,
    slots: &[Slot],
    source: &str,
    skus_version: u32,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM plan_slots")
        .execute(&mut **tx)
        .await?;
    for s in slots {
        sqlx::query(
            "INSERT INTO plan_slots (slot, site, row, rack, u, serial, mac, sku, nics, nic_mbps, image, root_device)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(s.id())
        .bind(&s.site)
        .bind(&s.row)
        .bind(&s.rack)
        .bind(i64::from(s.u))
        .bind(&s.serial)
        .bind(s.mac.map(|m| m.to_string()))
        .bind(&s.sku)
        .bind(s.nics.map(i64::from))
        .bind(s.nic_mbps.map(i64::from))
        .bind(&s.image)
        .bind(s.root_device.as_ref().map(|h| h.to_string()))
        .execute(&mut **tx)
        .await?;
    }
    sqlx::query(
        "INSERT INTO plan_imports (at_ms, source, slots, skus_version) VALUES (?, ?, ?, ?)",
    )
    .bind(now_ms)
    .bind(source)
    .bind(slots.len() as i64)
    .bind(i64::from(skus_version))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The slots the plan has in one rack, lowest U first: (slot id, whether it plans NIC speed).
pub async fn rack_slots(
    pool: &Pool,
    site: &str,
    row: &str,
    rack: &str,
) -> Result<Vec<(String, bool)>, StoreError> {
    let rows: Vec<(String, Option<i64>)> = sqlx::query_as(
        "SELECT slot, nic_mbps FROM plan_slots WHERE site = ? AND row = ? AND rack = ? ORDER BY u",
    )
    .bind(site)
    .bind(row)
    .bind(rack)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(slot, mbps)| (slot, mbps.is_some()))
        .collect())
}

/// One slot of the plan as the status pages show it, with the slot's id.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct PlanRow {
    pub slot: String,
    pub site: String,
    pub row: String,
    pub rack: String,
    pub u: i64,
    pub serial: Option<String>,
    pub mac: Option<String>,
    pub sku: String,
}

/// The latest rack plan import's id (0 before any): every change of the plan is an import.
pub async fn plan_version(pool: &Pool) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM plan_imports")
            .fetch_one(pool)
            .await?,
    )
}

/// The whole rack plan, by site, row, rack and U.
pub async fn plan_rows(pool: &Pool) -> Result<Vec<PlanRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT slot, site, row, rack, u, serial, mac, sku FROM plan_slots
         ORDER BY site, row, rack, u",
    )
    .fetch_all(pool)
    .await?)
}

/// One rack's slots of the plan, lowest U first.
pub async fn rack_plan_rows(
    pool: &Pool,
    site: &str,
    row: &str,
    rack: &str,
) -> Result<Vec<PlanRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT slot, site, row, rack, u, serial, mac, sku FROM plan_slots
         WHERE site = ? AND row = ? AND rack = ? ORDER BY u",
    )
    .bind(site)
    .bind(row)
    .bind(rack)
    .fetch_all(pool)
    .await?)
}
