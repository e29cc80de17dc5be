//! The network-boot binaries (iPXE for BIOS, x86-64 and arm64 UEFI) and their manifest.
//! At start every binary present is hashed and checked against the manifest; only those that
//! match are ever served, by TFTP or HTTP.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tracing::{error, info, warn};

use crate::types::{Sha256, sha256_file};

/// The manifest shipped with the appliance, used when the firmware directory has none.
pub const SHIPPED_MANIFEST: &str = include_str!("../../firmware/manifest.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    #[serde(default)]
    binary: Vec<Entry>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub name: String,
    pub arch: String,
    pub package: String,
    /// The Debian suite the package comes from (bookworm when absent).
    #[serde(default)]
    pub suite: Option<String>,
    pub version: String,
    /// Where the file sits in the package.
    pub path: String,
    pub sha256: Sha256,
}

#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    #[error("firmware manifest {path}: {source}")]
    Manifest {
        path: String,
        source: Box<toml::de::Error>,
    },
    #[error("firmware manifest {path}: {reason}")]
    BadEntry { path: String, reason: String },
    #[error("cannot read firmware manifest {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

/// A binary that matched its manifest entry.
#[derive(Debug, Clone)]
pub struct Firmware {
    pub path: PathBuf,
    pub sha256: Sha256,
    pub size: u64,
    pub arch: String,
}

/// The binaries fit to serve, by file name.
#[derive(Debug, Clone, Default)]
pub struct FirmwareSet {
    files: BTreeMap<String, Firmware>,
}

/// The entries of `dir`'s `manifest.toml` (or of the shipped manifest), each a plain name;
/// and how the manifest is named in messages.
pub fn manifest(dir: &Path) -> Result<(Vec<Entry>, String), FirmwareError> {
    let manifest_path = dir.join("manifest.toml");
    let (text, shown) = match std::fs::read_to_string(&manifest_path) {
        Ok(t) => (t, manifest_path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
            SHIPPED_MANIFEST.to_string(),
            "(shipped manifest)".to_string(),
        ),
        Err(source) => {
            return Err(FirmwareError::Read {
                path: manifest_path.display().to_string(),
                source,
            });
        }
    };
    let manifest: Manifest = toml::from_str(&text).map_err(|e| FirmwareError::Manifest {
        path: shown.clone(),
        source: Box::new(e),
    })?;
    if let Some(bad) = manifest.binary.iter().find(|e| !is_plain_name(&e.name)) {
        return Err(FirmwareError::BadEntry {
            path: shown,
            reason: format!("`{}` is not a plain file name", bad.name),
        });
    }
    Ok((manifest.binary, shown))
}

/// The entries of `dir`'s manifest whose file is missing there or does not match its pin.
pub fn missing(dir: &Path) -> Result<Vec<Entry>, FirmwareError> {
    Ok(manifest(dir)?
        .0
        .into_iter()
        .filter(|e| !sha256_file(&dir.join(&e.name)).is_ok_and(|(sha, _)| sha == e.sha256))
        .collect())
}

impl FirmwareSet {
    /// Checks `dir` against its `manifest.toml` (or the shipped manifest).
    pub fn load(dir: &Path) -> Result<FirmwareSet, FirmwareError> {
        let (entries, _) = manifest(dir)?;
        let mut files = BTreeMap::new();
        for entry in entries {
            let path = dir.join(&entry.name);
            if !stays_inside(dir, &path) {
                error!(name = %entry.name, "firmware is a link that leaves the firmware directory; it will not be served");
                continue;
            }
            match sha256_file(&path) {
                Ok((sha, size)) if sha == entry.sha256 => {
                    info!(name = %entry.name, arch = %entry.arch, %sha, "firmware ok");
                    files.insert(
                        entry.name.clone(),
                        Firmware {
                            path,
                            sha256: sha,
                            size,
                            arch: entry.arch.clone(),
                        },
                    );
                }
                Ok((sha, _)) => error!(
                    name = %entry.name, expected = %entry.sha256, found = %sha,
                    "firmware does not match its manifest; it will not be served"
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => warn!(
                    name = %entry.name, dir = %dir.display(),
                    "firmware missing (`provisioner firmware fetch`, or `provisioner firmware import DIR` offline); it will not be served"
                ),
                Err(e) => error!(name = %entry.name, error = %e, "cannot read firmware"),
            }
        }
        Ok(FirmwareSet { files })
    }

    pub fn get(&self, name: &str) -> Option<&Firmware> {
        self.files.get(name)
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// Whether `path` (after following links) is still inside `dir`. A missing file is "inside":
/// it is reported as missing instead.
fn stays_inside(dir: &Path, path: &Path) -> bool {
    match (dir.canonicalize(), path.canonicalize()) {
        (Ok(d), Ok(p)) => p.starts_with(d),
        (_, Err(e)) if e.kind() == std::io::ErrorKind::NotFound => true,
        _ => false,
    }
}

/// One path component, no separators, no dot-names: what a manifest and a URL may name.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_matching_binaries_are_served() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("good.efi"), b"good").unwrap();
        std::fs::write(dir.path().join("bad.efi"), b"tampered").unwrap();
        let good = sha256_file(&dir.path().join("good.efi")).unwrap().0;
        let manifest = format!(
            r#"
[[binary]]
name = "good.efi"
arch = "x86_64-efi"
package = "ipxe"
version = "1"
path = "boot/good.efi"
sha256 = "{good}"
[[binary]]
name = "bad.efi"
arch = "x86_64-efi"
package = "ipxe"
version = "1"
path = "boot/bad.efi"
sha256 = "{good}"
[[binary]]
name = "missing.kpxe"
arch = "bios"
package = "ipxe"
version = "1"
path = "x"
sha256 = "{good}"
"#
        );
        std::fs::write(dir.path().join("manifest.toml"), manifest).unwrap();
        // A link out of the directory to a file whose hash matches is still refused.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"good").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link.efi"))
            .unwrap();
        let manifest = std::fs::read_to_string(dir.path().join("manifest.toml")).unwrap()
            + &format!(
                "[[binary]]\nname = \"link.efi\"\narch = \"x\"\npackage = \"p\"\nversion = \"1\"\npath = \"x\"\nsha256 = \"{good}\"\n"
            );
        std::fs::write(dir.path().join("manifest.toml"), manifest).unwrap();
        let set = FirmwareSet::load(dir.path()).unwrap();
        assert!(
            set.get("link.efi").is_none(),
            "a link leaving the root is refused"
        );
        assert_eq!(set.len(), 1);
        assert!(set.get("good.efi").is_some());
        assert!(set.get("bad.efi").is_none(), "a mismatch is refused");
        assert!(set.get("missing.kpxe").is_none());
    }

    #[test]
    fn shipped_manifest_parses_and_names_plain_files() {
        let m: Manifest = toml::from_str(SHIPPED_MANIFEST).unwrap();
        assert!(m.binary.iter().any(|b| b.name == "undionly.kpxe"));
        assert!(m.binary.iter().all(|b| is_plain_name(&b.name)));
    }

    #[test]
    fn hostile_names_are_not_plain() {
        for n in ["", ".", "..", "../x", "a/b", "a\\b", "a\0b"] {
            assert!(!is_plain_name(n), "{n:?}");
        }
        assert!(is_plain_name("ipxe.efi"));
    }
}
