//! Operator commands that work on the store directly, with or without the appliance running
//! (SQLite in WAL mode lets them share the file): importing the rack plan, creating admin
//! tokens.

use std::path::Path;

use anyhow::{Context, bail};

use crate::clock::now_ms;
use crate::config::Config;
use crate::lifecycle::plan;
use crate::lifecycle::{hash_token, new_token};
use crate::store;
use crate::store::SyncMode;

/// `provisioner plan import FILE`: checks the plan against the SKU definitions and replaces
/// the stored one. Returns how many slots it holds.
pub async fn import_plan(config: &Config, file: &Path) -> anyhow::Result<usize> {
    let skus = crate::app::load_skus(config.skus.as_deref())?;
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read rack plan {}", file.display()))?;
    let slots = plan::parse_plan(file, &text, &skus)?;
    let pool = store::open(&config.data_dir, SyncMode::Full).await?;
    let mut tx = pool.begin().await?;
    let taken: Vec<plan::Taken> = store::nodes::taken_slots(&mut tx)
        .await?
        .into_iter()
        .map(plan::Taken::from)
        .collect();
    if let Err(why) = plan::may_replace(&slots, &taken) {
        bail!("rack plan {} not imported: {why}", file.display());
    }
    store::plan::replace_plan(
        &mut tx,
        &slots,
        &file.display().to_string(),
        skus.version,
        now_ms(),
    )
    .await?;
    tx.commit().await?;
    pool.close().await;
    Ok(slots.len())
}

/// `provisioner token delete NAME`: the token stops working at once, for the API and for
/// the pages (its sign-in sessions end with it).
pub async fn delete_token(config: &Config, name: &str) -> anyhow::Result<()> {
    let pool = store::open(&config.data_dir, SyncMode::Full).await?;
    let deleted = store::tokens::delete_admin_token(&pool, name).await;
    pool.close().await;
    if !deleted? {
        bail!("no admin token named `{name}`");
    }
    Ok(())
}

/// `provisioner token create NAME`: a new admin token, shown once and stored hashed.
pub async fn create_token(config: &Config, name: &str) -> anyhow::Result<String> {
    if name.is_empty() || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        bail!("a token name is a single word (who or what uses it), e.g. `alice` or `ci`");
    }
    let pool = store::open(&config.data_dir, SyncMode::Full).await?;
    let token = new_token();
    let added = store::tokens::add_admin_token(&pool, &hash_token(&token), name, now_ms()).await?;
    pool.close().await;
    if !added {
        bail!("a token named `{name}` already exists");
    }
    Ok(token)
}

/// Who names the OS image `name`: plan slots that install it (their own `image`, or their
/// SKU's default when they name none) and the SKUs whose default it is. `image remove` is
/// refused while any does.
pub async fn image_users(config: &Config, name: &str) -> anyhow::Result<Vec<String>> {
    let skus = crate::app::load_skus(config.skus.as_deref())?;
    let mut users: Vec<String> = skus
        .sku
        .iter()
        .filter(|(_, s)| s.image.as_deref() == Some(name))
        .map(|(id, _)| format!("SKU {id}"))
        .collect();
    let pool = store::open(&config.data_dir, SyncMode::Full).await?;
    let mut tx = pool.begin().await?;
    let slots = store::plan::plan(&mut tx).await?;
    tx.commit().await?;
    pool.close().await;
    for s in slots {
        let image = s
            .image
            .clone()
            .or_else(|| skus.sku.get(&s.sku).and_then(|k| k.image.clone()));
        if image.as_deref() == Some(name) {
            users.push(format!("plan slot {}", s.id()));
        }
    }
    Ok(users)
}
