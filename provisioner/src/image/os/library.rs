//! The appliance's OS image library: `DATA_DIR/images/os/NAME/` holds each image's signed
//! manifest, its SBOM and block map; the compressed image, the block map and the SBOM are
//! artifacts (served at `/artifacts/SHA256/NAME` with Range and the digest as ETag). An image
//! enters only through [`import`], which checks the signature against the keys the operator
//! trusts and every sha256 before anything is kept, so nothing is ever half-imported.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::manifest::{self, FileDigest, ImageManifest, MANIFEST, ReadError, SIGNATURE};
use crate::artifacts::{ArtifactError, ArtifactStore};
use crate::keys::KeyError;
use crate::types::sha256_file;

#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error("{source_path}: {why}")]
    Refused { source_path: PathBuf, why: String },
    #[error(transparent)]
    Manifest(#[from] ReadError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("{file}: {why}")]
    File { file: PathBuf, why: String },
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no image {0} in the library (see `provisioner image list`)")]
    NotFound(String),
    #[error("image {name} is already in the library with another digest ({have}); remove it first")]
    Conflict { name: String, have: String },
    #[error("image {name} is named by {users}; change those first")]
    InUse { name: String, users: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LibraryError + '_ {
    move |source| LibraryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub fn library_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("images").join("os")
}

/// An image in the library.
#[derive(Clone, Debug)]
pub struct Entry {
    pub dir: PathBuf,
    pub manifest: ImageManifest,
}

/// Checks `file` against what the manifest says of it: present, of its size, of its sha256.
fn check_file(dir: &Path, d: &FileDigest) -> Result<PathBuf, LibraryError> {
    let path = dir.join(&d.file);
    let meta = std::fs::metadata(&path).map_err(|e| LibraryError::File {
        file: path.clone(),
        why: format!("missing: {e}"),
    })?;
    if meta.len() != d.size {
        return Err(LibraryError::File {
            file: path,
            why: format!(
                "{} bytes where the manifest says {} (truncated or grown)",
                meta.len(),
                d.size
            ),
        });
    }
    let (sha, _) = sha256_file(&path).map_err(io(&path))?;
    if sha != d.sha256 {
        return Err(LibraryError::File {
            file: path,
            why: format!(
                "sha256 {sha} where the manifest says {} (changed after signing)",
                d.sha256
            ),
        });
    }
    Ok(path)
}

/// Unpacks a tarball into `into`, refusing members that are not plain names in at most one
/// folder (no absolute paths, no `..`, no links out).
fn unpack(tarball: &Path, into: &Path) -> Result<PathBuf, LibraryError> {
    let refuse = |why: String| LibraryError::Refused {
        source_path: tarball.to_path_buf(),
        why,
    };
    let list = Command::new("tar")
        .arg("-tvf")
        .arg(tarball)
        .output()
        .map_err(io(tarball))?;
    if !list.status.success() {
        return Err(refuse(format!(
            "not a readable tarball: {}",
            String::from_utf8_lossy(&list.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&list.stdout);
    for line in text.lines() {
        let kind = line.chars().next().unwrap_or('?');
        if kind != '-' && kind != 'd' {
            return Err(refuse(format!(
                "holds something other than files and folders: {line}"
            )));
        }
    }
    let names = Command::new("tar")
        .arg("-tf")
        .arg(tarball)
        .output()
        .map_err(io(tarball))?;
    for name in String::from_utf8_lossy(&names.stdout).lines() {
        let parts: Vec<&str> = name.trim_end_matches('/').split('/').collect();
        let plain = parts.len() <= 2 && parts.iter().all(|p| crate::firmware::is_plain_name(p));
        if !plain {
            return Err(refuse(format!(
                "member {name:?} is not a plain name in at most one folder"
            )));
        }
    }
    std::fs::create_dir_all(into).map_err(io(into))?;
    let out = Command::new("tar")
        .args(["--no-same-owner", "--no-same-permissions", "-xf"])
        .arg(tarball)
        .arg("-C")
        .arg(into)
        .output()
        .map_err(io(tarball))?;
    if !out.status.success() {
        return Err(refuse(format!(
            "cannot unpack: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    if into.join(MANIFEST).is_file() {
        return Ok(into.to_path_buf());
    }
    let mut dirs = std::fs::read_dir(into)
        .map_err(io(into))?
        .flatten()
        .filter(|e| e.path().join(MANIFEST).is_file());
    match (dirs.next(), dirs.next()) {
        (Some(d), None) => Ok(d.path()),
        _ => Err(refuse(format!("holds no single folder with {MANIFEST}"))),
    }
}

/// Imports a built image from a folder or tarball: the manifest's signature against the
/// trusted keys, then every file's size and sha256, then into the artifact store and the
/// library in one rename.
pub fn import(data_dir: &Path, from: &Path) -> Result<Entry, LibraryError> {
    let lib = library_dir(data_dir);
    std::fs::create_dir_all(&lib).map_err(io(&lib))?;
    let staging = lib.join(format!(".import-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let result = import_via(data_dir, from, &lib, &staging);
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn import_via(
    data_dir: &Path,
    from: &Path,
    lib: &Path,
    staging: &Path,
) -> Result<Entry, LibraryError> {
    let src = if from.is_dir() {
        from.to_path_buf()
    } else if from.is_file() {
        unpack(from, &staging.join("unpacked"))?
    } else {
        return Err(LibraryError::Refused {
            source_path: from.to_path_buf(),
            why: "no such folder or tarball".into(),
        });
    };
    let keys = crate::keys::trusted(data_dir)?;
    let (m, bytes) = manifest::read_verified(&src, &keys)?;
    let compressed = check_file(&src, &m.compressed)?;
    let bmap = check_file(&src, &m.bmap)?;
    let sbom = check_file(&src, &m.sbom)?;
    let dest = lib.join(&m.name);
    if let Ok(have) = load(&dest) {
        if have.manifest.compressed.sha256 == m.compressed.sha256 {
            return Ok(have);
        }
        return Err(LibraryError::Conflict {
            name: m.name.clone(),
            have: have.manifest.compressed.sha256.to_string(),
        });
    }
    let store = ArtifactStore::open(data_dir)?;
    for path in [&compressed, &bmap, &sbom] {
        store.import(path)?;
    }
    let entry = staging.join("entry");
    std::fs::create_dir_all(&entry).map_err(io(&entry))?;
    std::fs::write(entry.join(MANIFEST), &bytes).map_err(io(&entry))?;
    std::fs::copy(src.join(SIGNATURE), entry.join(SIGNATURE)).map_err(io(&entry))?;
    for (path, d) in [(&bmap, &m.bmap), (&sbom, &m.sbom)] {
        std::fs::copy(path, entry.join(&d.file)).map_err(io(path))?;
    }
    std::fs::rename(&entry, &dest).map_err(io(&dest))?;
    Ok(Entry {
        dir: dest,
        manifest: m,
    })
}

/// Reads a library entry (trusted: it was verified on import).
pub fn load(dir: &Path) -> Result<Entry, LibraryError> {
    let path = dir.join(MANIFEST);
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    let manifest: ImageManifest =
        serde_json::from_slice(&bytes).map_err(|e| LibraryError::File {
            file: path.clone(),
            why: e.to_string(),
        })?;
    Ok(Entry {
        dir: dir.to_path_buf(),
        manifest,
    })
}

/// Every image in the library, by name.
pub fn list(data_dir: &Path) -> Result<Vec<Entry>, LibraryError> {
    let lib = library_dir(data_dir);
    let Ok(entries) = std::fs::read_dir(&lib) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !e.path().is_dir() {
            continue;
        }
        out.push(load(&e.path())?);
    }
    out.sort_by(|a, b| a.manifest.name.cmp(&b.manifest.name));
    Ok(out)
}

pub fn find(data_dir: &Path, name: &str) -> Result<Entry, LibraryError> {
    if !super::recipe::is_image_name(name) {
        return Err(LibraryError::NotFound(name.chars().take(64).collect()));
    }
    let dir = library_dir(data_dir).join(name);
    if !dir.join(MANIFEST).is_file() {
        return Err(LibraryError::NotFound(name.to_string()));
    }
    load(&dir)
}

/// Removes an image no one names (`users` are the plan rows and SKUs that do). Its artifacts
/// stay in the store while another image shares them.
pub fn remove(data_dir: &Path, name: &str, users: &[String]) -> Result<Entry, LibraryError> {
    let entry = find(data_dir, name)?;
    if !users.is_empty() {
        return Err(LibraryError::InUse {
            name: name.to_string(),
            users: users.join(", "),
        });
    }
    let store = ArtifactStore::open(data_dir)?;
    let others: Vec<Entry> = list(data_dir)?
        .into_iter()
        .filter(|e| e.manifest.name != name)
        .collect();
    // Out of the library first: a crash after this leaves unreferenced artifacts, never an
    // image whose files are gone.
    let trash = library_dir(data_dir).join(format!(".remove-{name}"));
    std::fs::rename(&entry.dir, &trash).map_err(io(&entry.dir))?;
    let m = &entry.manifest;
    for d in [&m.compressed, &m.bmap, &m.sbom] {
        let shared = others.iter().any(|o| {
            [&o.manifest.compressed, &o.manifest.bmap, &o.manifest.sbom]
                .iter()
                .any(|x| x.sha256 == d.sha256)
        });
        if !shared && let Some(p) = store.path(d.sha256) {
            std::fs::remove_file(&p).map_err(io(&p))?;
        }
    }
    std::fs::remove_dir_all(&trash).map_err(io(&trash))?;
    Ok(entry)
}
