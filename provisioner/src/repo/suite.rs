//! Suites: publishing one (indexes written, signed, moved into place last), listing,
//! showing and removing them, and the pool they share.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::import::ImportError;
use super::openpgp::ArchiveKey;
use super::release;

/// The component every suite has.
pub const COMPONENT: &str = "main";

/// One package of a suite, and where it came from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PackageMeta {
    pub package: String,
    pub version: String,
    pub architecture: String,
    pub sha256: String,
    pub size: u64,
    /// Its file name in `pool/SHA256/`.
    pub file: String,
    /// Where it was in the bundle.
    pub from: String,
    /// The signed Release that vouched for it (in the bundle), its Origin and Label.
    pub release: String,
    pub origin: String,
    pub label: String,
    /// The fingerprint of the trusted key that signed that Release.
    pub signer: String,
    /// The vendor's paragraph from its Packages index (dependencies and all).
    pub paragraph: String,
}

/// A published suite: `DATA_DIR/repo/meta/SUITE.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SuiteMeta {
    pub suite: String,
    /// Seconds since the epoch.
    pub created: u64,
    /// The bundle it was imported from.
    pub bundle: String,
    /// Who signed the vendor Releases (fingerprint and user id).
    pub signers: Vec<String>,
    pub packages: Vec<PackageMeta>,
}

impl SuiteMeta {
    pub fn bytes(&self) -> u64 {
        self.packages.iter().map(|p| p.size).sum()
    }

    /// The architectures the suite publishes indexes for (`all` packages go into each).
    pub fn architectures(&self) -> Vec<String> {
        let set: BTreeSet<String> = self
            .packages
            .iter()
            .map(|p| p.architecture.clone())
            .filter(|a| a != "all")
            .collect();
        if set.is_empty() {
            vec!["amd64".into(), "arm64".into()]
        } else {
            set.into_iter().collect()
        }
    }

    /// The version of `package` in the suite for `arch` (or `all`), if it has one.
    pub fn version_of(&self, package: &str, arch: &str) -> Vec<&PackageMeta> {
        self.packages
            .iter()
            .filter(|p| p.package == package && (p.architecture == arch || p.architecture == "all"))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("no suite {0} in the repository (see `provisioner repo list`)")]
    NotFound(String),
    #[error("suite {suite} is named by {users}; change those first")]
    InUse { suite: String, users: String },
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Damaged { path: PathBuf, why: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SuiteError + '_ {
    move |source| SuiteError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl From<SuiteError> for ImportError {
    fn from(e: SuiteError) -> Self {
        match e {
            SuiteError::Io { path, source } => ImportError::Io { path, source },
            other => ImportError::Other(other.to_string()),
        }
    }
}

/// The repository's lock, held for the life of the value.
pub struct Lock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

pub fn lock(repo: &Path) -> Result<Lock, SuiteError> {
    let path = repo.join(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map(Lock)
        .map_err(|(_, e)| SuiteError::Io {
            path,
            source: e.into(),
        })
}

/// Removes what an import that died left (its staging folder); call with the lock held.
pub fn clean_staging(repo: &Path) {
    if let Ok(entries) = std::fs::read_dir(repo) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(".staging-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

fn meta_dir(repo: &Path) -> PathBuf {
    repo.join("meta")
}

/// `NAME-N`: one more than the highest N any suite called `NAME-…` has had, removed ones
/// included.
pub fn next_name(repo: &Path, name: &str) -> Result<String, SuiteError> {
    let mut highest = 0u64;
    for dir in [repo.join("dists"), meta_dir(repo)] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            // Removed suites leave `SUITE.json.removed`: their names are not given again.
            let n = n.strip_suffix(".removed").unwrap_or(&n);
            let n = n.strip_suffix(".json").unwrap_or(n);
            if let Some(rest) = n.strip_prefix(name).and_then(|r| r.strip_prefix('-'))
                && let Ok(k) = rest.parse::<u64>()
            {
                highest = highest.max(k);
            }
        }
    }
    Ok(format!("{name}-{}", highest + 1))
}

/// The `Packages` index of `arch`: each vendor paragraph with the file where this repository
/// has it and only the hash that was checked.
fn packages_index(meta: &SuiteMeta, arch: &str) -> Result<String, SuiteError> {
    let mut out = String::new();
    for p in &meta.packages {
        if p.architecture != arch && p.architecture != "all" {
            continue;
        }
        let mut para: deb822_fast::Paragraph =
            p.paragraph.parse().map_err(|e| SuiteError::Damaged {
                path: PathBuf::from(&meta.suite),
                why: format!("the paragraph of {} {}: {e}", p.package, p.version),
            })?;
        for f in [
            "MD5sum", "MD5Sum", "SHA1", "SHA512", "Filename", "Size", "SHA256",
        ] {
            para.remove(f);
        }
        para.insert("Filename", &format!("pool/{}/{}", p.sha256, p.file));
        para.insert("Size", &p.size.to_string());
        para.insert("SHA256", &p.sha256);
        out.push_str(&para.to_string());
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.push('\n');
    }
    Ok(out)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), SuiteError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    std::fs::write(path, bytes).map_err(io(path))?;
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}

/// Publishes `meta` from `staging` (which holds `pool/SHA256/FILE` for each package): the
/// pool first, then the suite's metadata, then its `dists/` folder, renamed into place.
pub fn publish(
    repo: &Path,
    staging: &Path,
    meta: &SuiteMeta,
    key: &ArchiveKey,
) -> Result<(), SuiteError> {
    let dists = staging.join("dists").join(&meta.suite);
    let archs = meta.architectures();
    let mut listed = Vec::new();
    for arch in &archs {
        let rel = format!("{COMPONENT}/binary-{arch}/Packages");
        let body = packages_index(meta, arch)?;
        write(&dists.join(&rel), body.as_bytes())?;
        listed.push((
            rel,
            hex::encode(sha2::Sha256::digest(body.as_bytes())),
            body.len(),
        ));
    }
    let mut rel_text = format!(
        "Origin: Provisioner\nLabel: Provisioner\nSuite: {s}\nCodename: {s}\nDate: {date}\nArchitectures: {archs}\nComponents: {COMPONENT}\nDescription: {bundle}, imported {date}\nSHA256:\n",
        s = meta.suite,
        date = release::format_date(meta.created),
        archs = archs.join(" "),
        bundle = meta.bundle.replace('\n', " "),
    );
    for (rel, sha, size) in &listed {
        rel_text.push_str(&format!(" {sha} {size:>16} {rel}\n"));
    }
    let sign_err = |e: super::PgpError| SuiteError::Damaged {
        path: PathBuf::from("archive key"),
        why: e.to_string(),
    };
    write(&dists.join("Release"), rel_text.as_bytes())?;
    write(
        &dists.join("InRelease"),
        key.clearsign(&rel_text).map_err(sign_err)?.as_bytes(),
    )?;
    write(
        &dists.join("Release.gpg"),
        key.detach_sign(rel_text.as_bytes())
            .map_err(sign_err)?
            .as_bytes(),
    )?;

    // The pool: each package moved in unless the pool has it already.
    let pool = repo.join("pool");
    for p in &meta.packages {
        let to = pool.join(&p.sha256).join(&p.file);
        if to.is_file() {
            continue;
        }
        let from = staging.join("pool").join(&p.sha256).join(&p.file);
        std::fs::create_dir_all(to.parent().unwrap_or(&pool)).map_err(io(&pool))?;
        std::fs::rename(&from, &to).map_err(io(&to))?;
    }
    let mdir = meta_dir(repo);
    let json = serde_json::to_vec_pretty(meta).map_err(|e| SuiteError::Damaged {
        path: mdir.clone(),
        why: e.to_string(),
    })?;
    let mpath = mdir.join(format!("{}.json", meta.suite));
    let tmp = mdir.join(format!(".{}.json.tmp", meta.suite));
    write(&tmp, &json)?;
    std::fs::rename(&tmp, &mpath).map_err(io(&mpath))?;
    let final_dir = repo.join("dists").join(&meta.suite);
    std::fs::create_dir_all(repo.join("dists")).map_err(io(repo))?;
    std::fs::rename(&dists, &final_dir).map_err(io(&final_dir))?;
    if let Ok(d) = std::fs::File::open(repo.join("dists")) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn read_meta(repo: &Path, suite: &str) -> Result<SuiteMeta, SuiteError> {
    let path = meta_dir(repo).join(format!("{suite}.json"));
    let bytes = std::fs::read(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            SuiteError::NotFound(suite.to_string())
        } else {
            SuiteError::Io {
                path: path.clone(),
                source: e,
            }
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| SuiteError::Damaged {
        path,
        why: e.to_string(),
    })
}

/// Every published suite (a suite is published when its `dists/` folder is in place).
pub fn list(data_dir: &Path) -> Result<Vec<SuiteMeta>, SuiteError> {
    let repo = super::repo_dir(data_dir);
    let dists = repo.join("dists");
    let entries = match std::fs::read_dir(&dists) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(&dists)(e)),
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !super::valid_name(&name) {
            continue;
        }
        out.push(read_meta(&repo, &name)?);
    }
    out.sort_by(|a, b| a.suite.cmp(&b.suite));
    Ok(out)
}

pub fn show(data_dir: &Path, suite: &str) -> Result<SuiteMeta, SuiteError> {
    if !super::valid_name(suite) {
        return Err(SuiteError::NotFound(suite.to_string()));
    }
    let repo = super::repo_dir(data_dir);
    if !repo.join("dists").join(suite).is_dir() {
        return Err(SuiteError::NotFound(suite.to_string()));
    }
    read_meta(&repo, suite)
}

/// Removes `suite` unless `users` name it, then the pool's packages no suite holds any more.
/// Returns the bytes freed.
pub fn remove(data_dir: &Path, suite: &str, users: &[String]) -> Result<u64, SuiteError> {
    let meta = show(data_dir, suite)?;
    if !users.is_empty() {
        return Err(SuiteError::InUse {
            suite: suite.to_string(),
            users: users.join(", "),
        });
    }
    let repo = super::repo_dir(data_dir);
    let _lock = lock(&repo)?;
    // Unpublished first (one rename), then deleted.
    let gone = repo.join(format!(".staging-removed-{suite}"));
    let _ = std::fs::remove_dir_all(&gone);
    let dir = repo.join("dists").join(suite);
    std::fs::rename(&dir, &gone).map_err(io(&dir))?;
    let _ = std::fs::remove_dir_all(&gone);
    // Its record stays, as `SUITE.json.removed`: what it held can still be looked up, and
    // its name is never given to another suite (nodes and caches may still name it).
    let mpath = meta_dir(&repo).join(format!("{suite}.json"));
    let tomb = meta_dir(&repo).join(format!("{suite}.json.removed"));
    std::fs::rename(&mpath, &tomb).map_err(io(&mpath))?;

    let mut kept = BTreeSet::new();
    for m in list(data_dir)? {
        kept.extend(m.packages.into_iter().map(|p| p.sha256));
    }
    let mut freed = 0u64;
    let mut sizes: BTreeMap<&str, u64> = BTreeMap::new();
    for p in &meta.packages {
        sizes.insert(&p.sha256, p.size);
    }
    let pool = repo.join("pool");
    if let Ok(entries) = std::fs::read_dir(&pool) {
        for e in entries.flatten() {
            let sha = e.file_name().to_string_lossy().to_string();
            if kept.contains(&sha) {
                continue;
            }
            if std::fs::remove_dir_all(e.path()).is_ok() {
                freed += sizes.get(sha.as_str()).copied().unwrap_or(0);
            }
        }
    }
    Ok(freed)
}
