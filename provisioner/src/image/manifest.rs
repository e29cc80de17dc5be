//! `discovery.json`: what a built discovery image is made of, written beside its `vmlinuz`
//! and `initrd.img`, and read back when the appliance starts to use them by default.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::boot::KernelArch;
use crate::types::{Sha256, sha256_file};

/// The manifest's file name in the image's folder.
pub const MANIFEST: &str = "discovery.json";

/// Where `build-discovery` puts the x86-64 image by default, under the appliance's data
/// folder (where it has always been).
pub fn default_dir(data_dir: &Path) -> PathBuf {
    dir_for(data_dir, KernelArch::X86_64)
}

/// Where `build-discovery --arch ARCH` puts the image by default: `images/discovery/` for
/// x86_64, `images/discovery-ARCH/` for any other.
pub fn dir_for(data_dir: &Path, arch: KernelArch) -> PathBuf {
    let images = data_dir.join("images");
    match arch {
        KernelArch::X86_64 => images.join("discovery"),
        other => images.join(format!("discovery-{other}")),
    }
}

fn x86_64() -> KernelArch {
    KernelArch::X86_64
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryManifest {
    /// The nodes it is for; manifests written before there was more than one say nothing,
    /// and were x86_64.
    #[serde(default = "x86_64")]
    pub arch: KernelArch,
    pub kernel: KernelFile,
    pub initrd: ImageFile,
    pub busybox: Package,
    pub agent: Agent,
    pub modules: Modules,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelFile {
    pub package: String,
    pub version: String,
    /// `uname -r` of the kernel, e.g. `6.1.0-56-amd64`.
    pub release: String,
    pub file: String,
    pub size: u64,
    pub sha256: Sha256,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageFile {
    pub file: String,
    pub size: u64,
    pub sha256: Sha256,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    pub package: String,
    pub version: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    pub size: u64,
    pub sha256: Sha256,
    /// The shared libraries copied with it, at these paths in the initramfs.
    pub libraries: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Modules {
    /// The recipe's list (images/discovery/modules).
    pub requested: Vec<String>,
    /// What /init loads, in order: the requested modules and their dependencies.
    pub load_order: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a discovery image manifest: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path} is a discovery image for {found}, in the folder of the {want} one")]
    WrongArch {
        path: PathBuf,
        found: KernelArch,
        want: KernelArch,
    },
    #[error("{path} names `{file}`, which is not a plain file name")]
    BadFileName { path: PathBuf, file: String },
    #[error("{path} has sha256 {actual}, but {manifest} says {expected}: rebuild the image")]
    Changed {
        path: PathBuf,
        manifest: PathBuf,
        expected: Sha256,
        actual: Sha256,
    },
}

/// A built discovery image, its files checked against its manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub kernel_sha256: Sha256,
    pub initrd_sha256: Sha256,
    pub manifest: DiscoveryManifest,
}

/// The discovery image `build-discovery` left in `DATA_DIR/images/discovery/`, if there is
/// one; an error if its manifest is unreadable or its files no longer match it.
pub fn load_default(data_dir: &Path) -> Result<Option<DiscoveryImage>, ManifestError> {
    load_arch(data_dir, KernelArch::X86_64)
}

/// The discovery image for `arch` in its folder under `DATA_DIR` (see `load_default`); one
/// whose manifest names another architecture is refused.
pub fn load_arch(
    data_dir: &Path,
    arch: KernelArch,
) -> Result<Option<DiscoveryImage>, ManifestError> {
    let dir = dir_for(data_dir, arch);
    let img = load(&dir)?;
    if let Some(img) = &img
        && img.manifest.arch != arch
    {
        return Err(ManifestError::WrongArch {
            path: dir.join(MANIFEST),
            found: img.manifest.arch,
            want: arch,
        });
    }
    Ok(img)
}

/// The discovery image in `dir` (see `load_default`).
pub fn load(dir: &Path) -> Result<Option<DiscoveryImage>, ManifestError> {
    let path = dir.join(MANIFEST);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ManifestError::Read { path, source }),
    };
    let manifest: DiscoveryManifest =
        serde_json::from_str(&text).map_err(|source| ManifestError::Parse {
            path: path.clone(),
            source,
        })?;
    let kernel = checked(dir, &path, &manifest.kernel.file, manifest.kernel.sha256)?;
    let initrd = checked(dir, &path, &manifest.initrd.file, manifest.initrd.sha256)?;
    Ok(Some(DiscoveryImage {
        kernel,
        initrd,
        kernel_sha256: manifest.kernel.sha256,
        initrd_sha256: manifest.initrd.sha256,
        manifest,
    }))
}

/// `dir/file`, once its sha256 is the one the manifest recorded.
fn checked(
    dir: &Path,
    manifest: &Path,
    file: &str,
    expected: Sha256,
) -> Result<PathBuf, ManifestError> {
    if !crate::firmware::is_plain_name(file) {
        return Err(ManifestError::BadFileName {
            path: manifest.to_path_buf(),
            file: file.to_string(),
        });
    }
    let path = dir.join(file);
    let (actual, _) = sha256_file(&path).map_err(|source| ManifestError::Read {
        path: path.clone(),
        source,
    })?;
    if actual != expected {
        return Err(ManifestError::Changed {
            path,
            manifest: manifest.to_path_buf(),
            expected,
            actual,
        });
    }
    Ok(path)
}

#[cfg(test)]
fn sha_of(data: &[u8]) -> Sha256 {
    use sha2::Digest;
    Sha256(sha2::Sha256::digest(data).into())
}

#[cfg(test)]
/// A manifest for `kernel` and `initrd` as built files would have it (tests).
pub(crate) fn sample(kernel: &[u8], initrd: &[u8]) -> DiscoveryManifest {
    DiscoveryManifest {
        arch: KernelArch::X86_64,
        kernel: KernelFile {
            package: "linux-image-6.1.0-56-amd64".into(),
            version: "6.1.192-2".into(),
            release: "6.1.0-56-amd64".into(),
            file: "vmlinuz".into(),
            size: kernel.len() as u64,
            sha256: sha_of(kernel),
        },
        initrd: ImageFile {
            file: "initrd.img".into(),
            size: initrd.len() as u64,
            sha256: sha_of(initrd),
        },
        busybox: Package {
            package: "busybox-static".into(),
            version: "1:1.35.0-4+deb12u1+b1".into(),
        },
        agent: Agent {
            size: 1,
            sha256: sha_of(b"a"),
            libraries: vec!["/lib64/ld-linux-x86-64.so.2".into()],
        },
        modules: Modules {
            requested: vec!["virtio_net".into()],
            load_order: vec!["failover".into(), "virtio_net".into()],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::sample as manifest;
    use super::sha_of as sha;

    fn write(data_dir: &Path, m: &DiscoveryManifest, kernel: &[u8], initrd: &[u8]) {
        let dir = default_dir(data_dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("vmlinuz"), kernel).unwrap();
        std::fs::write(dir.join("initrd.img"), initrd).unwrap();
        std::fs::write(dir.join(MANIFEST), serde_json::to_vec_pretty(m).unwrap()).unwrap();
    }

    #[test]
    fn each_architecture_has_its_folder_and_an_old_manifest_is_x86_64() {
        let data = tempfile::tempdir().unwrap();
        let d = data.path();
        assert_eq!(dir_for(d, KernelArch::X86_64), d.join("images/discovery"));
        assert_eq!(
            dir_for(d, KernelArch::Arm64),
            d.join("images/discovery-arm64")
        );
        let m = manifest(b"k", b"i");
        let mut json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["arch"], "x86_64");
        json.as_object_mut().unwrap().remove("arch");
        let old: DiscoveryManifest = serde_json::from_value(json).unwrap();
        assert_eq!(old, m);
        // An x86-64 image put in the arm64 folder is not served to arm64 nodes.
        write(d, &m, b"k", b"i");
        std::fs::rename(default_dir(d), dir_for(d, KernelArch::Arm64)).unwrap();
        assert!(matches!(
            load_arch(d, KernelArch::Arm64),
            Err(ManifestError::WrongArch {
                found: KernelArch::X86_64,
                ..
            })
        ));
        assert_eq!(load_arch(d, KernelArch::X86_64).unwrap(), None);
    }

    #[test]
    fn no_manifest_is_no_image() {
        let data = tempfile::tempdir().unwrap();
        assert_eq!(load_default(data.path()).unwrap(), None);
    }

    #[test]
    fn a_built_image_is_found_and_checked() {
        let data = tempfile::tempdir().unwrap();
        let m = manifest(b"kernel", b"initrd");
        write(data.path(), &m, b"kernel", b"initrd");
        let img = load_default(data.path()).unwrap().unwrap();
        assert_eq!(img.kernel, default_dir(data.path()).join("vmlinuz"));
        assert_eq!(img.initrd_sha256, sha(b"initrd"));
        assert_eq!(img.manifest, m);

        // The initrd changed since it was built.
        std::fs::write(default_dir(data.path()).join("initrd.img"), b"other").unwrap();
        let e = load_default(data.path()).unwrap_err().to_string();
        assert!(e.contains("initrd.img") && e.contains("rebuild"), "{e}");
    }

    #[test]
    fn a_manifest_naming_a_path_or_missing_a_field_is_refused() {
        let data = tempfile::tempdir().unwrap();
        let mut m = manifest(b"k", b"i");
        m.kernel.file = "../../etc/passwd".into();
        write(data.path(), &m, b"k", b"i");
        assert!(matches!(
            load_default(data.path()),
            Err(ManifestError::BadFileName { .. })
        ));
        let dir = default_dir(data.path());
        std::fs::write(dir.join(MANIFEST), "{\"kernel\": {}}").unwrap();
        let e = load_default(data.path()).unwrap_err().to_string();
        assert!(e.contains("discovery.json"), "{e}");
    }
}
