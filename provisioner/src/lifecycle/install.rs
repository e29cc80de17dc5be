//! The installing step: which image and which disk an inspected node gets (its plan row, else
//! its SKU; the root device hints against its inspected disks), the instruction its agent
//! follows, and what the agent's report of the write does to the node.

use std::path::PathBuf;

use provisioner_protocol::install::{
    FirstBoot, InstallOutcome, InstallPlan, InstallReport, InstalledReport, TargetDisk,
};
use provisioner_protocol::{Disk, Facts, Instruction};
use tracing::{info, warn};

use super::machine::{Actor, Input, State};
use super::plan::Sku;
use super::{AgentError, Applied, Lifecycle, apply, hash_token, new_token};
use crate::clock::now_ms;
use crate::image::os::library::{self, Entry, LibraryError};
use crate::install::hints::{self, RootDeviceHints};
use crate::store as db;
use crate::store::StoreError;

/// How nodes are installed: `[lifecycle] auto_install` and what every installed system gets.
#[derive(Clone, Debug)]
pub struct InstallSettings {
    /// An inspected node whose slot names an image is installed without an operator.
    pub auto: bool,
    /// Where the OS image library is (`DATA_DIR`); none: there are no images.
    pub data_dir: Option<PathBuf>,
    /// The operators' SSH keys, for the installed systems' admin account.
    pub ssh_authorized_keys: Vec<String>,
    /// Time servers for the installed systems; empty: the appliance's own address.
    pub ntp: Vec<String>,
    /// The driver sets (`drivers.toml`): a SKU with one installs only an image built with it.
    pub drivers: std::sync::Arc<crate::drivers::DriversFile>,
    /// The appliance's archive key (armored), for installed systems' apt.
    pub archive_key: String,
}

impl Default for InstallSettings {
    fn default() -> Self {
        InstallSettings {
            auto: true,
            data_dir: None,
            ssh_authorized_keys: Vec::new(),
            ntp: Vec::new(),
            drivers: Default::default(),
            archive_key: String::new(),
        }
    }
}

/// What can be done with an inspected node now.
#[derive(Debug)]
pub(super) enum Choice {
    /// Write `image` to `disk`, which `hints` chose.
    Install {
        image: Box<Entry>,
        disk: Box<Disk>,
        hints: Box<RootDeviceHints>,
    },
    /// Nothing yet, and why (no image named, or not in the library yet).
    Wait(String),
    /// It cannot be installed as planned, and why (the hints, the architecture, the size).
    Refuse(String),
}

/// What the plan says of installing one slot.
pub(super) struct SlotInstall<'a> {
    pub slot: &'a str,
    pub sku_name: &'a str,
    pub sku: Option<&'a Sku>,
    /// The driver set the SKU's nodes get, if it has one.
    pub driver_set: Option<&'a str>,
    pub image: Option<&'a str>,
    pub hints: Option<&'a RootDeviceHints>,
}

/// The image and disk of a node in `slot`, decided from the plan, the SKU, the library and
/// the node's inspected facts. `find` looks an image up by name.
pub(super) fn choose(
    plan: &SlotInstall<'_>,
    facts: &Facts,
    find: impl Fn(&str) -> Result<Entry, LibraryError>,
) -> Choice {
    let Some(name) = plan
        .image
        .or_else(|| plan.sku.and_then(|s| s.image.as_deref()))
    else {
        return Choice::Wait(format!(
            "no OS image: neither the plan row of {} nor SKU {} names one",
            plan.slot, plan.sku_name
        ));
    };
    let image = match find(name) {
        Ok(e) => e,
        Err(LibraryError::NotFound(_)) => {
            return Choice::Wait(format!(
                "image {name} (for {}) is not in the library yet: build or import it",
                plan.slot
            ));
        }
        Err(e) => return Choice::Wait(format!("image {name}: {e}")),
    };
    let carried = image.manifest.drivers.as_ref().map(|d| d.name.as_str());
    if let Some(set) = plan.driver_set
        && carried != Some(set)
    {
        return Choice::Wait(format!(
            "SKU {} gets driver set {set}, and image {name} carries {}: build the image with it (`provisioner image build RECIPE --drivers {set}`)",
            plan.sku_name,
            carried.map_or("none".to_string(), |c| format!("set {c}"))
        ));
    }
    let node_arch = facts
        .cpu
        .arch
        .as_deref()
        .and_then(|a| a.parse::<crate::boot::KernelArch>().ok());
    if let Some(arch) = node_arch
        && arch != image.manifest.architecture
    {
        return Choice::Refuse(format!(
            "image {name} is for {}, and this node is {arch}",
            image.manifest.architecture
        ));
    }
    let hints = plan
        .hints
        .or_else(|| plan.sku.and_then(|s| s.root_device.as_ref()))
        .cloned()
        .unwrap_or_default();
    let disk = match hints::choose(&hints, &facts.disks) {
        Ok(d) => d.clone(),
        Err(e) => return Choice::Refuse(format!("root device: {e}")),
    };
    if disk.size_bytes < image.manifest.raw.size {
        return Choice::Refuse(format!(
            "disk {} holds {} bytes, and image {name} needs {}",
            disk.name, disk.size_bytes, image.manifest.raw.size
        ));
    }
    Choice::Install {
        image: Box::new(image),
        disk: Box::new(disk),
        hints: Box::new(hints),
    }
}

impl Lifecycle {
    /// The install decision for an inspected `node` (re-read inside `tx`).
    async fn install_choice(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        node: &db::nodes::NodeRecord,
    ) -> Result<Choice, StoreError> {
        let Some(slot) = node.slot.as_deref() else {
            return Ok(Choice::Wait("in no slot".into()));
        };
        let Some((sku_name, image, hints)) = db::plan::slot_install(tx, slot).await? else {
            return Ok(Choice::Wait(format!(
                "slot {slot} is no longer in the plan"
            )));
        };
        let hints: Option<RootDeviceHints> = match hints.as_deref().map(str::parse) {
            Some(Ok(h)) => Some(h),
            Some(Err(e)) => return Ok(Choice::Refuse(format!("root_device of {slot}: {e}"))),
            None => None,
        };
        let Some(facts) = db::nodes::inspected_facts(tx, node.id).await? else {
            return Ok(Choice::Wait("no inspection report".into()));
        };
        let plan = SlotInstall {
            slot,
            sku_name: &sku_name,
            sku: self.skus.sku.get(&sku_name),
            driver_set: self.install.drivers.for_sku(&sku_name).map(|(n, _)| n),
            image: image.as_deref(),
            hints: hints.as_ref(),
        };
        let data_dir = self.install.data_dir.clone();
        Ok(choose(&plan, &facts, |name| match &data_dir {
            Some(d) => library::find(d, name),
            None => Err(LibraryError::NotFound(name.to_string())),
        }))
    }

    /// Moves an inspected node on to installing when it can be (auto_install, an image, one
    /// disk), or to failed when its plan cannot be met; leaves it waiting otherwise. Returns
    /// the change, and why it waits.
    pub(super) async fn consider_install(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        node: &db::nodes::NodeRecord,
        now: i64,
    ) -> Result<(Option<Applied>, Option<String>), StoreError> {
        if node.state != State::Inspected {
            return Ok((None, None));
        }
        if !self.install.auto {
            return Ok((
                None,
                Some("auto_install is off: an operator starts its install".into()),
            ));
        }
        let input = match self.install_choice(tx, node).await? {
            Choice::Wait(why) => return Ok((None, Some(why))),
            Choice::Refuse(reason) => Input::CannotInstall { reason },
            Choice::Install { image, disk, hints } => {
                let target = TargetDisk {
                    name: disk.name.clone(),
                    size_bytes: disk.size_bytes,
                    serial: disk.serial.clone(),
                    hints: hints.to_string(),
                };
                let disk_json = serde_json::to_string(&target).expect("a disk serializes");
                let m = &image.manifest;
                db::installs::start(
                    tx,
                    node.id,
                    &m.name,
                    &m.raw.sha256.to_string(),
                    &disk_json,
                    now,
                )
                .await?;
                let chosen = if hints.is_empty() {
                    "the smallest disk of at least 4 GiB".to_string()
                } else {
                    format!("hints {hints}")
                };
                Input::InstallStarted {
                    what: format!("installing {} on {} ({chosen})", m.name, disk.name),
                }
            }
        };
        let applied = apply(tx, node, &input, &Actor::Appliance, now).await?;
        Ok((applied.ok(), None))
    }

    /// The install instruction of a node in installing whose disk is not written yet: the
    /// image's URLs under `base` (the appliance's URL as the agent reached it), the disk, and
    /// a new credential for its installed system (only its hash is kept).
    pub(super) async fn install_instruction(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        node: &db::nodes::NodeRecord,
        base: Option<&str>,
    ) -> Result<Instruction, StoreError> {
        let Some(base) = base else {
            return Ok(Instruction::Wait {
                seconds: 30,
                reason: "the request named no Host: the image's URLs are made from it".into(),
            });
        };
        let Some(install) = db::installs::current(tx, node.id).await? else {
            return Ok(Instruction::Wait {
                seconds: 30,
                reason: "installing, and no install is recorded: the timeout fails it".into(),
            });
        };
        let entry = match &self.install.data_dir {
            Some(d) => library::find(d, &install.image),
            None => Err(LibraryError::NotFound(install.image.clone())),
        };
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                warn!(image = %install.image, error = %e, "the image of an install is gone");
                return Ok(Instruction::Wait {
                    seconds: 60,
                    reason: format!("image {}: {e}", install.image),
                });
            }
        };
        let disk: TargetDisk = serde_json::from_str(&install.disk_json)
            .map_err(|e| StoreError::Corrupt(format!("install {} disk: {e}", install.id)))?;
        let credential = new_token();
        db::installs::set_credential(tx, install.id, &hash_token(&credential)).await?;
        let m = &entry.manifest;
        let artifact = |d: &crate::image::os::manifest::FileDigest| {
            format!("{base}/artifacts/{}/{}", d.sha256, d.file)
        };
        let host = base
            .split("://")
            .nth(1)
            .unwrap_or(base)
            .split([':', '/'])
            .next()
            .unwrap_or_default()
            .to_string();
        let hostname = node
            .slot
            .as_deref()
            .map(hostname_of)
            .unwrap_or_else(|| format!("node-{}", node.mac.to_string().replace(':', "")));
        Ok(Instruction::Install {
            plan: Box::new(InstallPlan {
                image: m.name.clone(),
                url: artifact(&m.compressed),
                sha256: m.compressed.sha256.to_string(),
                raw_sha256: m.raw.sha256.to_string(),
                raw_bytes: m.raw.size,
                bmap_url: artifact(&m.bmap),
                bmap_sha256: m.bmap.sha256.to_string(),
                disk,
                first_boot: FirstBoot {
                    hostname,
                    ssh_authorized_keys: self.install.ssh_authorized_keys.clone(),
                    ntp: if self.install.ntp.is_empty() {
                        vec![host]
                    } else {
                        self.install.ntp.clone()
                    },
                    apt_sources: match &m.drivers {
                        Some(d) => vec![format!(
                            "deb [signed-by=/etc/apt/keyrings/provisioner-archive.asc] {base}/repo {} main",
                            d.suite
                        )],
                        None => Vec::new(),
                    },
                    apt_keyring: if m.drivers.is_some() {
                        self.install.archive_key.clone()
                    } else {
                        String::new()
                    },
                    credential,
                },
            }),
        })
    }

    /// The wipe a node's agent is to do first, if the disk an ended install wrote is not
    /// wiped yet (reprovisioned, retired): only that disk, as it was chosen then.
    pub(super) async fn wipe_instruction(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        node: &db::nodes::NodeRecord,
    ) -> Result<Option<Instruction>, StoreError> {
        let Some(install) = db::installs::pending_wipe(tx, node.id).await? else {
            return Ok(None);
        };
        let disk: TargetDisk = serde_json::from_str(&install.disk_json)
            .map_err(|e| StoreError::Corrupt(format!("install {} disk: {e}", install.id)))?;
        Ok(Some(Instruction::Wipe {
            image: install.image.clone(),
            reason: format!(
                "{}: the disk {} was written with {} and must not boot",
                node.state.name(),
                disk.name,
                install.image
            ),
            disk,
        }))
    }

    /// A report of a wipe: the disk is recorded wiped (a retired node is then only told to
    /// stay off), or why it failed (tried again at the next discovery boot).
    async fn wipe_report(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        node: &db::nodes::NodeRecord,
        report: &InstallReport,
        now: i64,
    ) -> Result<Option<Applied>, AgentError> {
        let Some(install) = db::installs::pending_wipe(tx, node.id).await? else {
            return Err(AgentError::NotNow {
                mac: node.mac,
                state: node.state.to_string(),
                what: "a wipe report",
            });
        };
        if install.image != report.image {
            return Err(AgentError::NotNow {
                mac: node.mac,
                state: node.state.to_string(),
                what: "a wipe report of another install",
            });
        }
        match &report.outcome {
            InstallOutcome::Wiped => {
                db::installs::set_wiped(tx, node.id, install.id, now).await?;
                if node.state == (State::Retired { wiped: false }) {
                    return Ok(Some(
                        apply(tx, node, &Input::DiskWiped, &Actor::Agent, now).await??,
                    ));
                }
            }
            InstallOutcome::Failed { stage, reason } => {
                warn!(mac = %node.mac, stage, reason, "wiping a disk failed");
                db::installs::set_wipe_error(tx, install.id, &format!("{stage}: {reason}")).await?;
            }
            InstallOutcome::Written => {
                return Err(AgentError::NotNow {
                    mac: node.mac,
                    state: node.state.to_string(),
                    what: "a write report",
                });
            }
        }
        Ok(None)
    }

    /// The agent's report of its write: written and read back moves the node on to boot its
    /// disk; a failure fails the install with the stage and the numbers.
    pub async fn install_report(
        &self,
        bearer: Option<&str>,
        report: &InstallReport,
    ) -> Result<State, AgentError> {
        let _one = self.write.lock().await;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let (mac, _, node) = self
            .calling_node(&mut tx, bearer, Some(report.mac), false)
            .await?;
        if matches!(node.state, State::Inspecting | State::Retired { .. })
            || report.outcome == InstallOutcome::Wiped
        {
            let applied = self.wipe_report(&mut tx, &node, report, now).await?;
            let state = applied
                .as_ref()
                .map_or(node.state.clone(), |a| a.state.clone());
            self.commit(tx, applied).await?;
            info!(%mac, %state, image = %report.image, "wipe report taken");
            return Ok(state);
        }
        let current = db::installs::current(&mut tx, node.id).await?;
        let install = match (&node.state, current) {
            (State::Installing { written: false }, Some(i)) if i.image == report.image => i,
            _ => {
                return Err(AgentError::NotNow {
                    mac,
                    state: node.state.to_string(),
                    what: "an install report",
                });
            }
        };
        let input = match &report.outcome {
            InstallOutcome::Written => {
                db::installs::set_written(
                    &mut tx,
                    install.id,
                    report.written_bytes,
                    report.received_bytes,
                    report.seconds,
                    now,
                )
                .await?;
                Input::DiskWritten
            }
            InstallOutcome::Failed { stage, reason } => {
                db::installs::end_all(&mut tx, node.id, now).await?;
                Input::StepFailed {
                    reason: format!("install of {}: {stage}: {reason}", report.image),
                }
            }
            // Taken above; named here so that a new outcome is a compile error.
            InstallOutcome::Wiped => {
                return Err(AgentError::NotNow {
                    mac,
                    state: node.state.to_string(),
                    what: "a wipe report",
                });
            }
        };
        let applied = apply(&mut tx, &node, &input, &Actor::Agent, now).await??;
        let state = applied.state.clone();
        self.commit(tx, [applied]).await?;
        info!(%mac, %state, image = %report.image, written = report.written_bytes, "install report taken");
        Ok(state)
    }
}

impl Lifecycle {
    /// The installed system's first call: what it booted must be what it was sent (the image
    /// and its digest as the installer recorded them, the image's kernel). It then burns in;
    /// anything else fails the install, naming both.
    pub async fn installed(
        &self,
        bearer: Option<&str>,
        report: &InstalledReport,
    ) -> Result<State, AgentError> {
        let _one = self.write.lock().await;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let mac = report.mac;
        let (installed, node) = self.installed_caller(&mut tx, bearer, mac).await?;
        let install = match (installed, &node.state) {
            (true, State::Installing { written: true }) => {
                db::installs::current(&mut tx, node.id).await?
            }
            // Booted again once past its first boot (a power cycle, a reboot): taken, and
            // nothing changes; what it first booted was checked then.
            (true, State::BurningIn | State::Enrolled) => {
                info!(%mac, state = %node.state, image = %report.image,
                    kernel = %report.kernel_release, "installed system booted again");
                return Ok(node.state.clone());
            }
            _ => None,
        };
        let Some(install) = install else {
            return Err(AgentError::NotNow {
                mac,
                state: node.state.to_string(),
                what: "an installed system's report",
            });
        };
        let kernel = self
            .install
            .data_dir
            .as_ref()
            .and_then(|d| library::find(d, &install.image).ok())
            .map(|e| e.manifest.kernel.release);
        let mut wrong = Vec::new();
        if report.image != install.image {
            wrong.push(format!("image {} (sent {})", report.image, install.image));
        }
        if report.raw_sha256 != install.raw_sha256 {
            wrong.push(format!(
                "raw sha256 {} (sent {})",
                report.raw_sha256, install.raw_sha256
            ));
        }
        if let Some(k) = kernel.filter(|k| *k != report.kernel_release) {
            wrong.push(format!(
                "kernel {} (the image's {k})",
                report.kernel_release
            ));
        }
        let input = if wrong.is_empty() {
            db::installs::set_installed(&mut tx, install.id, now).await?;
            Input::Installed
        } else {
            Input::StepFailed {
                reason: format!("the installed system booted {}", wrong.join(", ")),
            }
        };
        let applied = apply(&mut tx, &node, &input, &Actor::Agent, now).await??;
        let state = applied.state.clone();
        self.commit(tx, [applied]).await?;
        info!(%mac, %state, image = %report.image, kernel = %report.kernel_release, "installed system reported");
        Ok(state)
    }
}

/// A host name from a slot id (`dc1/r1/a01/U10` → `dc1-r1-a01-u10`): lowercase letters,
/// digits and hyphens (RFC 1123), at most 63 characters.
pub fn hostname_of(slot: &str) -> String {
    let mut out = String::new();
    for c in slot.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let mut out: String = out.trim_end_matches('-').chars().take(63).collect();
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() { "node".into() } else { out }
}

#[cfg(test)]
mod tests;
