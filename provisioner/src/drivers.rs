//! Driver sets (`drivers.toml`): which accelerator packages each SKU's nodes get, every one
//! pinned, from one branch, and what a set must hold for its hardware (the rules below, from
//! the research in FACTS.md). A set is resolved against its repository suite into a
//! [`DriverSet`]: each pin matched to exactly one version there, with its sha256.
//!
//! apt is then held to the set two ways, because pinning a meta-package alone lets apt mix
//! versions: an apt preferences file with a priority-1001 stanza per package (exact version),
//! and `apt-mark hold` of every package, run after the install (a pin installed in the same
//! apt run as the driver was ignored).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::lifecycle::plan::Skus;
use crate::repo::SuiteMeta;
pub use provisioner_protocol::drivers::DriverSet;

pub const SHIPPED_DRIVERS: &str = include_str!("../drivers.toml");

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriversFile {
    pub version: u32,
    #[serde(default)]
    pub set: BTreeMap<String, SetDef>,
}

/// One set as written in `drivers.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetDef {
    pub description: String,
    pub vendor: Vendor,
    /// The driver's version (the kernel module's).
    pub driver: String,
    pub suite: String,
    pub fabric: Fabric,
    #[serde(default)]
    pub skus: Vec<String>,
    /// Package → `VERSION` or `UPSTREAM-*`.
    pub packages: BTreeMap<String, String>,
    /// The kernel modules the set must provide, where the packaging names them otherwise
    /// than the vendor's default (`nvidia`, `nvidia-uvm`; `neuron`): Debian's own driver
    /// packages build `nvidia-current` and `nvidia-current-uvm`.
    #[serde(default)]
    pub modules: Option<Vec<String>>,
    /// Whether one of its SKUs has Blackwell or later GPUs (PCI device id 0x2900 and up,
    /// Grace trays included): NVIDIA ships only the open kernel modules for those. Set from
    /// the SKU definitions when the file is read.
    #[serde(skip)]
    pub open_required: bool,
}

/// The first PCI device id of NVIDIA's Blackwell generation (GB100): from it on, only the
/// open kernel modules drive the GPU.
pub const FIRST_BLACKWELL_ID: u16 = 0x2900;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Vendor {
    Nvidia,
    Neuron,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fabric {
    Nvswitch3,
    Nvswitch4,
    NvlinkC2c,
    None,
}

/// The CUDA major DCGM is built for, by driver branch.
fn cuda_major(branch: u32) -> Option<u32> {
    match branch {
        580.. => Some(13),
        525..=579 => Some(12),
        _ => None,
    }
}

/// The upstream part of a Debian version (no epoch, no revision).
fn upstream(version: &str) -> &str {
    let v = version.split_once(':').map_or(version, |(_, v)| v);
    v.rsplit_once('-').map_or(v, |(u, _)| u)
}

/// A Debian package name (Debian Policy 5.6.1): lower-case letters, digits, `+`, `-`, `.`;
/// two characters at least, starting with a letter or digit.
pub fn debian_name(name: &str) -> bool {
    name.len() >= 2
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

/// The characters a Debian version may hold (Debian Policy 5.6.12): alphanumerics and
/// `.+-~:`, starting with a digit.
pub fn debian_version(version: &str) -> bool {
    version.as_bytes().first().is_some_and(u8::is_ascii_digit)
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".+-~:".contains(&b))
}

/// Whether `version` is what `pin` asks: equal, or (`UPSTREAM-*`) that upstream version
/// with any revision.
pub fn pin_matches(pin: &str, version: &str) -> bool {
    match pin.strip_suffix("-*") {
        Some(up) => {
            let (pe, pu) = pin_epoch(up);
            let (ve, _) = pin_epoch(version);
            pe == ve && upstream(version) == pu && version.contains('-')
        }
        None => pin == version,
    }
}

fn pin_epoch(v: &str) -> (&str, &str) {
    match v.split_once(':') {
        Some((e, rest)) => (e, rest),
        None => ("0", v),
    }
}

impl SetDef {
    /// The driver branch (`580` of `580.95.05`).
    fn branch(&self) -> Option<u32> {
        self.driver.split('.').next()?.parse().ok()
    }

    /// What the set breaks of the rules for its vendor and fabric, in words; empty if none.
    pub fn rule_errors(&self) -> Vec<String> {
        let mut errs = Vec::new();
        let has = |p: &str| self.packages.contains_key(p);
        let at_driver = |p: &str, errs: &mut Vec<String>| match self.packages.get(p) {
            None => errs.push(format!("{p} is missing")),
            Some(v) if upstream(v) != self.driver => errs.push(format!(
                "{p} is pinned at {v}, not at the driver's version {}",
                self.driver
            )),
            Some(_) => {}
        };
        match self.vendor {
            Vendor::Nvidia => {
                let Some(branch) = self.branch() else {
                    errs.push(format!("driver {:?} has no branch number", self.driver));
                    return errs;
                };
                // Open kernel modules: mandatory on Blackwell and Grace, the only ones
                // NVIDIA ships for them; Hopper and older also run the proprietary ones
                // (Debian 12 packages only those).
                let open = [
                    format!("nvidia-open-{branch}"),
                    format!("nvidia-dkms-{branch}-open"),
                    "nvidia-open-kernel-dkms".to_string(),
                ];
                let closed = [
                    format!("nvidia-dkms-{branch}"),
                    "nvidia-kernel-dkms".to_string(),
                    format!("nvidia-tesla-{branch}-kernel-dkms"),
                ];
                let has_open = open.iter().any(|p| has(p));
                let has_closed: Vec<&String> = closed.iter().filter(|p| has(p)).collect();
                if !has_open && has_closed.is_empty() {
                    errs.push(format!(
                        "no kernel module package ({} or {})",
                        open.join(", "),
                        closed.join(", ")
                    ));
                }
                if self.open_required {
                    if !has_open {
                        errs.push(format!(
                            "no open kernel module package ({}): mandatory on Blackwell and Grace",
                            open.join(" or ")
                        ));
                    }
                    for c in has_closed {
                        errs.push(format!(
                            "{c} is the proprietary module, which does not drive Blackwell or Grace: use the open one"
                        ));
                    }
                }
                // One branch: the module, its support files, the fabric's packages and every
                // package named for the branch at the driver's version; no package of
                // another branch. (Helpers such as Debian's nvidia-modprobe have their own
                // versions.)
                for (p, v) in &self.packages {
                    let other_branch = p
                        .split('-')
                        .filter_map(|s| s.parse::<u32>().ok())
                        .find(|n| *n >= 100 && *n != branch);
                    let named_for_branch = p.split('-').any(|s| s == branch.to_string());
                    let driver_versioned = named_for_branch
                        || open.iter().chain(closed.iter()).any(|m| m == p)
                        || [
                            "nvidia-kernel-support",
                            "nvidia-fabricmanager",
                            "libnvidia-nscq",
                            "libnvsdm",
                            "nvidia-imex",
                        ]
                        .contains(&p.as_str());
                    if let Some(n) = other_branch {
                        errs.push(format!("{p} is of branch {n}, the set's is {branch}"));
                    } else if driver_versioned && upstream(v) != self.driver {
                        errs.push(format!(
                            "{p} is pinned at {v}, not at the driver's version {}",
                            self.driver
                        ));
                    }
                }
                match self.fabric {
                    Fabric::Nvswitch3 | Fabric::Nvswitch4 => {
                        at_driver("nvidia-fabricmanager", &mut errs);
                        at_driver("libnvidia-nscq", &mut errs);
                        if has("nvidia-imex") {
                            errs.push(
                                "nvidia-imex is for GB200 trays, not NVSwitch systems".into(),
                            );
                        }
                    }
                    Fabric::NvlinkC2c => {
                        at_driver("nvidia-imex", &mut errs);
                        if has("nvidia-fabricmanager") {
                            errs.push("GB200 trays run IMEX, not fabric manager".into());
                        }
                    }
                    Fabric::None => {}
                }
                if self.fabric == Fabric::Nvswitch4 {
                    at_driver("libnvsdm", &mut errs);
                    if !has("nvlsm") {
                        errs.push("nvlsm is missing (4th-generation NVSwitch needs it)".into());
                    }
                }
                let dcgm: Vec<&String> = self
                    .packages
                    .keys()
                    .filter(|p| p.starts_with("datacenter-gpu-manager-4-cuda"))
                    .collect();
                if let (Some(want), false) = (cuda_major(branch), dcgm.is_empty()) {
                    let name = format!("datacenter-gpu-manager-4-cuda{want}");
                    if dcgm.iter().any(|p| **p != name) {
                        errs.push(format!(
                            "branch {branch} goes with CUDA {want}: DCGM must be {name}"
                        ));
                    }
                }
            }
            Vendor::Neuron => {
                for p in [
                    "aws-neuronx-dkms",
                    "aws-neuronx-runtime-lib",
                    "aws-neuronx-collectives",
                    "aws-neuronx-tools",
                ] {
                    if !has(p) {
                        errs.push(format!("{p} is missing (one Neuron release has all four)"));
                    }
                }
                if let Some(v) = self.packages.get("aws-neuronx-dkms")
                    && upstream(v) != self.driver
                {
                    errs.push(format!(
                        "aws-neuronx-dkms is pinned at {v}, not at the driver's version {}",
                        self.driver
                    ));
                }
            }
        }
        for (p, v) in &self.packages {
            if v.contains('*') && !v.ends_with("-*") || v.matches('*').count() > 1 {
                errs.push(format!(
                    "{p} = {v:?}: a pin is a version, or UPSTREAM-* (any revision)"
                ));
            }
        }
        errs
    }

    /// Kernel modules the set must provide.
    pub fn modules(&self) -> Vec<String> {
        if let Some(m) = &self.modules {
            return m.clone();
        }
        match self.vendor {
            Vendor::Nvidia => vec!["nvidia".into(), "nvidia-uvm".into()],
            Vendor::Neuron => vec!["neuron".into()],
        }
    }

    /// Units that must run where the devices are.
    pub fn services(&self) -> Vec<String> {
        let mut s = Vec::new();
        if self.vendor == Vendor::Nvidia {
            s.push("nvidia-persistenced".to_string());
            match self.fabric {
                Fabric::Nvswitch3 => s.push("nvidia-fabricmanager".into()),
                Fabric::Nvswitch4 => {
                    s.push("nvidia-fabricmanager".into());
                    s.push("nvlsm".into());
                }
                Fabric::NvlinkC2c => s.push("nvidia-imex".into()),
                Fabric::None => {}
            }
        }
        s
    }

    /// The set against `suite`: each pin to the one version there for `arch` (or `all`).
    pub fn resolve(
        &self,
        name: &str,
        suite: &SuiteMeta,
        arch: &str,
        devices: u32,
    ) -> Result<DriverSet, Vec<String>> {
        let mut errs = self.rule_errors();
        for (p, v) in &self.packages {
            if !debian_name(p) || !debian_version(v.trim_end_matches('*')) {
                errs.push(format!(
                    "{p} = {v:?} is not a Debian package name and version"
                ));
            }
        }
        let mut packages = BTreeMap::new();
        let mut sha256 = BTreeMap::new();
        for (p, pin) in &self.packages {
            let mut versions: Vec<(&str, &str)> = suite
                .version_of(p, arch)
                .into_iter()
                .filter(|m| pin_matches(pin, &m.version))
                .map(|m| (m.version.as_str(), m.sha256.as_str()))
                .collect();
            versions.dedup_by(|a, b| a.0 == b.0);
            match versions.as_slice() {
                [(v, sha)] => {
                    packages.insert(p.clone(), v.to_string());
                    sha256.insert(p.clone(), sha.to_string());
                }
                [] => {
                    let have: Vec<&str> = suite
                        .version_of(p, arch)
                        .iter()
                        .map(|m| m.version.as_str())
                        .collect();
                    errs.push(if have.is_empty() {
                        format!("{p} is not in suite {} for {arch}", suite.suite)
                    } else {
                        format!(
                            "{p} {pin} is not in suite {} (it has {})",
                            suite.suite,
                            have.join(", ")
                        )
                    });
                }
                many => errs.push(format!(
                    "{p} {pin} matches {} versions in suite {} ({}): pin one",
                    many.len(),
                    suite.suite,
                    many.iter().map(|v| v.0).collect::<Vec<_>>().join(", ")
                )),
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(DriverSet {
            name: name.to_string(),
            vendor: match self.vendor {
                Vendor::Nvidia => "nvidia".into(),
                Vendor::Neuron => "neuron".into(),
            },
            driver: self.driver.clone(),
            suite: self.suite.clone(),
            packages,
            sha256,
            modules: self.modules(),
            services: self.services(),
            devices,
            module_signer: None,
        })
    }
}

impl DriversFile {
    pub fn parse(text: &str, skus: &Skus) -> Result<Self, String> {
        let file: DriversFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut file = file;
        for set in file.set.values_mut() {
            set.open_required = set.skus.iter().any(|k| {
                skus.sku.get(k).is_some_and(|s| {
                    s.gpu_device_ids
                        .iter()
                        .any(|[lo, _]| *lo >= FIRST_BLACKWELL_ID)
                })
            });
        }
        let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, set) in &file.set {
            if !crate::repo::valid_name(&set.suite) {
                return Err(format!("set {name}: {:?} is not a suite name", set.suite));
            }
            if set.packages.is_empty() {
                return Err(format!("set {name}: no packages"));
            }
            for sku in &set.skus {
                if !skus.sku.contains_key(sku) {
                    return Err(format!("set {name}: no SKU {sku} in the SKU definitions"));
                }
                if let Some(other) = owner.insert(sku, name) {
                    return Err(format!("SKU {sku} is in two sets: {other} and {name}"));
                }
            }
            let errs = set.rule_errors();
            if !errs.is_empty() {
                return Err(format!("set {name}: {}", errs.join("; ")));
            }
        }
        Ok(file)
    }

    /// The set `sku`'s nodes get, if any.
    pub fn for_sku(&self, sku: &str) -> Option<(&str, &SetDef)> {
        self.set
            .iter()
            .find(|(_, s)| s.skus.iter().any(|k| k == sku))
            .map(|(n, s)| (n.as_str(), s))
    }

    /// The sets that name `suite`, for `repo remove`.
    pub fn users_of(&self, suite: &str) -> Vec<String> {
        self.set
            .iter()
            .filter(|(_, s)| s.suite == suite)
            .map(|(n, _)| format!("driver set {n}"))
            .collect()
    }
}

/// `drivers.toml`: the configured file, else the shipped one.
pub fn load(path: Option<&std::path::Path>, skus: &Skus) -> anyhow::Result<DriversFile> {
    let (text, from) = match path {
        Some(p) => (
            std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("cannot read driver sets {}: {e}", p.display()))?,
            p.display().to_string(),
        ),
        None => (
            SHIPPED_DRIVERS.to_string(),
            "shipped drivers.toml".to_string(),
        ),
    };
    DriversFile::parse(&text, skus).map_err(|e| anyhow::anyhow!("driver sets {from}: {e}"))
}

/// The apt preferences that hold a node to `set`: one priority-1001 stanza per package at its
/// exact version (1001 lets apt downgrade to it, and outranks every other version).
pub fn apt_preferences(set: &DriverSet) -> String {
    let mut out = format!(
        "# Driver set {} from suite {}: every package at its exact version.\n# Written by the provisioner; `apt-mark showhold` lists the same packages.\n",
        set.name, set.suite
    );
    for (p, v) in &set.packages {
        out.push_str(&format!(
            "\nPackage: {p}\nPin: version {v}\nPin-Priority: 1001\n"
        ));
    }
    out
}

/// The packages to give `apt-get install`, each as `NAME=VERSION`.
pub fn install_args(set: &DriverSet) -> Vec<String> {
    set.packages
        .iter()
        .map(|(p, v)| format!("{p}={v}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skus() -> Skus {
        Skus::parse(crate::lifecycle::plan::SHIPPED_SKUS).unwrap()
    }

    #[test]
    fn the_shipped_sets_keep_the_rules() {
        let f = DriversFile::parse(SHIPPED_DRIVERS, &skus()).unwrap();
        assert_eq!(f.for_sku("hgx-b200").unwrap().0, "nvidia-580-hgx-blackwell");
        assert_eq!(f.for_sku("gb200-nvl72-tray").unwrap().0, "nvidia-580-gb200");
        assert!(f.for_sku("qemu-lab").is_none());
        assert_eq!(f.users_of("cuda-580-1").len(), 2);
        let b = &f.set["nvidia-580-hgx-blackwell"];
        assert_eq!(
            b.services(),
            ["nvidia-persistenced", "nvidia-fabricmanager", "nvlsm"]
        );
        let gb = &f.set["nvidia-580-gb200"];
        assert_eq!(gb.services(), ["nvidia-persistenced", "nvidia-imex"]);
    }

    fn hopper() -> SetDef {
        DriversFile::parse(SHIPPED_DRIVERS, &skus()).unwrap().set["nvidia-580-hgx-hopper"].clone()
    }

    #[test]
    fn a_set_that_breaks_a_rule_says_which() {
        let mut s = hopper();
        s.packages.remove("nvidia-fabricmanager");
        assert!(
            s.rule_errors()
                .iter()
                .any(|e| e == "nvidia-fabricmanager is missing")
        );

        let mut s = hopper();
        s.packages
            .insert("nvidia-fabricmanager".into(), "580.126.20-*".into());
        assert!(
            s.rule_errors()
                .iter()
                .any(|e| e.contains("nvidia-fabricmanager is pinned at 580.126.20-*")),
            "{:?}",
            s.rule_errors()
        );

        let mut s = hopper();
        s.packages
            .insert("nvidia-utils-575".into(), "575.57.08-*".into());
        assert!(s.rule_errors().iter().any(|e| e.contains("branch 575")));

        // Hopper runs the proprietary module; Blackwell does not.
        let mut s = hopper();
        s.packages.remove("nvidia-open-580");
        s.packages.remove("nvidia-dkms-580-open");
        s.packages
            .insert("nvidia-dkms-580".into(), "580.95.05-*".into());
        assert_eq!(s.rule_errors(), Vec::<String>::new());
        let mut b =
            DriversFile::parse(SHIPPED_DRIVERS, &skus()).unwrap().set["nvidia-580-hgx-blackwell"]
                .clone();
        assert!(b.open_required);
        b.packages.remove("nvidia-open-580");
        b.packages.remove("nvidia-dkms-580-open");
        b.packages
            .insert("nvidia-dkms-580".into(), "580.95.05-*".into());
        let errs = b.rule_errors();
        assert!(
            errs.iter().any(|e| e.starts_with("no open kernel module")),
            "{errs:?}"
        );
        assert!(errs.iter().any(|e| e.contains("proprietary")), "{errs:?}");
        let mut s = hopper();
        s.packages.remove("nvidia-open-580");
        s.packages.remove("nvidia-dkms-580-open");
        assert!(
            s.rule_errors()
                .iter()
                .any(|e| e.starts_with("no kernel module package"))
        );

        let mut s = hopper();
        s.packages.remove("datacenter-gpu-manager-4-cuda13");
        s.packages
            .insert("datacenter-gpu-manager-4-cuda12".into(), "1:4.4.1-*".into());
        assert!(s.rule_errors().iter().any(|e| e.contains("CUDA 13")));

        let mut s = hopper();
        s.fabric = Fabric::NvlinkC2c;
        assert!(s.rule_errors().iter().any(|e| e.contains("IMEX")));
    }

    #[test]
    fn pins_match_exact_versions_or_any_revision_of_one_upstream() {
        assert!(pin_matches("580.95.05-1", "580.95.05-1"));
        assert!(!pin_matches("580.95.05-1", "580.95.05-2"));
        assert!(pin_matches("580.95.05-*", "580.95.05-0ubuntu1"));
        assert!(!pin_matches("580.95.05-*", "580.95.051-1"));
        assert!(!pin_matches("580.95.05-*", "580.126.20-1"));
        assert!(!pin_matches("580.95.05-*", "580.95.05"));
        assert!(pin_matches("2.35.30.0-*", "2.35.30.0-0a1b2c3d"));
        assert!(pin_matches("1:4.4.1-*", "1:4.4.1-1"));
        assert!(!pin_matches("1:4.4.1-*", "4.4.1-1"));
    }

    #[test]
    fn a_sku_in_two_sets_or_an_unknown_sku_is_refused() {
        let two = SHIPPED_DRIVERS.replace(
            "skus = [\"hgx-b200\", \"hgx-b300\"]",
            "skus = [\"hgx-b200\", \"hgx-h100\"]",
        );
        let e = DriversFile::parse(&two, &skus()).unwrap_err();
        assert!(e.contains("SKU hgx-h100 is in two sets"), "{e}");
        let unknown = SHIPPED_DRIVERS.replace("\"trn3\"]", "\"trn9\"]");
        let e = DriversFile::parse(&unknown, &skus()).unwrap_err();
        assert!(e.contains("no SKU trn9"), "{e}");
    }
}
