//! `provisioner repo import BUNDLE`: a vendor's packages carried in offline, checked link by
//! link against the vendor keys the operator trusts, then published as a new suite.
//!
//! A bundle is a folder or a tarball (`.tar`, `.tar.gz`/`.tgz`, `.tar.zst`) holding a vendor
//! repository as it is published, whole or in part:
//!
//! - flat, as NVIDIA's CUDA repository is (`InRelease`, `Release`, `Release.gpg`, `Packages`
//!   and the `.deb` files side by side; `Filename` relative to that folder);
//! - or with `dists/SUITE/` and `pool/`, as AWS's Neuron repository and Debian are
//!   (`Filename` relative to the folder above `dists/`).
//!
//! The chain: each Release's signature by a trusted key (an `InRelease`, else `Release` with
//! `Release.gpg`; an unsigned Release is refused), its `Valid-Until`, each `Packages` index's
//! SHA256 and size as the Release lists them, and each `.deb`'s SHA256 and size as an index
//! lists it. Every `.deb` in the bundle must be vouched for so; indexes may list packages the
//! bundle does not carry (a bundle is usually the part of a vendor repository a site needs).
//! Packages are hashed while they are copied into a staging folder, so each is read once, and
//! nothing reaches the repository until all of it checked out: a refused import leaves the
//! repository as it was.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::Digest;

use super::openpgp::{self, GoodSignature, PgpError, TrustedKey};
use super::release::{self, PackageEntry, Release};
use super::suite::{self, PackageMeta, SuiteMeta};

/// The deepest a Release or package may sit in a bundle, in folders.
const MAX_DEPTH: usize = 12;
/// Progress is said after each this many bytes of one file.
const PROGRESS_EVERY: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{file}: {why}")]
    Refused { file: PathBuf, why: String },
    #[error(transparent)]
    Pgp(#[from] PgpError),
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ImportError + '_ {
    move |source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn refused(file: &Path, why: impl Into<String>) -> ImportError {
    ImportError::Refused {
        file: file.to_path_buf(),
        why: why.into(),
    }
}

/// What an import published.
#[derive(Debug)]
pub struct Imported {
    pub suite: String,
    pub packages: usize,
    pub bytes: u64,
    /// Packages the vendor's indexes list that the bundle did not carry.
    pub not_carried: usize,
    pub signers: Vec<GoodSignature>,
    /// Seconds spent writing the suite's indexes and signing its Release.
    pub index_seconds: f64,
}

/// A Release in the bundle that checked out, with the indexes it vouches for.
struct CheckedRelease {
    /// The file that carried the signature, relative to the bundle (for people).
    file: String,
    release: Release,
    signer: GoodSignature,
    /// The folder `Filename`s are relative to.
    base: PathBuf,
}

/// Imports `bundle` as suite `NAME-N` (`name`, or the bundle's file name); `say` gets
/// progress lines.
pub fn import(
    data_dir: &Path,
    bundle: &Path,
    name: Option<&str>,
    say: &mut dyn FnMut(&str),
) -> Result<Imported, ImportError> {
    let trusted = super::trusted(data_dir)?;
    if trusted.is_empty() {
        return Err(ImportError::Other(
            "no vendor key is trusted yet: `provisioner repo trust KEYFILE` first".into(),
        ));
    }
    let name = match name {
        Some(n) => n.to_string(),
        None => default_name(bundle),
    };
    if !super::valid_name(&name) || name.len() > 56 {
        return Err(ImportError::Other(format!(
            "{name:?} cannot name a suite: lower-case letters, digits, `-`, `.`, `+`, `_`, at most 56, starting with a letter or digit (--name)"
        )));
    }
    let repo = super::repo_dir(data_dir);
    std::fs::create_dir_all(&repo).map_err(io(&repo))?;
    let _lock = suite::lock(&repo)?;
    suite::clean_staging(&repo);
    let staging = tempfile::Builder::new()
        .prefix(".staging-")
        .tempdir_in(&repo)
        .map_err(io(&repo))?;

    let meta = std::fs::metadata(bundle).map_err(io(bundle))?;
    let root = if meta.is_dir() {
        bundle.to_path_buf()
    } else {
        say(&format!("unpacking {}", bundle.display()));
        let into = staging.path().join("bundle");
        unpack(bundle, &into)?;
        into
    };

    let (releases, debs) = walk(&root)?;
    if releases.is_empty() {
        return Err(refused(
            bundle,
            "no Release or InRelease in the bundle: carry in the vendor's repository with its signed Release",
        ));
    }
    let mut checked = Vec::new();
    for dir in &releases {
        checked.push(check_release(&root, dir, &trusted)?);
    }
    // Every index any Release vouches for, then every package in those indexes, by path.
    let mut wanted: BTreeMap<PathBuf, (PackageEntry, usize)> = BTreeMap::new();
    for (i, c) in checked.iter().enumerate() {
        for entry in indexes(&root, c)? {
            let path = c.base.join(&entry.filename);
            if let Some((other, _)) = wanted.get(&path)
                && other.sha256 != entry.sha256
            {
                return Err(refused(
                    &path,
                    "two signed indexes give this file different SHA256s",
                ));
            }
            wanted.insert(path, (entry, i));
        }
    }
    let listed = wanted.len();

    // Each .deb of the bundle, vouched for, hashed while it is copied into staging.
    let pool = staging.path().join("pool");
    let mut packages = Vec::new();
    let mut bytes = 0u64;
    let total: u64 = debs
        .iter()
        .filter_map(|d| std::fs::metadata(d).ok())
        .map(|m| m.len())
        .sum();
    for deb in &debs {
        let Some((entry, from)) = wanted.get(deb) else {
            return Err(refused(
                deb,
                "this package is not listed in any signed index of the bundle, so nothing vouches for it",
            ));
        };
        // The pool keeps the vendor's file name, with what a URL path would have to escape
        // (`%3a` of an epoch, say) turned into `_`.
        let mut file_name: String = deb
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-._+~".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        file_name.truncate(120);
        if !file_name.ends_with(".deb") || !super::served_name(&file_name) {
            file_name = format!("{}.deb", entry.sha256);
        }
        let to = pool.join(&entry.sha256).join(&file_name);
        let got = copy_hashed(deb, &to, entry.size, say, (bytes, total))?;
        if got.1 != entry.size {
            return Err(refused(
                deb,
                format!(
                    "{} bytes, but the signed index lists {} (truncated or changed)",
                    got.1, entry.size
                ),
            ));
        }
        if got.0 != entry.sha256 {
            return Err(refused(
                deb,
                format!(
                    "sha256 {} but the signed index lists {} (changed after signing)",
                    got.0, entry.sha256
                ),
            ));
        }
        bytes += got.1;
        let c = &checked[*from];
        packages.push(PackageMeta {
            package: entry.package.clone(),
            version: entry.version.clone(),
            architecture: entry.architecture.clone(),
            sha256: entry.sha256.clone(),
            size: entry.size,
            file: file_name,
            from: rel(&root, deb),
            release: c.file.clone(),
            origin: c.release.get("Origin").unwrap_or("").to_string(),
            label: c.release.get("Label").unwrap_or("").to_string(),
            signer: c.signer.key.clone(),
            paragraph: entry.paragraph.to_string(),
        });
    }
    if packages.is_empty() {
        return Err(refused(
            bundle,
            format!("the bundle carries no .deb (its indexes list {listed}): nothing to publish"),
        ));
    }
    let mut seen: BTreeMap<(String, String, String), String> = BTreeMap::new();
    for p in &packages {
        let key = (p.package.clone(), p.version.clone(), p.architecture.clone());
        if let Some(other) = seen.insert(key, p.sha256.clone())
            && other != p.sha256
        {
            return Err(refused(
                Path::new(&p.from),
                format!(
                    "{} {} ({}) is in the bundle twice with different contents",
                    p.package, p.version, p.architecture
                ),
            ));
        }
    }
    packages.sort_by(|a, b| {
        (&a.package, &a.version, &a.architecture).cmp(&(&b.package, &b.version, &b.architecture))
    });
    packages.dedup_by(|a, b| {
        a.package == b.package && a.version == b.version && a.architecture == b.architecture
    });

    let key = openpgp::ArchiveKey::load_or_create(data_dir)?;
    let suite_name = suite::next_name(&repo, &name)?;
    let mut signers: Vec<GoodSignature> = checked.iter().map(|c| c.signer.clone()).collect();
    signers.dedup();
    let meta = SuiteMeta {
        suite: suite_name.clone(),
        created: now(),
        bundle: bundle.display().to_string(),
        signers: signers
            .iter()
            .map(|s| format!("{} {}", s.key, s.user))
            .collect(),
        packages,
    };
    say(&format!(
        "indexing and signing suite {suite_name} ({} packages)",
        meta.packages.len()
    ));
    let indexing = std::time::Instant::now();
    suite::publish(&repo, staging.path(), &meta, &key)?;
    let index_seconds = indexing.elapsed().as_secs_f64();
    Ok(Imported {
        index_seconds,
        suite: suite_name,
        packages: meta.packages.len(),
        bytes,
        not_carried: listed.saturating_sub(meta.packages.len()),
        signers,
    })
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

/// The suite name a bundle gets by default: its file name without extensions, lower-cased,
/// with what a suite name cannot hold turned into `-`.
fn default_name(bundle: &Path) -> String {
    let base = bundle
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("bundle");
    let base = [".tar.gz", ".tar.zst", ".tgz", ".tar"]
        .iter()
        .find_map(|ext| base.strip_suffix(ext))
        .unwrap_or(base);
    let mut name: String = base
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || "-.+_".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    name = name
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string();
    name.truncate(48);
    if name.is_empty() {
        "bundle".into()
    } else {
        name
    }
}

/// Unpacks a tarball into `into`: only plain files and folders, each inside `into` (the
/// `tar` crate refuses `..` and absolute paths); links and devices are refused.
fn unpack(tarball: &Path, into: &Path) -> Result<(), ImportError> {
    let file = std::fs::File::open(tarball).map_err(io(tarball))?;
    let name = tarball.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let reader: Box<dyn Read> = if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else if name.ends_with(".tar.zst") {
        Box::new(zstd::stream::read::Decoder::new(file).map_err(io(tarball))?)
    } else if name.ends_with(".tar") {
        Box::new(file)
    } else {
        return Err(refused(
            tarball,
            "a bundle is a folder, .tar, .tar.gz or .tar.zst",
        ));
    };
    std::fs::create_dir_all(into).map_err(io(into))?;
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| refused(tarball, format!("not a tarball: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| refused(tarball, format!("damaged tarball: {e}")))?;
        let kind = entry.header().entry_type();
        let path = entry
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if !(kind.is_file() || kind.is_dir()) {
            if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
                continue;
            }
            return Err(refused(
                tarball,
                format!("{path}: only files and folders may be in a bundle ({kind:?})"),
            ));
        }
        let ok = entry
            .unpack_in(into)
            .map_err(|e| refused(tarball, format!("{path}: cannot unpack: {e}")))?;
        if !ok {
            return Err(refused(
                tarball,
                format!("{path}: a path outside the bundle"),
            ));
        }
    }
    Ok(())
}

/// The folders holding a signed Release (`InRelease`, or `Release` with `Release.gpg`), and
/// every `.deb`, under `root` (symbolic links are not followed; a link to a package is
/// refused, as nothing vouches for where it points). An unsigned `Release` outside every
/// signed repository is refused.
fn walk(root: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>), ImportError> {
    let mut releases = Vec::new();
    let mut unsigned: Vec<PathBuf> = Vec::new();
    let mut debs = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(io(&dir))?
            .collect::<Result<_, _>>()
            .map_err(io(&dir))?;
        entries.sort_by_key(|e| e.file_name());
        let mut signed = false;
        let mut bare = false;
        for e in entries {
            let path = e.path();
            let ft = e.file_type().map_err(io(&path))?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if ft.is_dir() {
                if depth + 1 > MAX_DEPTH {
                    return Err(refused(&path, "folders nested too deep for a repository"));
                }
                stack.push((path, depth + 1));
            } else if name.ends_with(".deb") {
                if !ft.is_file() {
                    return Err(refused(&path, "a package that is not a plain file"));
                }
                debs.push(path);
            } else if (name == "InRelease" || name == "Release.gpg") && ft.is_file() {
                signed = true;
            } else if name == "Release" && ft.is_file() {
                bare = true;
            }
        }
        if signed {
            releases.push(dir);
        } else if bare {
            unsigned.push(dir);
        }
    }
    releases.sort();
    debs.sort();
    // A Release with no signature beside it is one of a signed repository's own files
    // (Debian's mirrors keep one per `dists/S/C/binary-A/`, listed in the signed Release), or
    // an unsigned repository, which nothing vouches for.
    if let Some(dir) = unsigned
        .iter()
        .find(|d| !releases.iter().any(|r| d.starts_with(r)))
    {
        return Err(refused(
            &dir.join("Release"),
            "unsigned: neither InRelease nor Release.gpg beside it",
        ));
    }
    Ok((releases, debs))
}

/// Reads at most `limit` bytes of a small file (an index, a Release).
fn read_small(path: &Path, limit: u64) -> Result<Vec<u8>, ImportError> {
    let f = std::fs::File::open(path).map_err(io(path))?;
    let mut out = Vec::new();
    f.take(limit + 1).read_to_end(&mut out).map_err(io(path))?;
    if out.len() as u64 > limit {
        return Err(refused(path, format!("larger than {} MiB", limit >> 20)));
    }
    Ok(out)
}

const INDEX_LIMIT: u64 = 512 << 20;

fn check_release(
    root: &Path,
    dir: &Path,
    trusted: &[TrustedKey],
) -> Result<CheckedRelease, ImportError> {
    let inrelease = dir.join("InRelease");
    let plain = dir.join("Release");
    let (text, signer, file) = if inrelease.is_file() {
        let bytes = read_small(&inrelease, INDEX_LIMIT)?;
        let text = String::from_utf8(bytes).map_err(|_| refused(&inrelease, "not text"))?;
        let (signed, signer) = openpgp::verify_inrelease(&inrelease, &text, trusted)?;
        (signed, signer, inrelease)
    } else {
        let sig_path = dir.join("Release.gpg");
        if !sig_path.is_file() {
            return Err(refused(
                &plain,
                "unsigned: neither InRelease nor Release.gpg beside it",
            ));
        }
        let bytes = read_small(&plain, INDEX_LIMIT)?;
        let sig = read_small(&sig_path, 1 << 20)?;
        let signer = openpgp::verify_detached(&sig_path, &sig, &bytes, trusted)?;
        let text = String::from_utf8(bytes).map_err(|_| refused(&plain, "not text"))?;
        (text, signer, sig_path)
    };
    let release = Release::parse(&text).map_err(|why| refused(&file, why))?;
    if let Some(until) = release.valid_until().map_err(|why| refused(&file, why))?
        && until <= now()
    {
        return Err(refused(
            &file,
            format!(
                "expired: Valid-Until {} has passed; carry in a fresh copy of the vendor's repository",
                release::format_date(until)
            ),
        ));
    }
    // Flat repositories: Filename is relative to the Release's folder; dists/SUITE/: to the
    // folder above dists.
    let base = match (dir.parent(), dir.parent().and_then(|p| p.file_name())) {
        (Some(p), Some(n)) if n == "dists" => p.parent().unwrap_or(root).to_path_buf(),
        _ => dir.to_path_buf(),
    };
    Ok(CheckedRelease {
        file: rel(root, &file),
        release,
        signer,
        base,
    })
}

/// The packages of every index the Release vouches for that the bundle carries, each index
/// checked against the Release's SHA256 and size first. An index file the Release does not
/// list is refused: nothing vouches for it.
fn indexes(root: &Path, c: &CheckedRelease) -> Result<Vec<PackageEntry>, ImportError> {
    let dir = root.join(Path::new(&c.file).parent().unwrap_or(Path::new("")));
    let mut out = Vec::new();
    let mut unreadable = false;
    let mut stack = vec![(dir.clone(), 0usize)];
    while let Some((d, depth)) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(io(&d))? {
            let e = e.map_err(io(&d))?;
            let path = e.path();
            let ft = e.file_type().map_err(io(&path))?;
            let name = e.file_name().to_string_lossy().to_string();
            if ft.is_dir() {
                // A folder with a signed Release of its own is another repository, checked
                // by itself.
                if depth < MAX_DEPTH
                    && !path.join("InRelease").exists()
                    && !path.join("Release.gpg").exists()
                {
                    stack.push((path, depth + 1));
                }
                continue;
            }
            if !(name == "Packages" || name.starts_with("Packages.")) || !ft.is_file() {
                continue;
            }
            let rel_path = path
                .strip_prefix(&dir)
                .unwrap_or(&path)
                .display()
                .to_string();
            let Some(listed) = c.release.sha256.get(&rel_path) else {
                return Err(refused(
                    &path,
                    format!(
                        "not listed in the signed {}, so nothing vouches for it",
                        c.file
                    ),
                ));
            };
            let bytes = read_small(&path, INDEX_LIMIT)?;
            let sha = hex::encode(sha2::Sha256::digest(&bytes));
            if bytes.len() as u64 != listed.size || sha != listed.sha256 {
                return Err(refused(
                    &path,
                    format!(
                        "{} bytes with sha256 {sha}, but {} lists {} bytes with sha256 {} (changed or truncated)",
                        bytes.len(),
                        c.file,
                        listed.size,
                        listed.sha256
                    ),
                ));
            }
            let text = match name.as_str() {
                "Packages" => bytes,
                "Packages.gz" => {
                    let mut out = Vec::new();
                    flate2::read::GzDecoder::new(bytes.as_slice())
                        .take(INDEX_LIMIT + 1)
                        .read_to_end(&mut out)
                        .map_err(|e| refused(&path, format!("not gzip: {e}")))?;
                    out
                }
                "Packages.zst" => {
                    let mut out = Vec::new();
                    zstd::stream::read::Decoder::new(bytes.as_slice())
                        .map_err(io(&path))?
                        .take(INDEX_LIMIT + 1)
                        .read_to_end(&mut out)
                        .map_err(|e| refused(&path, format!("not zstd: {e}")))?;
                    out
                }
                _ => {
                    // Checked like the others, but in a compression not read here.
                    unreadable = true;
                    continue;
                }
            };
            let text = String::from_utf8(text).map_err(|_| refused(&path, "not text"))?;
            out.extend(release::parse_packages(&text).map_err(|why| refused(&path, why))?);
        }
    }
    if out.is_empty() && unreadable {
        return Err(refused(
            &dir,
            "its Packages indexes are only in a compression not read here (.xz, .bz2, .lz4): add the plain Packages (unxz keeps the hash the Release lists)",
        ));
    }
    Ok(out)
}

/// Copies `from` into `to` (made), hashing on the way; says progress for large files.
/// Returns the sha256 and the bytes copied (at most `expect + 1`: a longer file is not read
/// to its end).
fn copy_hashed(
    from: &Path,
    to: &Path,
    expect: u64,
    say: &mut dyn FnMut(&str),
    (done, total): (u64, u64),
) -> Result<(String, u64), ImportError> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let src = std::fs::File::open(from).map_err(io(from))?;
    let mut src = src.take(expect + 1);
    let mut dst = std::fs::File::create(to).map_err(io(to))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    let mut next_say = PROGRESS_EVERY;
    loop {
        let got = src.read(&mut buf).map_err(io(from))?;
        if got == 0 {
            break;
        }
        hasher.update(&buf[..got]);
        dst.write_all(&buf[..got]).map_err(io(to))?;
        n += got as u64;
        if n >= next_say {
            next_say += PROGRESS_EVERY;
            say(&format!(
                "{}: {} of {} MiB ({} of {} MiB in all)",
                from.file_name().unwrap_or_default().to_string_lossy(),
                n >> 20,
                expect >> 20,
                (done + n) >> 20,
                total >> 20
            ));
        }
    }
    dst.sync_all().map_err(io(to))?;
    Ok((hex::encode(hasher.finalize()), n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_are_suite_names() {
        for (bundle, want) in [
            ("/x/cuda-ubuntu2404-580.tar.gz", "cuda-ubuntu2404-580"),
            ("/x/Neuron 2.33.tar.zst", "neuron-2.33"),
            ("/x/.hidden", "hidden"),
            ("/x/---", "bundle"),
        ] {
            let got = default_name(Path::new(bundle));
            assert_eq!(got, want);
            assert!(super::super::valid_name(&got));
        }
    }
}
