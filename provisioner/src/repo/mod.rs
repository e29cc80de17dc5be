//! The appliance's own package repository: vendor bundles carried in offline, checked against
//! the vendor keys the operator trusts, and published as immutable apt suites signed with the
//! appliance's archive key, served at `/repo/`.
//!
//! `DATA_DIR/repo/` is a plain apt archive (any web server could serve it):
//!
//! - `dists/SUITE/{InRelease,Release,Release.gpg}` and `dists/SUITE/main/binary-ARCH/Packages`;
//! - `pool/SHA256/NAME.deb`: every package once, by content, whichever suites hold it;
//! - `meta/SUITE.json`: where each package came from (bundle, vendor Release, signer);
//! - `trusted/FINGERPRINT.pgp`: the vendor keys (`provisioner repo trust KEYFILE`).
//!
//! A suite is a snapshot: an import makes `NAME-N`, one more than the last, and never writes
//! into a suite that exists; a suite appears only when its `dists/SUITE` folder is renamed into
//! place, after every package it names is in the pool. Imports and removals take
//! `repo/.lock`, so two at once wait for each other.

pub mod import;
pub mod openpgp;
pub mod release;
pub mod suite;

use std::path::{Path, PathBuf};

pub use import::{ImportError, Imported, import};
pub use openpgp::{ArchiveKey, PgpError, TrustedKey};
pub use suite::{SuiteMeta, list, remove, show};

pub fn repo_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("repo")
}

fn trusted_dir(data_dir: &Path) -> PathBuf {
    repo_dir(data_dir).join("trusted")
}

/// Trusts the vendor key(s) in `file` (armored or binary; a keyring adds each key): suites
/// signed by them can be imported. Returns the keys added.
pub fn trust(data_dir: &Path, file: &Path) -> Result<Vec<TrustedKey>, PgpError> {
    let bytes = std::fs::read(file).map_err(|source| PgpError::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let keys = openpgp::read_keys(file, &bytes)?;
    let dir = trusted_dir(data_dir);
    std::fs::create_dir_all(&dir).map_err(|source| PgpError::Io {
        path: dir.clone(),
        source,
    })?;
    let mut out = Vec::new();
    for cert in keys {
        let fpr = hex::encode_upper(cert.fingerprint_bytes());
        let path = dir.join(format!("{fpr}.pgp"));
        let mut bytes = Vec::new();
        pgp::ser::Serialize::to_writer(&cert, &mut bytes).map_err(|e| PgpError::BadKey {
            path: file.to_path_buf(),
            why: e.to_string(),
        })?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &bytes)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| PgpError::Io {
                path: path.clone(),
                source,
            })?;
        out.push(TrustedKey { cert, file: path });
    }
    Ok(out)
}

/// The vendor keys this appliance trusts.
pub fn trusted(data_dir: &Path) -> Result<Vec<TrustedKey>, PgpError> {
    let dir = trusted_dir(data_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(PgpError::Io { path: dir, source }),
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("pgp") {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|source| PgpError::Io {
            path: path.clone(),
            source,
        })?;
        for cert in openpgp::read_keys(&path, &bytes)? {
            out.push(TrustedKey {
                cert,
                file: path.clone(),
            });
        }
    }
    out.sort_by_key(|k| k.fingerprint());
    Ok(out)
}

trait FingerprintBytes {
    fn fingerprint_bytes(&self) -> Vec<u8>;
}

impl FingerprintBytes for pgp::composed::SignedPublicKey {
    fn fingerprint_bytes(&self) -> Vec<u8> {
        use pgp::types::KeyDetails;
        self.fingerprint().as_bytes().to_vec()
    }
}

/// A suite name: what apt puts in a URL path and a file name, so a narrow set.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.+_".contains(&b))
}

/// A file name the repository serves (and apt asks for as it is).
pub fn served_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._+~".contains(&b))
}

/// Where `/repo/REL` is on disk, if REL names something the repository serves: the archive
/// key, a file under `dists/` or a package under `pool/`. Every component is checked: no
/// empty, `.` or `..` component and nothing outside a narrow character set, so no request
/// reaches outside `DATA_DIR/repo/` or into `meta/` and `trusted/`.
pub fn served_path(repo: &Path, rel: &str) -> Option<PathBuf> {
    let parts: Vec<&str> = rel.split('/').collect();
    if !parts.iter().all(|p| served_name(p)) {
        return None;
    }
    match parts.as_slice() {
        [openpgp::PUBLIC_FILE] => None, // served from the key store by the handler
        ["dists", suite, rest @ ..] if !rest.is_empty() && valid_name(suite) => {
            Some(rel_join(repo, &parts))
        }
        ["pool", sha, name] if sha.len() == 64 && name.ends_with(".deb") => {
            sha.parse::<crate::types::Sha256>().ok()?;
            Some(rel_join(repo, &parts))
        }
        _ => None,
    }
}

fn rel_join(repo: &Path, parts: &[&str]) -> PathBuf {
    let mut p = repo.to_path_buf();
    for part in parts {
        p.push(part);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dists_and_pool_are_served_and_nothing_escapes() {
        let repo = Path::new("/data/repo");
        let sha = "a".repeat(64);
        assert_eq!(
            served_path(repo, "dists/cuda-1/InRelease"),
            Some(PathBuf::from("/data/repo/dists/cuda-1/InRelease"))
        );
        assert_eq!(
            served_path(repo, &format!("pool/{sha}/x_1_amd64.deb")),
            Some(PathBuf::from(format!(
                "/data/repo/pool/{sha}/x_1_amd64.deb"
            )))
        );
        for bad in [
            "",
            "dists",
            "dists/cuda-1",
            "dists/../meta/cuda-1.json",
            "dists/cuda-1/../../trusted/x.pgp",
            "meta/cuda-1.json",
            "trusted/ABC.pgp",
            "pool/abc/x.deb",
            "pool/../../etc/passwd",
            "dists//x",
            "dists/Cuda-1/InRelease",
            "dists/cuda-1/%2e%2e/x",
            "/etc/passwd",
            "dists/cuda-1/In Release",
        ] {
            assert_eq!(served_path(repo, bad), None, "{bad}");
        }
    }

    #[test]
    fn suite_names_are_narrow() {
        assert!(valid_name("cuda-580-1"));
        assert!(valid_name("neuron-2.33.0-2"));
        for bad in ["", "-x", "A", "a/b", "a b", "..", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
