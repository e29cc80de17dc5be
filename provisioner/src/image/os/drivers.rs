//! A driver set built into an OS image (`image build --drivers SET`).
//!
//! Built in, not installed by each node: the image's digest then covers the drivers, a DKMS
//! module is compiled once per image for the image's own kernel rather than once per node
//! (under the lab's emulated CPUs that would take hours), and a node's first boot needs no
//! package download. The node still proves on its running system that the set holds
//! (`Instruction::VerifyDrivers`).
//!
//! The build installs the set with apt from the appliance's own repository (the suite under
//! `DATA_DIR/repo`, as a `copy:` source, so that dpkg in the tree gets the packages, checked
//! with the appliance's archive key): the set's apt preferences are in place before apt resolves anything, every package
//! is named at its version, the kernel's headers come along for DKMS, and DKMS signs the
//! modules with the appliance's module-signing key (its private half is removed from the tree
//! before the image is made). Then, in a run of its own, `apt-mark hold` of the set; then the
//! agent's verifier on the tree: a module missing for the image's kernel, a package at
//! another version, or one not held, stops the build.

use std::path::{Path, PathBuf};
use std::process::Command;

use provisioner_protocol::drivers::DriverSet;

use super::steps::{StepError, Steps};

/// Where DKMS finds the module-signing key and certificate in the tree during the build.
const MOK_KEY: &str = "/var/lib/dkms/provisioner-module-signing.key";
const MOK_CERT: &str = "/var/lib/dkms/provisioner-module-signing.der";

/// What the bootstrap needs to build a driver set in.
#[derive(Clone, Debug)]
pub struct DriverBuild {
    pub set: DriverSet,
    /// `DATA_DIR/repo`.
    pub repo: PathBuf,
    /// The appliance's archive key (armored), which signs the suite.
    pub archive_key: PathBuf,
    /// The set's apt preferences (`drivers::apt_preferences`).
    pub preferences: String,
    /// The appliance's module-signing key and certificate (DER).
    pub module_key: (PathBuf, PathBuf),
    /// The kernel headers package for DKMS (`linux-headers-amd64`), when the set builds a
    /// module.
    pub headers: Option<String>,
}

impl DriverBuild {
    /// The apt source of the suite, for the bootstrap.
    pub fn source(&self) -> String {
        format!(
            "deb [signed-by={}] copy:{} {} main",
            self.archive_key.display(),
            self.repo.display(),
            self.set.suite
        )
    }

    /// The packages to include: the set at its versions, and the kernel's headers.
    pub fn packages(&self) -> Vec<String> {
        let mut p: Vec<String> = self
            .set
            .packages
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        p.extend(self.headers.clone());
        p
    }

    /// mmdebstrap hooks run before apt resolves: the preferences, and DKMS's signing key.
    pub fn setup_hooks(&self, work: &Path) -> Result<Vec<String>, std::io::Error> {
        let prefs = work.join("provisioner-drivers.pref");
        std::fs::write(&prefs, &self.preferences)?;
        let dkms_conf = work.join("provisioner-dkms.conf");
        std::fs::write(
            &dkms_conf,
            format!(
                "# Written by the provisioner's image build: DKMS signs modules with the appliance's key.\nmok_signing_key=\"{MOK_KEY}\"\nmok_certificate=\"{MOK_CERT}\"\n"
            ),
        )?;
        let (key, cert) = &self.module_key;
        Ok(vec![
            "mkdir -p \"$1\"/etc/apt/preferences.d \"$1\"/etc/dkms/framework.conf.d \"$1\"/var/lib/dkms".into(),
            format!(
                "copy-in {} /etc/apt/preferences.d/",
                prefs.display()
            ),
            format!("copy-in {} /etc/dkms/framework.conf.d/", dkms_conf.display()),
            format!("upload {} {MOK_KEY}", key.display()),
            format!("upload {} {MOK_CERT}", cert.display()),
        ])
    }

    /// mmdebstrap hooks once everything is installed: the hold, in its own apt run, and the
    /// signing key's private half out of the tree.
    pub fn customize_hooks(&self) -> Vec<String> {
        // Names were checked as Debian package names when the set was resolved; quoted all
        // the same, as they reach a root shell.
        let names: Vec<String> = self
            .set
            .packages
            .keys()
            .map(|n| format!("'{}'", n.replace('\'', "")))
            .collect();
        vec![
            format!("chroot \"$1\" apt-mark hold {}", names.join(" ")),
            // The signing key's private half leaves the tree, and so does any key DKMS made
            // for itself: nothing in the image can sign a module.
            format!("rm -f \"$1\"{MOK_KEY} \"$1\"/var/lib/dkms/mok.key"),
        ]
    }
}

/// Resolves driver set `name` (from `drivers.toml`) against its suite in the repository under
/// `data_dir`, for an image of `debian_arch`.
pub fn prepare(
    data_dir: &Path,
    sets: &crate::drivers::DriversFile,
    name: &str,
    debian_arch: &str,
) -> Result<DriverBuild, String> {
    let def = sets
        .set
        .get(name)
        .ok_or_else(|| format!("no driver set {name} (see `provisioner drivers list`)"))?;
    let suite = crate::repo::show(data_dir, &def.suite).map_err(|e| {
        format!(
            "driver set {name}: {e} (import the vendor's bundle: `provisioner repo import BUNDLE`)"
        )
    })?;
    let set = def
        .resolve(name, &suite, debian_arch, 0)
        .map_err(|errs| format!("driver set {name}: {}", errs.join("; ")))?;
    // Made here if this appliance has none yet: the suite is checked with its public half.
    crate::repo::ArchiveKey::load_or_create(data_dir).map_err(|e| e.to_string())?;
    let dkms = set.packages.keys().any(|p| p.contains("dkms"));
    // apt and mmdebstrap's hooks take absolute paths only.
    let abs = |p: PathBuf| {
        std::fs::canonicalize(&p).map_err(|e| format!("cannot find {}: {e}", p.display()))
    };
    let (key, cert) = module_signing_key(data_dir)?;
    let mut set = set;
    set.module_signer = Some(certificate_name(&cert)?);
    Ok(DriverBuild {
        preferences: crate::drivers::apt_preferences(&set),
        repo: abs(crate::repo::repo_dir(data_dir))?,
        archive_key: abs(crate::repo::ArchiveKey::public_path(data_dir))?,
        module_key: (abs(key)?, abs(cert)?),
        headers: dkms.then(|| format!("linux-headers-{debian_arch}")),
        set,
    })
}

/// The common name of a DER certificate: what `modinfo -F signer` says of a module it signed.
fn certificate_name(cert: &Path) -> Result<String, String> {
    let out = Command::new("openssl")
        .args([
            "x509", "-inform", "DER", "-noout", "-subject", "-nameopt", "RFC2253", "-in",
        ])
        .arg(cert)
        .output()
        .map_err(|e| format!("cannot run openssl: {e}"))?;
    let subject = String::from_utf8_lossy(&out.stdout);
    subject
        .trim()
        .trim_start_matches("subject=")
        .split(',')
        .find_map(|part| part.trim().strip_prefix("CN="))
        .map(|cn| cn.replace("\\", ""))
        .filter(|cn| out.status.success() && !cn.is_empty())
        .ok_or_else(|| format!("{}: no common name in the certificate", cert.display()))
}

/// The appliance's module-signing key (`DATA_DIR/keys/module-signing.{key,der}`), made with
/// openssl on first use: an RSA key and a self-signed X.509 certificate, as the kernel's
/// `sign-file` and a machine owner key (MOK) enrolment take them.
pub fn module_signing_key(data_dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let dir = crate::keys::keys_dir(data_dir);
    let key = dir.join("module-signing.key");
    let cert = dir.join("module-signing.der");
    if key.is_file() && cert.is_file() {
        return Ok((key, cert));
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let out = Command::new("openssl")
        .args([
            "req", "-new", "-x509", "-newkey", "rsa:4096", "-nodes", "-days", "36500", "-outform",
            "DER", "-sha256", "-subj",
        ])
        .arg(format!("/CN=Provisioner module signing key {host}").trim_end())
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .map_err(|e| {
            format!("cannot run openssl (the openssl package) for the module-signing key: {e}")
        })?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&key);
        return Err(format!(
            "openssl could not make the module-signing key: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| format!("cannot protect {}: {e}", key.display()))?;
    Ok((key, cert))
}

/// Runs the agent's verifier on the built tree; the build stops on a check that failed.
pub fn verify_tree(
    steps: &mut Steps,
    agent: &Path,
    set: &DriverSet,
    root: &Path,
    work: &Path,
) -> Result<provisioner_protocol::drivers::DriverReport, StepError> {
    let set_path = work.join("driver-set.json");
    std::fs::write(
        &set_path,
        serde_json::to_string_pretty(set).map_err(|e| steps.check(e.to_string()))?,
    )
    .map_err(steps.io("cannot write the driver set"))?;
    let out = Command::new(agent)
        .arg("--verify-drivers")
        .arg(&set_path)
        .arg("--root")
        .arg(root)
        .output()
        .map_err(steps.io(format!("cannot run the agent {}", agent.display())))?;
    let report: provisioner_protocol::drivers::DriverReport = serde_json::from_slice(&out.stdout)
        .map_err(|e| {
        steps.check(format!(
            "the agent's driver check gave no report ({e}): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    })?;
    for c in &report.checks {
        steps.note(&format!("{}: {:?}: {}", c.check, c.outcome, c.detail));
    }
    if let Some(c) = report.failed() {
        return Err(steps.check(format!(
            "driver set {} on kernel {}: {} failed: {}",
            set.name, report.kernel, c.check, c.detail
        )));
    }
    Ok(report)
}
