//! Accelerator drivers: the set a node must have (resolved by the appliance from its
//! `drivers.toml` and repository suite), and what the node's agent found when it checked it.
//! The agent checks; the appliance judges the report (a check that did not pass fails the node
//! with that check's words).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A driver set resolved against its suite: every package at exactly one version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverSet {
    /// The set's name in `drivers.toml` (`nvidia-580-hgx-blackwell`).
    pub name: String,
    /// `nvidia` or `neuron`.
    pub vendor: String,
    /// The driver's version, as its kernel module reports it (`580.95.05`, `2.31.7.0`).
    pub driver: String,
    /// The repository suite the packages come from.
    pub suite: String,
    /// Package → its exact version in the suite.
    pub packages: BTreeMap<String, String>,
    /// Package → sha256 of its `.deb` in the suite (for the node's record).
    #[serde(default)]
    pub sha256: BTreeMap<String, String>,
    /// Kernel modules that must exist for the installed kernel (`nvidia`, `nvidia-uvm`).
    pub modules: Vec<String>,
    /// systemd units that must be active where the devices are (`nvidia-fabricmanager`).
    pub services: Vec<String>,
    /// Devices the SKU has: GPUs (`nvidia`) or Neuron devices (`neuron`); 0 where the SKU has
    /// none.
    pub devices: u32,
    /// Who must have signed the modules (`modinfo -F signer`): the appliance's module-signing
    /// key where the image build signed them; none: any signature.
    #[serde(default)]
    pub module_signer: Option<String>,
}

/// How one check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Fail,
    /// The node has no such devices to check against (a lab VM): never a pass.
    CannotValidate,
}

/// One check of the set on the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverCheck {
    /// `packages`, `held`, `module nvidia`, `loaded version`, `devices`, `service ...`.
    pub check: String,
    pub outcome: Outcome,
    /// What was found, in words (`nvidia-fabricmanager is 580.126.20-1, the set pins
    /// 580.95.05-1`).
    pub detail: String,
}

/// A package as installed on the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledPackage {
    pub package: String,
    pub version: String,
    /// sha256 of the `.deb` it came from, as the suite lists it (empty if not in the set).
    #[serde(default)]
    pub sha256: String,
}

/// What the agent found: the node's record of its drivers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverReport {
    pub set: String,
    /// The kernel the modules were checked for (`6.1.0-28-amd64`).
    pub kernel: String,
    pub checks: Vec<DriverCheck>,
    pub installed: Vec<InstalledPackage>,
}

/// `POST /api/v1/agent/drivers`: the installed system's check of its driver set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriversReport {
    pub mac: crate::MacAddr,
    pub report: DriverReport,
}

impl DriverReport {
    /// The first check that failed, if any.
    pub fn failed(&self) -> Option<&DriverCheck> {
        self.checks.iter().find(|c| c.outcome == Outcome::Fail)
    }
}
