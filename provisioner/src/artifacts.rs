//! Content-addressed artifacts (kernels, initramfs, later OS images): hashed with sha256 on
//! import, stored under their digest in `DATA_DIR/artifacts/`, served at
//! `/artifacts/SHA256/NAME` with the digest as ETag.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::Digest;

use crate::boot::BootServer;
use crate::types::Sha256;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    pub sha256: Sha256,
    pub size: u64,
    /// The file name it was imported from, for URLs and people; never used to find it.
    pub name: String,
}

impl Artifact {
    pub fn url(&self, server: &BootServer) -> String {
        format!(
            "{}/artifacts/{}/{}",
            server.base_url(),
            self.sha256,
            self.name
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("cannot read {path}: {source}")]
    Source {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write to the artifact store {path}: {source}")]
    Store {
        path: String,
        source: std::io::Error,
    },
}

/// The artifact store: one file per digest.
#[derive(Clone, Debug)]
pub struct ArtifactStore {
    dir: PathBuf,
}

static IMPORTS: AtomicU64 = AtomicU64::new(0);

impl ArtifactStore {
    pub fn open(data_dir: &Path) -> Result<Self, ArtifactError> {
        let dir = data_dir.join("artifacts");
        std::fs::create_dir_all(&dir).map_err(|source| ArtifactError::Store {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(ArtifactStore { dir })
    }

    /// Copies `src` into the store while hashing it (blocking: call from a blocking task).
    /// Importing the same content twice stores it once.
    pub fn import(&self, src: &Path) -> Result<Artifact, ArtifactError> {
        let src_err = |source| ArtifactError::Source {
            path: src.display().to_string(),
            source,
        };
        let store_err = |path: &Path, source| ArtifactError::Store {
            path: path.display().to_string(),
            source,
        };
        let mut input = std::fs::File::open(src).map_err(src_err)?;
        let tmp = self.dir.join(format!(
            ".import-{}-{}",
            std::process::id(),
            IMPORTS.fetch_add(1, Ordering::SeqCst)
        ));
        let result = (|| {
            let mut out = std::fs::File::create(&tmp).map_err(|e| store_err(&tmp, e))?;
            let mut hasher = sha2::Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut size = 0u64;
            loop {
                let n = input.read(&mut buf).map_err(src_err)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n]).map_err(|e| store_err(&tmp, e))?;
                size += n as u64;
            }
            out.sync_all().map_err(|e| store_err(&tmp, e))?;
            let sha = Sha256(hasher.finalize().into());
            let dest = self.dir.join(sha.to_string());
            std::fs::rename(&tmp, &dest).map_err(|e| store_err(&dest, e))?;
            Ok((sha, size))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        let (sha256, size) = result?;
        let name = src
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| crate::firmware::is_plain_name(n))
            .unwrap_or("artifact")
            .to_string();
        Ok(Artifact { sha256, size, name })
    }

    /// The stored file of `sha`, if present.
    pub fn path(&self, sha: Sha256) -> Option<PathBuf> {
        let p = self.dir.join(sha.to_string());
        p.is_file().then_some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_names_content_by_its_digest() {
        let data = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(data.path()).unwrap();
        let src = data.path().join("vmlinuz");
        std::fs::write(&src, b"hello").unwrap();
        let a = store.import(&src).unwrap();
        // sha256("hello")
        assert_eq!(
            a.sha256.to_string(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!((a.size, a.name.as_str()), (5, "vmlinuz"));
        assert_eq!(
            std::fs::read(store.path(a.sha256).unwrap()).unwrap(),
            b"hello"
        );
        assert_eq!(
            store.import(&src).unwrap(),
            a,
            "importing again is idempotent"
        );
        assert!(store.path(Sha256([0; 32])).is_none());
        assert!(store.import(&data.path().join("nope")).is_err());
    }
}
