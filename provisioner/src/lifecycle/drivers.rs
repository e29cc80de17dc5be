//! The driver check, first thing in burning_in: a node whose image carries a driver set is
//! told to check it on its running system (`Instruction::VerifyDrivers`) before any burn-in;
//! its report is kept with its install (what was installed, package by package with the
//! sha256 it came from), and a check that failed fails the node with that check's words. A
//! check that could not be validated (no devices, a lab VM) does not fail it: burn-in then
//! says the same of its devices.

use provisioner_protocol::Instruction;
use provisioner_protocol::drivers::{DriverSet, DriversReport, Outcome};
use tracing::info;

use super::machine::{Actor, Input, State};
use super::{AgentError, Lifecycle, apply};
use crate::clock::now_ms;
use crate::image::os::library;
use crate::store as db;
use crate::store::StoreError;

impl Lifecycle {
    /// The set the image of `image` carries, if any.
    fn image_drivers(&self, image: &str) -> Option<DriverSet> {
        let dir = self.install.data_dir.as_ref()?;
        library::find(dir, image).ok()?.manifest.drivers
    }

    /// The devices a node of `slot` has, from its SKU: GPUs or Neuron devices.
    async fn sku_devices(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        slot: Option<&str>,
    ) -> Result<u32, StoreError> {
        let sku = match slot {
            Some(s) => db::plan::slot_sku(tx, s).await?,
            None => None,
        };
        Ok(sku
            .and_then(|s| self.skus.sku.get(&s))
            .map(|s| s.devices())
            .unwrap_or(0))
    }

    /// What a node in burning_in checks first: its image's driver set, until its install has a
    /// driver report. None: nothing to check (no set, or checked).
    pub(super) async fn drivers_instruction(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        node: &db::nodes::NodeRecord,
    ) -> Result<Option<Instruction>, StoreError> {
        let Some(install) = db::installs::current(tx, node.id).await? else {
            return Ok(None);
        };
        if db::installs::drivers_report(tx, install.id)
            .await?
            .is_some()
        {
            return Ok(None);
        }
        let Some(mut set) = self.image_drivers(&install.image) else {
            return Ok(None);
        };
        set.devices = self.sku_devices(tx, node.slot.as_deref()).await?;
        Ok(Some(Instruction::VerifyDrivers { set: Box::new(set) }))
    }

    /// The installed system's driver report. Taken only from a node burning in, with its
    /// install's credential, for the set its image carries; a failed check fails the node.
    pub async fn drivers(
        &self,
        bearer: Option<&str>,
        report: &DriversReport,
    ) -> Result<State, AgentError> {
        let _one = self.write.lock().await;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let mac = report.mac;
        let (installed, node) = self.installed_caller(&mut tx, bearer, mac).await?;
        let install = match (installed, &node.state) {
            (true, State::BurningIn) => db::installs::current(&mut tx, node.id).await?,
            _ => None,
        };
        let Some(install) = install else {
            return Err(AgentError::NotNow {
                mac,
                state: node.state.to_string(),
                what: "a driver report",
            });
        };
        let carried_set = self.image_drivers(&install.image);
        let carried = carried_set.as_ref().map(|s| s.name.clone());
        if carried.as_deref() != Some(report.report.set.as_str()) {
            return Err(AgentError::NotNow {
                mac,
                state: format!(
                    "installed with {} (driver set {})",
                    install.image,
                    carried.as_deref().unwrap_or("none")
                ),
                what: "a report of another driver set",
            });
        }
        if db::installs::drivers_report(&mut tx, install.id)
            .await?
            .is_some()
        {
            // A resent report (the answer to the first was lost): the first stands.
            tx.commit().await?;
            return Ok(node.state.clone());
        }
        let json = serde_json::to_string(&report.report).expect("a report serializes");
        db::installs::set_drivers(&mut tx, install.id, now, &json).await?;
        let r = &report.report;
        let unvalidated = r
            .checks
            .iter()
            .filter(|c| c.outcome == Outcome::CannotValidate)
            .count();
        // The checks every report must carry: a report that says less is not a pass.
        let mut required = vec!["packages".to_string(), "held".to_string()];
        if let Some(set) = &carried_set {
            required.extend(set.modules.iter().map(|m| format!("module {m}")));
        }
        required.push("apt".to_string());
        let missing: Vec<&str> = required
            .iter()
            .filter(|name| !r.checks.iter().any(|c| c.check == **name))
            .map(String::as_str)
            .collect();
        let changed = match r.failed() {
            None if !missing.is_empty() => {
                let input = Input::StepFailed {
                    reason: format!(
                        "driver set {}: the node's report lacks the checks {}",
                        r.set,
                        missing.join(", ")
                    ),
                };
                Some(apply(&mut tx, &node, &input, &Actor::Agent, now).await??)
            }
            Some(c) => {
                let input = Input::StepFailed {
                    reason: format!(
                        "driver set {} on kernel {}: {} failed: {}",
                        r.set, r.kernel, c.check, c.detail
                    ),
                };
                Some(apply(&mut tx, &node, &input, &Actor::Agent, now).await??)
            }
            None => {
                info!(%mac, set = %r.set, kernel = %r.kernel, checks = r.checks.len(),
                    unvalidated, "driver set checked");
                None
            }
        };
        let state = changed
            .as_ref()
            .map(|a| a.state.clone())
            .unwrap_or(node.state.clone());
        self.commit(tx, changed).await?;
        Ok(state)
    }
}
