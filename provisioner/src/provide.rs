//! What the appliance needs before it can boot a node, provided when it is missing: the
//! network-boot firmware of the firmware manifest (from the Debian packages the manifest names,
//! each file checked against its sha256 pin) and the discovery images (`image build-discovery`,
//! one for x86-64 nodes and one for arm64 nodes).
//! `up` asks for both on every start; what is there already is not fetched or built again, and
//! downloaded packages are kept in the cache. A part that cannot be had (the appliance is
//! `--offline`, or has no route to the package mirror) is said in one line with how to import
//! it from a folder carried in, and the appliance starts without it.

use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::boot::KernelArch;
use crate::firmware::{self, Entry, FirmwareError};
use crate::image::debs::{self, DebError, PrivateApt};
use crate::image::{self, BuildError, DiscoveryImage, ManifestError, Target};
use crate::types::sha256_file;

/// The mirror firmware packages come from unless `DEBIAN_MIRROR` names another.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

#[derive(Debug, thiserror::Error)]
pub enum ProvideError {
    #[error(transparent)]
    Firmware(#[from] FirmwareError),
    #[error(transparent)]
    Deb(#[from] DebError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{name} from {package} {version} has sha256 {actual}; the manifest pins {expected}")]
    Mismatch {
        name: String,
        package: String,
        version: String,
        actual: String,
        expected: String,
    },
    #[error("{file}: {what}")]
    Import { file: PathBuf, what: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the agent binary is not at {path}, and cannot be built here: {why}")]
    NoAgent { path: PathBuf, why: String },
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> ProvideError + '_ {
    move |source| ProvideError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Where things are and may be put, and whether fetching is allowed.
#[derive(Clone, Debug)]
pub struct Needs {
    pub firmware_dir: PathBuf,
    pub data_dir: PathBuf,
    /// Downloaded packages and the private apt state (default `DATA_DIR/cache`).
    pub cache_dir: PathBuf,
    /// No fetch, no build that needs the network.
    pub offline: bool,
    /// The operator named a discovery image (`--discovery-kernel`): no x86-64 one is built
    /// (an arm64 one still is, for the nodes that kernel cannot boot).
    pub discovery_given: bool,
}

/// Provides what is missing, saying what it does; returns a line for each part it could not
/// provide (already logged).
pub fn provide(needs: &Needs) -> Vec<String> {
    let mut missing = Vec::new();
    match firmware::missing(&needs.firmware_dir) {
        Ok(entries) if entries.is_empty() => {}
        Ok(entries) => missing.extend(provide_firmware(needs, &entries)),
        Err(e) => missing.push(said(format!("firmware: {e}"))),
    }
    for arch in KernelArch::ALL {
        if arch == KernelArch::X86_64 && needs.discovery_given {
            continue;
        }
        match image::load_arch(&needs.data_dir, arch) {
            Ok(Some(_)) => {}
            Ok(None) => missing.extend(provide_discovery(needs, arch)),
            Err(e) => missing.push(said(format!(
                "the {arch} discovery image in {}: {e}",
                image::dir_for(&needs.data_dir, arch).display()
            ))),
        }
    }
    missing
}

fn said(line: String) -> String {
    warn!("{line}");
    line
}

fn provide_firmware(needs: &Needs, entries: &[Entry]) -> Vec<String> {
    let import = format!(
        "import it offline with `provisioner firmware import DIR --firmware-dir {}` (DIR holds the files firmware/manifest.toml names)",
        needs.firmware_dir.display()
    );
    if needs.offline {
        return entries
            .iter()
            .map(|e| {
                said(format!(
                    "firmware {} is missing and the appliance is offline: {import}",
                    e.name
                ))
            })
            .collect();
    }
    info!(
        files = %entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>().join(" "),
        "first start: fetching network-boot firmware from Debian"
    );
    match fetch_firmware(&needs.firmware_dir, &needs.cache_dir, entries, &mirror()) {
        Ok(()) => Vec::new(),
        Err(e) => {
            let still = firmware::missing(&needs.firmware_dir).unwrap_or_default();
            still
                .iter()
                .map(|m| {
                    said(format!(
                        "firmware {} could not be fetched ({e}): {import}",
                        m.name
                    ))
                })
                .collect()
        }
    }
}

fn provide_discovery(needs: &Needs, arch: KernelArch) -> Vec<String> {
    let import = format!(
        "build it where there is a mirror (`provisioner image build-discovery --arch {arch} --out DIR`) and import it with `provisioner image import DIR --data-dir {}`",
        needs.data_dir.display()
    );
    if needs.offline {
        return vec![said(format!(
            "no {arch} discovery image and the appliance is offline: {import}"
        ))];
    }
    info!(%arch, "first start: building the discovery image (Debian's kernel and busybox, the agent)");
    let target = Target::of(arch);
    let built = agent(&target, needs.offline).and_then(|agent| {
        image::build_discovery(&image::BuildOptions {
            arch,
            mirror: mirror(),
            out: None,
            data_dir: needs.data_dir.clone(),
            agent: Some(agent),
            kernel_package: None,
            deb_cache: Some(needs.cache_dir.join("debs")),
        })
        .map_err(ProvideError::from)
    });
    match built {
        Ok(b) => {
            info!(%arch, kernel = %b.kernel.sha256, initrd = %b.initrd.sha256, seconds = b.elapsed.as_secs(), "first start: discovery image built");
            Vec::new()
        }
        Err(e) => vec![said(format!(
            "no {arch} discovery image: it could not be built ({e}); {import}"
        ))],
    }
}

/// The mirror firmware (and another architecture's discovery packages) come from:
/// `DEBIAN_MIRROR`, else Debian's own.
pub fn mirror() -> String {
    std::env::var("DEBIAN_MIRROR").unwrap_or_else(|_| DEFAULT_MIRROR.to_string())
}

/// Fetches the packages `entries` name (each once, kept in `cache/debs`) through a private apt
/// state for exactly their suites, and puts each file into `dir` only once its sha256 matches
/// the manifest's pin. Each file is written beside its final name and renamed into place, so an
/// interrupted fetch leaves nothing half-written under a name the server trusts.
pub fn fetch_firmware(
    dir: &Path,
    cache: &Path,
    entries: &[Entry],
    mirror: &str,
) -> Result<(), ProvideError> {
    let mut suites: Vec<String> = entries.iter().map(suite).collect();
    suites.sort();
    suites.dedup();
    let apt = PrivateApt::open(&cache.join("apt-firmware"), mirror, &suites)?;
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    for e in entries {
        let deb = apt.fetch(&cache.join("debs"), &e.package, &e.version)?;
        let unpacked = tempfile::Builder::new()
            .prefix(".firmware-")
            .tempdir_in(cache)
            .map_err(write_err(cache))?;
        debs::unpack(&deb, unpacked.path())?;
        let from = unpacked.path().join(e.path.trim_start_matches('/'));
        put(&from, dir, e)?;
        info!(name = %e.name, package = %e.package, version = %e.version, suite = %suite(e), "firmware ok");
    }
    Ok(())
}

fn suite(e: &Entry) -> String {
    e.suite.clone().unwrap_or_else(|| "bookworm".to_string())
}

/// Copies `from` into `dir` as the entry's file if its sha256 is the entry's pin.
fn put(from: &Path, dir: &Path, e: &Entry) -> Result<(), ProvideError> {
    let (sha, _) = sha256_file(from).map_err(|err| ProvideError::Import {
        file: from.to_path_buf(),
        what: err.to_string(),
    })?;
    if sha != e.sha256 {
        return Err(ProvideError::Mismatch {
            name: e.name.clone(),
            package: e.package.clone(),
            version: e.version.clone(),
            actual: sha.to_string(),
            expected: e.sha256.to_string(),
        });
    }
    let tmp = dir.join(format!(".{}.part", e.name));
    std::fs::copy(from, &tmp).map_err(write_err(&tmp))?;
    let dest = dir.join(&e.name);
    std::fs::rename(&tmp, &dest).map_err(write_err(&dest))
}

/// Imports the firmware files of `dir`'s manifest found in `from` (a folder carried in from
/// elsewhere): each must match its pin, or nothing is imported. Returns the names imported.
pub fn import_firmware(from: &Path, dir: &Path) -> Result<Vec<String>, ProvideError> {
    let (entries, _) = firmware::manifest(dir)?;
    let mut found = Vec::new();
    for e in &entries {
        let file = from.join(&e.name);
        if !file.exists() {
            continue;
        }
        let (sha, _) = sha256_file(&file).map_err(|err| ProvideError::Import {
            file: file.clone(),
            what: err.to_string(),
        })?;
        if sha != e.sha256 {
            return Err(ProvideError::Import {
                file,
                what: format!(
                    "sha256 {sha}, but the manifest pins {} for {}: nothing imported",
                    e.sha256, e.name
                ),
            });
        }
        found.push(e);
    }
    if found.is_empty() {
        return Err(ProvideError::Import {
            file: from.to_path_buf(),
            what: format!(
                "holds none of the files the manifest names ({})",
                entries
                    .iter()
                    .map(|e| e.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    for e in &found {
        put(&from.join(&e.name), dir, e)?;
    }
    Ok(found.iter().map(|e| e.name.clone()).collect())
}

/// Imports a discovery image built elsewhere (`vmlinuz`, `initrd.img` and `discovery.json`
/// in `from`): its files must match its manifest; it replaces the appliance's image of its
/// architecture.
pub fn import_discovery(from: &Path, data_dir: &Path) -> Result<DiscoveryImage, ProvideError> {
    let Some(img) = image::load(from)? else {
        return Err(ProvideError::Import {
            file: from.join(image::MANIFEST),
            what: "missing: not a discovery image folder (`provisioner image build-discovery --out DIR` makes one)".into(),
        });
    };
    let dest = image::dir_for(data_dir, img.manifest.arch);
    let parent = dest.parent().unwrap_or(data_dir).to_path_buf();
    std::fs::create_dir_all(&parent).map_err(write_err(&parent))?;
    let work = tempfile::Builder::new()
        .prefix(".import-discovery-")
        .tempdir_in(&parent)
        .map_err(write_err(&parent))?;
    for f in [&img.kernel, &img.initrd, &from.join(image::MANIFEST)] {
        let name = f.file_name().unwrap_or_default();
        std::fs::copy(f, work.path().join(name)).map_err(write_err(f))?;
    }
    // Checked again where it now lies, then moved into place whole.
    let copied = image::load(work.path())?.ok_or_else(|| ProvideError::Import {
        file: work.path().to_path_buf(),
        what: "the copy has no manifest".into(),
    })?;
    let old = parent.join(format!(".discovery-{}-replaced", img.manifest.arch));
    let _ = std::fs::remove_dir_all(&old);
    if dest.exists() {
        std::fs::rename(&dest, &old).map_err(write_err(&dest))?;
    }
    let kept = work.keep();
    std::fs::rename(&kept, &dest).map_err(write_err(&dest))?;
    let _ = std::fs::remove_dir_all(&old);
    let _ = copied;
    image::load(&dest)?.ok_or_else(|| ProvideError::Import {
        file: dest.clone(),
        what: "vanished after the import".into(),
    })
}

/// The agent the discovery image carries: `provisioner-agent` beside this program, as packages
/// and `cargo build --workspace` place it (another architecture's where
/// `image::default_agent` looks). Run from a source checkout (`cargo run`), it is built there
/// first if it is missing (cross-built for another architecture).
fn agent(target: &Target, offline: bool) -> Result<PathBuf, ProvideError> {
    let exe = std::env::current_exe().map_err(write_err(Path::new("/proc/self/exe")))?;
    let dir = exe.parent().unwrap_or(Path::new(".")).to_path_buf();
    let beside = image::default_agent(target)?;
    if beside.is_file() {
        return Ok(beside);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let no = |why: String| ProvideError::NoAgent {
        path: beside.clone(),
        why,
    };
    if !workspace.join("agent/Cargo.toml").is_file() {
        return Err(no("this is no source checkout".into()));
    }
    let release = dir.file_name().is_some_and(|n| n == "release");
    let target_dir = dir.parent().unwrap_or(&dir).to_path_buf();
    info!(target_dir = %target_dir.display(), arch = %target.arch, "first start: building the node agent (cargo build -p provisioner-agent)");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "-q", "-p", "provisioner-agent", "--manifest-path"])
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    if !target.is_host() {
        cmd.args(["--target", target.rust]);
    }
    if release {
        cmd.arg("--release");
    }
    if offline {
        cmd.arg("--offline");
    }
    let status = cmd
        .status()
        .map_err(|e| no(format!("cannot run cargo: {e}")))?;
    if !status.success() || !beside.is_file() {
        return Err(no(format!(
            "cargo build failed ({status}); it needs `{}`",
            target.agent_hint()
        )));
    }
    Ok(beside)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_with(dir: &Path, name: &str, content: &[u8]) {
        let sha = crate::types::Sha256(
            sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(content)).into(),
        );
        std::fs::write(
            dir.join("manifest.toml"),
            format!(
                "[[binary]]\nname = \"{name}\"\narch = \"bios\"\npackage = \"ipxe\"\nversion = \"1\"\npath = \"x/{name}\"\nsha256 = \"{sha}\"\n"
            ),
        )
        .unwrap();
    }

    #[test]
    fn firmware_is_imported_only_when_it_matches_its_pin() {
        let (fw, carried) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        manifest_with(fw.path(), "undionly.kpxe", b"the real one");
        assert_eq!(firmware::missing(fw.path()).unwrap().len(), 1);
        std::fs::write(carried.path().join("undionly.kpxe"), b"tampered").unwrap();
        let err = import_firmware(carried.path(), fw.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nothing imported") && err.contains("undionly.kpxe"),
            "{err}"
        );
        assert!(!fw.path().join("undionly.kpxe").exists());
        let empty = tempfile::tempdir().unwrap();
        let err = import_firmware(empty.path(), fw.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds none of the files"), "{err}");
        std::fs::write(carried.path().join("undionly.kpxe"), b"the real one").unwrap();
        assert_eq!(
            import_firmware(carried.path(), fw.path()).unwrap(),
            ["undionly.kpxe"]
        );
        assert!(firmware::missing(fw.path()).unwrap().is_empty());
    }

    #[test]
    fn offline_nothing_is_fetched_and_each_missing_part_says_how_to_import_it() {
        let (fw, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        manifest_with(fw.path(), "ipxe.efi", b"x");
        let lines = provide(&Needs {
            firmware_dir: fw.path().to_path_buf(),
            data_dir: data.path().to_path_buf(),
            cache_dir: data.path().join("cache"),
            offline: true,
            discovery_given: false,
        });
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(
            lines[0].contains("firmware ipxe.efi")
                && lines[0].contains("provisioner firmware import DIR"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains("no x86_64 discovery image")
                && lines[1].contains("provisioner image import DIR"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].contains("no arm64 discovery image")
                && lines[2].contains("build-discovery --arch arm64"),
            "{}",
            lines[2]
        );
        assert!(!data.path().join("cache").exists(), "nothing fetched");
    }

    #[test]
    fn a_carried_discovery_image_is_checked_and_replaces_the_default() {
        let (from, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let err = import_discovery(from.path(), data.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a discovery image folder"), "{err}");
        let write = |kernel: &[u8], initrd: &[u8]| {
            std::fs::write(from.path().join("vmlinuz"), kernel).unwrap();
            std::fs::write(from.path().join("initrd.img"), initrd).unwrap();
            let m = crate::image::manifest_for_tests(b"kernel", b"initrd");
            std::fs::write(
                from.path().join(image::MANIFEST),
                serde_json::to_string(&m).unwrap(),
            )
            .unwrap();
        };
        // A tampered byte is refused, naming the file, and nothing is imported.
        write(b"kernel", b"initrX");
        let err = import_discovery(from.path(), data.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("initrd.img"), "{err}");
        assert!(image::load_default(data.path()).unwrap().is_none());
        write(b"kernel", b"initrd");
        let img = import_discovery(from.path(), data.path()).unwrap();
        assert_eq!(std::fs::read(&img.kernel).unwrap(), b"kernel");
        assert_eq!(image::load_default(data.path()).unwrap().unwrap(), img);
        // Imported again over itself: still whole.
        let again = import_discovery(from.path(), data.path()).unwrap();
        assert_eq!(again, img);
    }
}
