//! `image.json`: what an OS image is (recipe, architecture, kernel and command line, partition
//! table), the sha256 and size of every file of it (raw, zstd, block map, SBOM), its grade, and
//! beside it `image.json.minisig`, the appliance's signature over the manifest's exact bytes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::layout::Partition;
use super::recipe::{Arch, Firmware};
use crate::image::grade::Grade;
use crate::keys::{ApplianceKey, KeyError};
use crate::types::{Sha256, sha256_file};

pub const FORMAT: u32 = 1;
pub const MANIFEST: &str = "image.json";
pub const SIGNATURE: &str = "image.json.minisig";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageManifest {
    pub format: u32,
    /// `RECIPE-VERSION-ARCH`.
    pub name: String,
    pub recipe: String,
    pub recipe_version: String,
    pub architecture: Arch,
    pub firmware: Vec<Firmware>,
    pub source_date_epoch: u64,
    pub raw: FileDigest,
    pub compressed: FileDigest,
    pub bmap: FileDigest,
    /// Bytes of the raw image the block map says must be written.
    pub mapped_bytes: u64,
    pub sbom: FileDigest,
    pub packages: usize,
    pub kernel: KernelInfo,
    pub disk_guid: String,
    pub partitions: Vec<Partition>,
    pub hardening: Option<String>,
    /// OpenSCAP and Lynis on the image's root tree; none when the build skipped it.
    pub grade: Option<Grade>,
    pub build_seconds: f64,
    /// The accelerator driver set built into the image (`image build --drivers SET`): every
    /// package at its version, with the sha256 of the package it came from; none for an
    /// image without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drivers: Option<provisioner_protocol::drivers::DriverSet>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDigest {
    pub file: String,
    pub size: u64,
    pub sha256: Sha256,
}

impl FileDigest {
    pub fn of(path: &Path) -> std::io::Result<FileDigest> {
        let (sha256, size) = sha256_file(path)?;
        Ok(FileDigest {
            file: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            size,
            sha256,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelInfo {
    pub package: String,
    pub version: String,
    /// `uname -r`.
    pub release: String,
    pub cmdline: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageManifestError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode the manifest: {0}")]
    Encode(#[from] serde_json::Error),
}

/// A grade in one line: each OpenSCAP profile's pass rate and the Lynis index.
pub fn grade_summary(g: &Grade) -> String {
    let mut parts: Vec<String> = g
        .openscap
        .iter()
        .map(|p| {
            let short = p
                .profile
                .trim_start_matches("xccdf_org.ssgproject.content_profile_");
            format!("{short} {:.1}% ({}/{})", p.percent, p.pass, p.evaluated)
        })
        .collect();
    parts.push(format!("Lynis {}", g.lynis.index));
    parts.join(", ")
}

/// RFC 3339 of a Unix time, for SPDX's `created`.
pub fn rfc3339(epoch: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch))
        .to_string()
}

/// The bytes a bmap file says are mapped (`MappedBlocksCount` × `BlockSize`).
pub fn mapped_bytes(bmap: &Path) -> Result<u64, String> {
    let text = std::fs::read_to_string(bmap)
        .map_err(|e| format!("cannot read {}: {e}", bmap.display()))?;
    // The header comment mentions the element names too: take the element that closes.
    let field = |name: &str| -> Result<u64, String> {
        let (open, close) = (format!("<{name}>"), format!("</{name}>"));
        text.match_indices(&open)
            .find_map(|(at, _)| {
                let rest = &text[at + open.len()..];
                rest.find(&close)
                    .and_then(|end| rest[..end].trim().parse().ok())
            })
            .ok_or(format!("{} has no numeric {name}", bmap.display()))
    };
    Ok(field("MappedBlocksCount")? * field("BlockSize")?)
}

/// Writes `image.json` into `dir` and signs its exact bytes.
pub fn write_signed(
    dir: &Path,
    m: &ImageManifest,
    key: &ApplianceKey,
) -> Result<(), ImageManifestError> {
    let text = serde_json::to_string_pretty(m)? + "\n";
    let path = dir.join(MANIFEST);
    let werr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImageManifestError::Write { path, source }
    };
    std::fs::write(&path, &text).map_err(werr(&path))?;
    let sig = key.sign(
        text.as_bytes(),
        &format!(
            "file:{MANIFEST} image:{} sha256:{}",
            m.name, m.compressed.sha256
        ),
    );
    let sig_path = dir.join(SIGNATURE);
    std::fs::write(&sig_path, sig).map_err(werr(&sig_path))?;
    Ok(())
}

/// Reads and checks a signed manifest: the signature against `keys` first, then the JSON.
pub fn read_verified(
    dir: &Path,
    keys: &[crate::keys::PublicKey],
) -> Result<(ImageManifest, Vec<u8>), ReadError> {
    let path = dir.join(MANIFEST);
    let sig_path = dir.join(SIGNATURE);
    let bytes = std::fs::read(&path).map_err(|source| ReadError::Missing {
        path: path.clone(),
        source,
    })?;
    let sig = std::fs::read_to_string(&sig_path).map_err(|source| ReadError::Unsigned {
        path: sig_path.clone(),
        source,
    })?;
    crate::keys::verify(&bytes, &sig_path, &sig, keys)?;
    let m: ImageManifest = serde_json::from_slice(&bytes).map_err(|e| ReadError::Bad {
        path: path.clone(),
        why: e.to_string(),
    })?;
    if m.format != FORMAT || !super::recipe::is_image_name(&m.name) {
        return Err(ReadError::Bad {
            path,
            why: format!(
                "format {} or name {:?} is not one this build reads",
                m.format, m.name
            ),
        });
    }
    for f in [&m.compressed, &m.bmap, &m.sbom, &m.raw] {
        if !crate::firmware::is_plain_name(&f.file) {
            return Err(ReadError::Bad {
                path,
                why: format!("file name {:?} is not a plain name", f.file),
            });
        }
    }
    Ok((m, bytes))
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no manifest {path}: {source}")]
    Missing {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the manifest is unsigned: cannot read {path}: {source}")]
    Unsigned {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Signature(#[from] KeyError),
    #[error("{path} is not an image manifest: {why}")]
    Bad { path: PathBuf, why: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_bytes_reads_bmaptools_fields() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.bmap");
        std::fs::write(
            &p,
            "<?xml version=\"1.0\" ?>\n<bmap version=\"2.0\">\n <ImageSize> 8192 </ImageSize>\n \
             <BlockSize> 4096 </BlockSize>\n <BlocksCount> 2 </BlocksCount>\n \
             <MappedBlocksCount> 1 </MappedBlocksCount>\n</bmap>\n",
        )
        .unwrap();
        assert_eq!(mapped_bytes(&p).unwrap(), 4096);
        std::fs::write(
            &p,
            "<!-- copies <MappedBlocksCount> blocks -->\n<BlockSize> 4096 </BlockSize>\n<MappedBlocksCount> 3  </MappedBlocksCount>",
        )
        .unwrap();
        assert_eq!(mapped_bytes(&p).unwrap(), 3 * 4096);
        std::fs::write(&p, "<bmap><BlockSize> x </BlockSize></bmap>").unwrap();
        assert!(mapped_bytes(&p).is_err());
        assert_eq!(rfc3339(1764547200), "2025-12-01T00:00:00Z");
    }
}
