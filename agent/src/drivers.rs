//! Checking a driver set on a system: what apt and DKMS claim is not taken on trust. DKMS
//! reports success and apt exits 0 when the kernel's headers are missing and no module was
//! built; a meta-package pin lets apt pull a fabric manager of another version. So each
//! promise is checked where it lands:
//!
//! - `packages`: every package of the set installed at its exact version (dpkg's status);
//! - `held`: every one held (`apt-mark hold`), and the apt preferences pinning them present;
//! - `module NAME`: the module exists for the kernel (`modinfo -k KERNEL`), at the driver's
//!   version, and is signed;
//! - on the running system only (`live`): the driver loads and its loaded version is the
//!   set's, the devices the SKU has are there and answer (`nvidia-smi`, `neuron-ls`), and the
//!   units the fabric needs are active. Where the node has none of the vendor's devices (a
//!   lab VM) those come out `cannot_validate`, with what was seen: never a pass.
//!
//! The same checks run on an image's root tree at build (`root` not `/`, not live).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use provisioner_protocol::drivers::{
    DriverCheck, DriverReport, DriverSet, InstalledPackage, Outcome,
};

/// Where the set's apt preferences are written, under the root.
pub const PREFERENCES: &str = "etc/apt/preferences.d/provisioner-drivers.pref";

/// A package as dpkg's status file has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub version: String,
    /// `install ok installed`, `hold ok installed`, ...
    pub status: String,
}

/// Reads dpkg's status file: package → its status and version (architecture qualifiers are
/// not needed here: a set names each package once).
pub fn dpkg_status(text: &str) -> BTreeMap<String, Status> {
    let mut out = BTreeMap::new();
    for para in text.split("\n\n") {
        let mut package = None;
        let mut version = String::new();
        let mut status = String::new();
        for line in para.lines() {
            if let Some(v) = line.strip_prefix("Package: ") {
                package = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("Version: ") {
                version = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("Status: ") {
                status = v.trim().to_string();
            }
        }
        if let Some(p) = package {
            out.insert(p, Status { version, status });
        }
    }
    out
}

fn check(name: impl Into<String>, outcome: Outcome, detail: impl Into<String>) -> DriverCheck {
    DriverCheck {
        check: name.into(),
        outcome,
        detail: detail.into(),
    }
}

/// The package checks and the installed list, from the status file's text.
fn package_checks(
    set: &DriverSet,
    status: &BTreeMap<String, Status>,
    prefs: Option<&str>,
) -> (Vec<DriverCheck>, Vec<InstalledPackage>) {
    let mut wrong = Vec::new();
    let mut not_held = Vec::new();
    let mut installed = Vec::new();
    for (p, want) in &set.packages {
        match status.get(p) {
            Some(s) if s.status.ends_with(" ok installed") => {
                if &s.version != want {
                    wrong.push(format!("{p} is {}, the set pins {want}", s.version));
                }
                if !s.status.starts_with("hold ") {
                    not_held.push(p.clone());
                }
                installed.push(InstalledPackage {
                    package: p.clone(),
                    version: s.version.clone(),
                    sha256: if &s.version == want {
                        set.sha256.get(p).cloned().unwrap_or_default()
                    } else {
                        String::new()
                    },
                });
            }
            Some(s) => wrong.push(format!("{p} is not installed (dpkg: {})", s.status)),
            None => wrong.push(format!("{p} is not installed")),
        }
    }
    let mut checks = vec![if wrong.is_empty() {
        check(
            "packages",
            Outcome::Pass,
            format!("{} packages at their pinned versions", set.packages.len()),
        )
    } else {
        check("packages", Outcome::Fail, wrong.join("; "))
    }];
    let unpinned: Vec<&String> = set
        .packages
        .iter()
        .filter(|(p, v)| {
            !prefs.is_some_and(|t| {
                t.contains(&format!(
                    "Package: {p}\nPin: version {v}\nPin-Priority: 1001"
                ))
            })
        })
        .map(|(p, _)| p)
        .collect();
    checks.push(if !not_held.is_empty() {
        check(
            "held",
            Outcome::Fail,
            format!("not held: {}", not_held.join(", ")),
        )
    } else if !unpinned.is_empty() {
        check(
            "held",
            Outcome::Fail,
            format!(
                "not pinned in /{PREFERENCES}: {}",
                unpinned
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    } else {
        check(
            "held",
            Outcome::Pass,
            "every package held and pinned at priority 1001",
        )
    });
    (checks, installed)
}

/// `modinfo -k KERNEL [-b ROOT] -F FIELD MODULE`: the field's value, or why not.
fn modinfo(root: &Path, kernel: &str, module: &str, field: &str) -> Result<String, String> {
    let mut cmd = Command::new("modinfo");
    cmd.args(["-k", kernel, "-F", field]);
    if root != Path::new("/") {
        cmd.arg("-b").arg(root);
    }
    cmd.arg(module);
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run modinfo (kmod): {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn module_check(set: &DriverSet, root: &Path, kernel: &str, module: &str) -> DriverCheck {
    let name = format!("module {module}");
    let version = match modinfo(root, kernel, module, "version") {
        Ok(v) => v,
        Err(why) => {
            return check(
                name,
                Outcome::Fail,
                format!(
                    "no {module} module for kernel {kernel} ({why}): DKMS built nothing; are linux-headers-{kernel} installed?"
                ),
            );
        }
    };
    if version != set.driver {
        return check(
            name,
            Outcome::Fail,
            format!(
                "{module} for {kernel} is version {version:?}, the set's driver is {}",
                set.driver
            ),
        );
    }
    match modinfo(root, kernel, module, "signer") {
        Ok(signer)
            if set
                .module_signer
                .as_ref()
                .is_some_and(|want| *want != signer) =>
        {
            check(
                name,
                Outcome::Fail,
                format!(
                    "{module} {version} for {kernel} is signed by {signer:?}, not by the set's key {:?}",
                    set.module_signer.as_deref().unwrap_or_default()
                ),
            )
        }
        Ok(signer) if !signer.is_empty() => check(
            name,
            Outcome::Pass,
            format!("{module} {version} for {kernel}, signed by {signer:?}"),
        ),
        _ => check(
            name,
            Outcome::Fail,
            format!(
                "{module} {version} for {kernel} is not signed: a kernel that enforces module signatures will not load it"
            ),
        ),
    }
}

/// PCI devices of `vendor` (hex, `0x10de`) whose class is `class_prefix` (`0x03` display /
/// 3D for GPUs; empty: any), under `sys` (`/sys/bus/pci/devices`). For Amazon's vendor id,
/// its network, storage, display, bridge and serial functions are not counted: only what
/// the facts call Neuron devices.
pub fn pci_count(sys: &Path, vendor: &str, class_prefix: &str) -> u32 {
    let Ok(entries) = std::fs::read_dir(sys) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            let read = |f: &str| {
                std::fs::read_to_string(e.path().join(f))
                    .map(|s| s.trim().to_ascii_lowercase())
                    .unwrap_or_default()
            };
            let class = read("class");
            let not_neuron = ["0x01", "0x02", "0x03", "0x06", "0x07"]
                .iter()
                .any(|c| class.starts_with(c));
            read("vendor") == vendor
                && class.starts_with(class_prefix)
                && !(vendor == "0x1d0f" && not_neuron)
        })
        .count() as u32
}

/// The live checks: load, loaded version, devices, services.
/// The programs the live checks run, each as the start of a command line: the system's by
/// default; tests give stand-ins.
#[derive(Clone, Debug)]
pub struct Tools {
    pub modprobe: Vec<String>,
    pub nvidia_smi: Vec<String>,
    pub neuron_ls: Vec<String>,
    pub systemctl: Vec<String>,
}

impl Default for Tools {
    fn default() -> Self {
        Tools {
            modprobe: vec!["modprobe".into()],
            nvidia_smi: vec!["nvidia-smi".into()],
            neuron_ls: vec!["neuron-ls".into()],
            systemctl: vec!["systemctl".into()],
        }
    }
}

/// `argv` followed by `args`, ready to run.
fn command(argv: &[String], args: &[&str]) -> Command {
    let mut c = Command::new(argv.first().map(String::as_str).unwrap_or("false"));
    c.args(&argv[1.min(argv.len())..]).args(args);
    c
}

fn live_checks(set: &DriverSet, sys: &Path, tools: &Tools) -> Vec<DriverCheck> {
    let (vendor_id, class, default_module, smi) = match set.vendor.as_str() {
        "nvidia" => ("0x10de", "0x03", "nvidia", "nvidia-smi"),
        _ => ("0x1d0f", "", "neuron", "neuron-ls"),
    };
    // The set's first module is the driver (Debian's packaging calls it nvidia-current).
    let module = set
        .modules
        .first()
        .map(String::as_str)
        .unwrap_or(default_module);
    let present = pci_count(&sys.join("bus/pci/devices"), vendor_id, class);
    let mut checks = Vec::new();
    let load = command(&tools.modprobe, &[module]).output();
    let load_said = match &load {
        Ok(o) if o.status.success() => String::new(),
        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
        Err(e) => format!("cannot run modprobe: {e}"),
    };
    let loaded = std::fs::read_to_string(
        sys.join("module")
            .join(module.replace('-', "_"))
            .join("version"),
    )
    .map(|v| v.trim().to_string())
    .ok();
    if present == 0 {
        let seen = if load_said.is_empty() {
            format!("{module} loaded")
        } else {
            format!("loading {module}: {load_said}")
        };
        checks.push(check(
            "devices",
            Outcome::CannotValidate,
            format!(
                "cannot validate devices: no {} device on this node's PCI bus (the SKU expects {}); {seen}",
                set.vendor, set.devices
            ),
        ));
        for s in &set.services {
            checks.push(check(
                format!("service {s}"),
                Outcome::CannotValidate,
                "cannot validate: no devices for it to serve",
            ));
        }
        return checks;
    }
    checks.push(match &loaded {
        Some(v) if *v == set.driver => check(
            "loaded version",
            Outcome::Pass,
            format!("{module} {v} loaded"),
        ),
        Some(v) => check(
            "loaded version",
            Outcome::Fail,
            format!(
                "the loaded {module} is {v}, the set's driver is {}",
                set.driver
            ),
        ),
        None => check(
            "loaded version",
            Outcome::Fail,
            format!("{module} is not loaded: {load_said}"),
        ),
    });
    let answered = answering_devices(smi, tools);
    checks.push(match answered {
        Ok(n) if n == set.devices && present == set.devices => check(
            "devices",
            Outcome::Pass,
            format!("{n} of {} devices answer {smi}", set.devices),
        ),
        Ok(n) => check(
            "devices",
            Outcome::Fail,
            format!(
                "{n} devices answer {smi} and {present} are on the PCI bus; the SKU has {}",
                set.devices
            ),
        ),
        Err(why) => check("devices", Outcome::Fail, why),
    });
    for s in &set.services {
        let active = command(&tools.systemctl, &["is-active", s])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|e| format!("cannot run systemctl: {e}"));
        checks.push(if active == "active" {
            check(format!("service {s}"), Outcome::Pass, "active")
        } else {
            check(
                format!("service {s}"),
                Outcome::Fail,
                format!("{s} is {active}"),
            )
        });
    }
    checks
}

/// How many devices the vendor's tool sees.
fn answering_devices(tool: &str, tools: &Tools) -> Result<u32, String> {
    let out = match tool {
        "nvidia-smi" => command(&tools.nvidia_smi, &["-L"]).output(),
        _ => command(&tools.neuron_ls, &["--json-output"]).output(),
    }
    .map_err(|e| format!("cannot run {tool}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{tool} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(match tool {
        "nvidia-smi" => text.lines().filter(|l| l.starts_with("GPU ")).count() as u32,
        _ => serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.as_array().map(|a| a.len() as u32))
            .unwrap_or(0),
    })
}

/// Checks `set` on the system at `root` for `kernel`; `live` adds the checks only a running
/// system can answer (`sys` is its `/sys`).
pub fn verify(set: &DriverSet, root: &Path, kernel: &str, live: Option<&Path>) -> DriverReport {
    verify_with(set, root, kernel, live, &Tools::default())
}

/// [`verify`] with the live checks' programs named.
pub fn verify_with(
    set: &DriverSet,
    root: &Path,
    kernel: &str,
    live: Option<&Path>,
    tools: &Tools,
) -> DriverReport {
    let status_path = root.join("var/lib/dpkg/status");
    let status = std::fs::read_to_string(&status_path).map(|t| dpkg_status(&t));
    let prefs = std::fs::read_to_string(root.join(PREFERENCES)).ok();
    let mut checks = Vec::new();
    let mut installed = Vec::new();
    match status {
        Ok(status) => {
            let (c, i) = package_checks(set, &status, prefs.as_deref());
            checks.extend(c);
            installed = i;
        }
        Err(e) => checks.push(check(
            "packages",
            Outcome::Fail,
            format!("cannot read {}: {e}", status_path.display()),
        )),
    }
    for m in &set.modules {
        checks.push(module_check(set, root, kernel, m));
    }
    if let Some(sys) = live {
        checks.extend(live_checks(set, sys, tools));
    }
    DriverReport {
        set: set.name.clone(),
        kernel: kernel.to_string(),
        checks,
        installed,
    }
}

/// Whether `deb [OPTIONS]` turn apt's signature checks off.
fn insecure(options: &str) -> bool {
    options.split_whitespace().any(|o| {
        let o = o.to_ascii_lowercase();
        o == "trusted=yes" || o == "allow-insecure=yes" || o == "allow-weak=yes"
    })
}

/// The hosts of every apt source under `root` (`deb` lines of `sources.list` and
/// `sources.list.d/*.list`, `URIs:` of `*.sources`), with the file each is in and whether it
/// turns signature checks off (`trusted=yes`, `allow-insecure=yes`).
pub fn apt_source_hosts(root: &Path) -> Vec<(String, String, bool)> {
    let mut files = vec![root.join("etc/apt/sources.list")];
    if let Ok(d) = std::fs::read_dir(root.join("etc/apt/sources.list.d")) {
        let mut more: Vec<PathBuf> = d
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "list" || x == "sources"))
            .collect();
        more.sort();
        files.extend(more);
    }
    let host = |uri: &str| -> String {
        let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or(rest);
        let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        authority
            .split_once(':')
            .map_or(authority, |(h, _)| h)
            .to_ascii_lowercase()
    };
    let mut out = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let name = f.display().to_string();
        for line in text.lines().map(str::trim) {
            let first = line.split_whitespace().next().unwrap_or_default();
            if first == "deb" || first == "deb-src" {
                // Options in brackets come before the URI.
                let rest = line[first.len()..].trim_start();
                let (options, rest) = match rest.strip_prefix('[') {
                    Some(r) => r.split_once(']').unwrap_or((r, "")),
                    None => ("", rest),
                };
                if let Some(uri) = rest.split_whitespace().next() {
                    out.push((host(uri), name.clone(), insecure(options)));
                }
            } else if let Some((field, value)) = line.split_once(':') {
                let field = field.trim().to_ascii_lowercase();
                if field == "uris" {
                    for uri in value.split_whitespace() {
                        out.push((host(uri), name.clone(), false));
                    }
                } else if (field == "trusted" || field == "allow-insecure")
                    && value.trim().eq_ignore_ascii_case("yes")
                {
                    out.push((String::new(), name.clone(), true));
                }
            }
        }
    }
    out
}

/// The node's apt, checked where it runs: every source names the appliance (`appliance`, its
/// host) and nothing else, and `apt-get update` from it succeeds, its suite's signature
/// checked by apt with the archive key the installer wrote.
pub fn apt_check(appliance: &str) -> DriverCheck {
    let sources = apt_source_hosts(Path::new("/"));
    if let Some((_, f, _)) = sources.iter().find(|(_, _, insecure)| *insecure) {
        return check(
            "apt",
            Outcome::Fail,
            format!("{f} turns apt's signature checks off"),
        );
    }
    let elsewhere: Vec<String> = sources
        .iter()
        .filter(|(h, _, _)| h != appliance)
        .map(|(h, f, _)| format!("{h} ({f})"))
        .collect();
    if sources.is_empty() {
        return check(
            "apt",
            Outcome::Fail,
            "no apt source names the appliance's suite",
        );
    }
    if !elsewhere.is_empty() {
        return check(
            "apt",
            Outcome::Fail,
            format!("apt sources name other hosts: {}", elsewhere.join(", ")),
        );
    }
    let out = Command::new("timeout")
        .args(["300", "apt-get", "-q", "update", "-o", "Acquire::Retries=0"])
        .env("LC_ALL", "C")
        .output();
    match out {
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            let trouble: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("W:") || l.starts_with("E:") || l.starts_with("Err:"))
                .collect();
            if o.status.success() && trouble.is_empty() {
                check(
                    "apt",
                    Outcome::Pass,
                    format!(
                        "apt-get update from {appliance} only ({} sources), its signature checked",
                        sources.len()
                    ),
                )
            } else {
                check(
                    "apt",
                    Outcome::Fail,
                    format!("apt-get update from {appliance}: {}", trouble.join("; ")),
                )
            }
        }
        Err(e) => check("apt", Outcome::Fail, format!("cannot run apt-get: {e}")),
    }
}

/// The running kernel's release.
pub fn running_kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The one kernel installed under `root` (`lib/modules/*`), for checking an image's tree.
pub fn installed_kernel(root: &Path) -> Result<String, String> {
    let dir: PathBuf = root.join("lib/modules");
    let mut kernels: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .flatten()
        .filter(|e| e.path().join("modules.dep").exists() || e.path().join("kernel").is_dir())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    kernels.sort();
    match kernels.as_slice() {
        [k] => Ok(k.clone()),
        [] => Err(format!("no kernel under {}", dir.display())),
        many => Err(format!(
            "several kernels under {}: {}",
            dir.display(),
            many.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> DriverSet {
        DriverSet {
            name: "nvidia-580-hgx-hopper".into(),
            vendor: "nvidia".into(),
            driver: "580.95.05".into(),
            suite: "cuda-580-1".into(),
            packages: [
                (
                    "nvidia-fabricmanager".to_string(),
                    "580.95.05-1".to_string(),
                ),
                ("libnvidia-nscq".to_string(), "580.95.05-1".to_string()),
            ]
            .into(),
            sha256: [("nvidia-fabricmanager".to_string(), "ab".repeat(32))].into(),
            modules: vec![],
            services: vec!["nvidia-fabricmanager".into()],
            devices: 8,
            module_signer: None,
        }
    }

    const PREFS: &str = "Package: libnvidia-nscq\nPin: version 580.95.05-1\nPin-Priority: 1001\n\nPackage: nvidia-fabricmanager\nPin: version 580.95.05-1\nPin-Priority: 1001\n";

    #[test]
    fn a_drifted_package_an_unheld_one_and_a_missing_one_are_named() {
        let status = dpkg_status(
            "Package: nvidia-fabricmanager\nStatus: install ok installed\nVersion: 580.126.20-1\n\nPackage: libnvidia-nscq\nStatus: hold ok installed\nVersion: 580.95.05-1\n",
        );
        let (checks, installed) = package_checks(&set(), &status, Some(PREFS));
        assert_eq!(checks[0].outcome, Outcome::Fail);
        assert_eq!(
            checks[0].detail,
            "nvidia-fabricmanager is 580.126.20-1, the set pins 580.95.05-1"
        );
        assert_eq!(checks[1].detail, "not held: nvidia-fabricmanager");
        assert_eq!(installed.len(), 2);
        assert!(
            installed.iter().all(|p| p.sha256.is_empty()),
            "a drifted package has no set digest"
        );

        let status = dpkg_status(
            "Package: libnvidia-nscq\nStatus: hold ok installed\nVersion: 580.95.05-1\n",
        );
        let (checks, _) = package_checks(&set(), &status, Some(PREFS));
        assert_eq!(checks[0].detail, "nvidia-fabricmanager is not installed");
    }

    #[test]
    fn the_exact_set_held_and_pinned_passes_and_records_digests() {
        let status = dpkg_status(
            "Package: nvidia-fabricmanager\nStatus: hold ok installed\nVersion: 580.95.05-1\n\nPackage: libnvidia-nscq\nStatus: hold ok installed\nVersion: 580.95.05-1\n",
        );
        let (checks, installed) = package_checks(&set(), &status, Some(PREFS));
        assert!(
            checks.iter().all(|c| c.outcome == Outcome::Pass),
            "{checks:?}"
        );
        assert_eq!(installed[1].sha256, "ab".repeat(32));
        let (checks, _) = package_checks(&set(), &status, None);
        assert_eq!(checks[1].outcome, Outcome::Fail);
        assert!(
            checks[1].detail.starts_with("not pinned"),
            "{}",
            checks[1].detail
        );
    }

    #[test]
    fn no_devices_is_cannot_validate_never_a_pass() {
        let sys = tempfile::tempdir().unwrap();
        let dev = sys.path().join("bus/pci/devices/0000:00:01.0");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(dev.join("vendor"), "0x1af4\n").unwrap();
        std::fs::write(dev.join("class"), "0x020000\n").unwrap();
        let checks = live_checks(&set(), sys.path(), &Tools::default());
        assert!(!checks.is_empty());
        assert!(
            checks.iter().all(|c| c.outcome == Outcome::CannotValidate),
            "{checks:?}"
        );
        assert!(
            checks[0]
                .detail
                .starts_with("cannot validate devices: no nvidia device")
        );
    }

    #[test]
    fn apt_sources_are_read_from_every_form_apt_reads() {
        let root = tempfile::tempdir().unwrap();
        let apt = root.path().join("etc/apt/sources.list.d");
        std::fs::create_dir_all(&apt).unwrap();
        std::fs::write(
            root.path().join("etc/apt/sources.list"),
            "# comment\ndeb [signed-by=/etc/apt/keyrings/provisioner-archive.asc] http://10.99.0.1:8080/repo s-1 main\n",
        )
        .unwrap();
        std::fs::write(
            apt.join("debian.sources"),
            "Types: deb\nuris: http://deb.debian.org/debian\nSuites: bookworm\n",
        )
        .unwrap();
        std::fs::write(
            apt.join("x.list"),
            "deb\thttp://user@mirror.example:80/debian bookworm main\ndeb [trusted=yes] http://10.99.0.1:x@evil.example/ x main\n",
        )
        .unwrap();
        std::fs::write(apt.join("ignored.txt"), "deb http://nowhere/ x main\n").unwrap();
        let found = apt_source_hosts(root.path());
        let hosts: Vec<&str> = found.iter().map(|(h, _, _)| h.as_str()).collect();
        assert_eq!(
            hosts,
            [
                "10.99.0.1",
                "deb.debian.org",
                "mirror.example",
                "evil.example"
            ]
        );
        assert_eq!(found.iter().filter(|(_, _, insecure)| *insecure).count(), 1);
    }

    /// A node with its GPUs: stand-ins for modprobe, nvidia-smi and systemctl (run by `sh`,
    /// never exec'd as fresh files) and a sysfs tree with 8 GPUs and the loaded module.
    struct Hardware {
        sys: tempfile::TempDir,
        tools: Tools,
    }

    fn hardware(gpus_answering: usize, loaded: &str, fm: &str) -> Hardware {
        let sys = tempfile::tempdir().unwrap();
        for i in 0..8 {
            let d = sys
                .path()
                .join(format!("bus/pci/devices/0000:{:02x}:00.0", 0x18 + i));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("vendor"), "0x10de\n").unwrap();
            std::fs::write(d.join("class"), "0x030200\n").unwrap();
        }
        let m = sys.path().join("module/nvidia");
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(m.join("version"), format!("{loaded}\n")).unwrap();
        let script = |name: &str, body: &str| {
            let p = sys.path().join(name);
            std::fs::write(&p, body).unwrap();
            vec!["sh".to_string(), p.display().to_string()]
        };
        let smi: String = (0..gpus_answering)
            .map(|i| format!("echo 'GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i})'\n"))
            .collect();
        let tools = Tools {
            modprobe: script("modprobe.sh", "exit 0\n"),
            nvidia_smi: script("nvidia-smi.sh", &smi),
            neuron_ls: script("neuron-ls.sh", "echo '[]'\n"),
            systemctl: script(
                "systemctl.sh",
                &format!(
                    "case \"$2\" in nvidia-fabricmanager) echo {fm} ;; *) echo active ;; esac\n"
                ),
            ),
        };
        Hardware { sys, tools }
    }

    fn hopper_set() -> DriverSet {
        DriverSet {
            services: vec!["nvidia-persistenced".into(), "nvidia-fabricmanager".into()],
            ..set()
        }
    }

    #[test]
    fn on_its_hardware_a_node_passes_only_with_every_gpu_the_right_driver_and_its_services() {
        let hw = hardware(8, "580.95.05", "active");
        let checks = live_checks(&hopper_set(), hw.sys.path(), &hw.tools);
        assert!(
            checks.iter().all(|c| c.outcome == Outcome::Pass),
            "{checks:#?}"
        );
        assert_eq!(checks.len(), 4, "loaded version, devices, two services");

        let hw = hardware(7, "580.95.05", "active");
        let checks = live_checks(&hopper_set(), hw.sys.path(), &hw.tools);
        let devices = checks.iter().find(|c| c.check == "devices").unwrap();
        assert_eq!(devices.outcome, Outcome::Fail);
        assert_eq!(
            devices.detail,
            "7 devices answer nvidia-smi and 8 are on the PCI bus; the SKU has 8"
        );

        let hw = hardware(8, "580.126.20", "active");
        let checks = live_checks(&hopper_set(), hw.sys.path(), &hw.tools);
        let loaded = checks.iter().find(|c| c.check == "loaded version").unwrap();
        assert_eq!(loaded.outcome, Outcome::Fail);
        assert_eq!(
            loaded.detail,
            "the loaded nvidia is 580.126.20, the set's driver is 580.95.05"
        );

        let hw = hardware(8, "580.95.05", "failed");
        let checks = live_checks(&hopper_set(), hw.sys.path(), &hw.tools);
        let fm = checks
            .iter()
            .find(|c| c.check == "service nvidia-fabricmanager")
            .unwrap();
        assert_eq!(fm.outcome, Outcome::Fail);
        assert_eq!(fm.detail, "nvidia-fabricmanager is failed");
        let persistenced = checks
            .iter()
            .find(|c| c.check == "service nvidia-persistenced")
            .unwrap();
        assert_eq!(persistenced.outcome, Outcome::Pass);
    }

    #[test]
    fn pci_devices_are_counted_by_vendor_and_class() {
        let sys = tempfile::tempdir().unwrap();
        for (i, (vendor, class)) in [
            ("0x10de", "0x030200"),
            ("0x10de", "0x068000"),
            ("0x10de", "0x030200"),
            ("0x1d0f", "0x120000"),
        ]
        .iter()
        .enumerate()
        {
            let d = sys.path().join(format!("0000:00:0{i}.0"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("vendor"), vendor).unwrap();
            std::fs::write(d.join("class"), class).unwrap();
        }
        assert_eq!(
            pci_count(sys.path(), "0x10de", "0x03"),
            2,
            "NVSwitches (0x0680) are not GPUs"
        );
        assert_eq!(pci_count(sys.path(), "0x1d0f", ""), 1);
    }
}
