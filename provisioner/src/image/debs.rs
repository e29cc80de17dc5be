//! The Debian packages an image is made from: fetched with `apt-get download` into a cache
//! (so a second build downloads nothing) and unpacked with `dpkg-deb -x`. Nothing is installed
//! on the build host.

use std::path::{Path, PathBuf};
use std::process::Command;

use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("cannot run {tool}: {source} (is it installed? this needs a Debian host)")]
    Spawn {
        tool: &'static str,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error(
        "cannot tell which kernel package {meta} stands for, and none is cached in {cache} \
         (run apt-get update, or name one with --kernel-package)"
    )]
    NoKernelPackage { meta: String, cache: PathBuf },
    #[error("apt knows no package {package} and none is cached in {cache} (run apt-get update)")]
    UnknownPackage { package: String, cache: PathBuf },
    #[error("cannot use the package cache {path}: {source}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A fetched package: its name and version as its own control file gives them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deb {
    pub package: String,
    pub version: String,
    pub path: PathBuf,
}

fn run(tool: &'static str, cmd: &mut Command) -> Result<String, DebError> {
    let out = cmd
        .output()
        .map_err(|source| DebError::Spawn { tool, source })?;
    if !out.status.success() {
        return Err(DebError::Failed {
            command: format!("{cmd:?}"),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The kernel image package named by `apt-cache depends META`'s output
/// (`linux-image-amd64` → `linux-image-6.1.0-NN-amd64`).
pub fn kernel_of_depends(output: &str) -> Option<String> {
    output
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && !p.starts_with('<'))
        .map(str::to_string)
}

/// `apt-cache show --no-all-versions` output → (Version, Architecture).
pub fn version_of_show(output: &str) -> Option<(String, String)> {
    let field = |name: &str| {
        output
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    Some((field("Version:")?, field("Architecture:")?))
}

/// The file name `apt-get download` gives PKG at VERSION (`:` written `%3a`).
pub fn deb_file_name(package: &str, version: &str, arch: &str) -> String {
    format!("{package}_{}_{arch}.deb", version.replace(':', "%3a"))
}

/// Resolves the kernel image package the metapackage `meta` depends on now; with no apt
/// lists, the newest one cached.
pub fn kernel_package(meta: &str, cache: &Path) -> Result<String, DebError> {
    let depends = run(
        "apt-cache",
        Command::new("apt-cache").args(["depends", meta]),
    );
    if let Some(p) = depends.ok().as_deref().and_then(kernel_of_depends) {
        return Ok(p);
    }
    let cached = newest_cached(cache, "linux-image-", |name| {
        name.split('_')
            .next()
            .filter(|p| *p != meta)
            .map(str::to_string)
    });
    match cached {
        Some(p) => {
            warn!(%meta, package = %p, "apt-cache cannot resolve the kernel; using the newest cached");
            Ok(p)
        }
        None => Err(DebError::NoKernelPackage {
            meta: meta.to_string(),
            cache: cache.to_path_buf(),
        }),
    }
}

/// The greatest cached `.deb` starting with `prefix` (numbers in names compared as numbers:
/// `6.1.0-56` is newer than `6.1.0-9`), mapped by `f`.
fn newest_cached(cache: &Path, prefix: &str, f: impl Fn(&str) -> Option<String>) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(cache)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix) && n.ends_with(".deb"))
        .collect();
    names.sort_by(|a, b| natural_cmp(a, b));
    names.iter().rev().find_map(|n| f(n))
}

/// Compares runs of digits by value and everything else byte by byte.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn runs(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    for (x, y) in runs(a).into_iter().zip(runs(b)) {
        let ord = match (x, y) {
            ((true, x), (true, y)) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then_with(|| x.cmp(y))
            }
            ((_, x), (_, y)) => x.cmp(y),
        };
        if ord.is_ne() {
            return ord;
        }
    }
    a.len().cmp(&b.len())
}

/// The `.deb` of `package` (the candidate version) in `cache`, downloading it if it is not
/// there yet. With no apt lists it falls back to the newest cached `.deb` of that name.
pub fn fetch(cache: &Path, package: &str) -> Result<Deb, DebError> {
    let cache_err = |source| DebError::Cache {
        path: cache.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(cache).map_err(cache_err)?;
    let show = run(
        "apt-cache",
        Command::new("apt-cache").args(["show", "--no-all-versions", package]),
    );
    let path = match show.ok().as_deref().and_then(version_of_show) {
        Some((version, arch)) => {
            let path = cache.join(deb_file_name(package, &version, &arch));
            if !path.is_file() {
                download(cache, package, &version, &path)?;
            }
            path
        }
        None => {
            let prefix = format!("{package}_");
            let name = newest_cached(cache, &prefix, |n| Some(n.to_string())).ok_or_else(|| {
                DebError::UnknownPackage {
                    package: package.to_string(),
                    cache: cache.to_path_buf(),
                }
            })?;
            warn!(%package, file = %name, "apt-cache knows no such package; using the cached one");
            cache.join(name)
        }
    };
    Ok(Deb {
        package: field(&path, "Package")?,
        version: field(&path, "Version")?,
        path,
    })
}

/// Downloads into a private folder first, so an interrupted download leaves no partial file
/// under the name the cache trusts.
fn download(cache: &Path, package: &str, version: &str, dest: &Path) -> Result<(), DebError> {
    download_with(cache, package, version, dest, &[])
}

fn download_with(
    cache: &Path,
    package: &str,
    version: &str,
    dest: &Path,
    apt_options: &[String],
) -> Result<(), DebError> {
    info!(%package, %version, "downloading");
    let partial = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(cache)
        .map_err(|source| DebError::Cache {
            path: cache.to_path_buf(),
            source,
        })?;
    let mut cmd = Command::new("apt-get");
    cmd.current_dir(partial.path())
        .args(apt_options)
        .args(["download", "-q"]);
    if nix::unistd::geteuid().is_root() {
        // As root apt drops to _apt, which cannot write here, and warns; it is our folder.
        cmd.args(["-o", "APT::Sandbox::User=root"]);
    }
    run("apt-get", cmd.arg(format!("{package}={version}")))?;
    // apt names the file itself; with a pinned version and an unknown architecture the
    // caller's guess may differ, so take the one .deb the folder now holds.
    let got = std::fs::read_dir(partial.path())
        .map_err(|source| DebError::Cache {
            path: partial.path().to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .unwrap_or_else(|| partial.path().join(dest.file_name().unwrap_or_default()));
    let named = dest.with_file_name(got.file_name().unwrap_or_default());
    std::fs::rename(&got, &named).map_err(|source| DebError::Cache {
        path: got.clone(),
        source,
    })
}

/// Debian's archive keyring: what a private apt state trusts.
pub const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// An apt state of our own for exactly the suites a manifest names, signed by Debian's
/// keyring: the host's sources are neither used nor changed.
#[derive(Debug)]
pub struct PrivateApt {
    options: Vec<String>,
}

impl PrivateApt {
    /// Prepares the state under `root` for `suites` of `mirror` and reads their indexes
    /// (`apt-get update`: only what changed since the last time is fetched again).
    pub fn open(root: &Path, mirror: &str, suites: &[String]) -> Result<PrivateApt, DebError> {
        Self::open_for(root, mirror, suites, None)
    }

    /// As `open`, for the packages of `arch` (Debian's name, e.g. `arm64`) alone: apt reads
    /// only that architecture's indexes and resolves dependencies within it. The host's own
    /// architectures (`dpkg --add-architecture`) are not touched.
    pub fn open_for(
        root: &Path,
        mirror: &str,
        suites: &[String],
        arch: Option<&str>,
    ) -> Result<PrivateApt, DebError> {
        let cache_err = |source| DebError::Cache {
            path: root.to_path_buf(),
            source,
        };
        // apt reads a relative Dir:: path against its own root (`/`), not the working folder.
        let root = &std::path::absolute(root).map_err(cache_err)?;
        if !Path::new(DEBIAN_KEYRING).is_file() {
            return Err(DebError::Spawn {
                tool: "debian-archive-keyring",
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{DEBIAN_KEYRING} is missing (apt-get install debian-archive-keyring)"),
                ),
            });
        }
        for d in ["lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(root.join(d)).map_err(cache_err)?;
        }
        let sources: String = suites
            .iter()
            .map(|s| format!("deb [signed-by={DEBIAN_KEYRING}] {mirror} {s} main\n"))
            .collect();
        let list = root.join("sources.list");
        std::fs::write(&list, sources).map_err(cache_err)?;
        let mut options = Vec::new();
        for (k, v) in [
            ("Dir::Etc::SourceList", list.display().to_string()),
            ("Dir::Etc::SourceParts", "/dev/null".to_string()),
            (
                "Dir::State::Lists",
                root.join("lists").display().to_string(),
            ),
            ("Dir::Cache", root.join("cache").display().to_string()),
        ] {
            options.push("-o".to_string());
            options.push(format!("{k}={v}"));
        }
        if let Some(arch) = arch {
            for k in ["APT::Architecture", "APT::Architectures"] {
                options.push("-o".to_string());
                options.push(format!("{k}={arch}"));
            }
            // The host's dpkg status names packages of its own architecture: not ours.
            options.push("-o".to_string());
            options.push(format!(
                "Dir::State::status={}",
                root.join("status").display()
            ));
            let status = root.join("status");
            if !status.is_file() {
                std::fs::write(&status, b"").map_err(cache_err)?;
            }
        }
        if nix::unistd::geteuid().is_root() {
            options.push("-o".to_string());
            options.push("APT::Sandbox::User=root".to_string());
        }
        let apt = PrivateApt { options };
        run(
            "apt-get",
            Command::new("apt-get")
                .args(&apt.options)
                .args(["update", "-q"]),
        )?;
        Ok(apt)
    }

    /// The kernel image package the metapackage `meta` depends on in these suites
    /// (`linux-image-arm64` → `linux-image-6.1.0-NN-arm64`).
    pub fn kernel_package(&self, meta: &str) -> Result<String, DebError> {
        let out = run(
            "apt-cache",
            Command::new("apt-cache")
                .args(&self.options)
                .args(["depends", meta]),
        )?;
        kernel_of_depends(&out).ok_or_else(|| DebError::UnknownPackage {
            package: meta.to_string(),
            cache: self.lists(),
        })
    }

    /// The `.deb` of `package`'s candidate version in `cache`, downloaded if it is not there
    /// yet, with its name and version from its own control file.
    pub fn fetch_candidate(&self, cache: &Path, package: &str) -> Result<Deb, DebError> {
        let show = run(
            "apt-cache",
            Command::new("apt-cache").args(&self.options).args([
                "show",
                "--no-all-versions",
                package,
            ]),
        )?;
        let (version, arch) = version_of_show(&show).ok_or_else(|| DebError::UnknownPackage {
            package: package.to_string(),
            cache: self.lists(),
        })?;
        // The name carries the architecture: one cache holds amd64 and arm64 packages of
        // the same name and version side by side.
        let path = cache.join(deb_file_name(package, &version, &arch));
        if !path.is_file() {
            std::fs::create_dir_all(cache).map_err(|source| DebError::Cache {
                path: cache.to_path_buf(),
                source,
            })?;
            download_with(cache, package, &version, &path, &self.options)?;
        }
        Ok(Deb {
            package: field(&path, "Package")?,
            version: field(&path, "Version")?,
            path,
        })
    }

    /// Where this state keeps its package lists, for messages.
    fn lists(&self) -> PathBuf {
        self.options
            .iter()
            .find_map(|o| o.strip_prefix("Dir::State::Lists="))
            .map(PathBuf::from)
            .unwrap_or_default()
    }

    /// The `.deb` of `package` at exactly `version` in `cache`, downloaded if it is not
    /// there yet.
    pub fn fetch(&self, cache: &Path, package: &str, version: &str) -> Result<PathBuf, DebError> {
        std::fs::create_dir_all(cache).map_err(|source| DebError::Cache {
            path: cache.to_path_buf(),
            source,
        })?;
        let prefix = format!("{package}_{}_", version.replace(':', "%3a"));
        if let Some(found) = cached(cache, &prefix) {
            return Ok(found);
        }
        // The architecture is in the name apt gives the file; "all" is a guess it corrects.
        let dest = cache.join(format!("{prefix}all.deb"));
        download_with(cache, package, version, &dest, &self.options)?;
        cached(cache, &prefix).ok_or_else(|| DebError::UnknownPackage {
            package: format!("{package}={version}"),
            cache: cache.to_path_buf(),
        })
    }
}

/// The cached `.deb` whose name starts with `prefix`.
fn cached(cache: &Path, prefix: &str) -> Option<PathBuf> {
    std::fs::read_dir(cache)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".deb"))
        })
}

/// One control field of a `.deb`.
fn field(deb: &Path, name: &str) -> Result<String, DebError> {
    let out = run(
        "dpkg-deb",
        Command::new("dpkg-deb").arg("-f").arg(deb).arg(name),
    )?;
    Ok(out.trim().to_string())
}

/// Unpacks the files of `deb` under `dest` (no maintainer scripts run).
pub fn unpack(deb: &Path, dest: &Path) -> Result<(), DebError> {
    run(
        "dpkg-deb",
        Command::new("dpkg-deb").arg("-x").arg(deb).arg(dest),
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metapackage_names_the_kernel_it_depends_on() {
        // `apt-cache depends linux-image-amd64` on Debian 12.
        let out = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(
            kernel_of_depends(out).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        let virtual_only = "linux-image-amd64\n  Depends: <linux-image-6.1.0-9-amd64>\n";
        assert_eq!(kernel_of_depends(virtual_only), None);
        assert_eq!(kernel_of_depends(""), None);
    }

    #[test]
    fn versions_and_file_names_as_apt_writes_them() {
        let show = "Package: busybox-static\nVersion: 1:1.35.0-4+deb12u1+b1\nArchitecture: amd64\n";
        let (v, a) = version_of_show(show).unwrap();
        assert_eq!(
            deb_file_name("busybox-static", &v, &a),
            "busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb"
        );
        assert_eq!(version_of_show("N: Unable to locate package x\n"), None);
    }

    #[test]
    fn without_apt_lists_the_newest_cached_kernel_is_used() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            "linux-image-6.1.0-9-amd64_6.1.27-1_amd64.deb",
            "linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb",
            "linux-image-amd64_6.1.192-2_amd64.deb",
            "busybox-static_1%3a1.35.0-4_amd64.deb",
        ] {
            std::fs::write(dir.path().join(n), b"").unwrap();
        }
        let newest = newest_cached(dir.path(), "linux-image-", |n| {
            n.split('_')
                .next()
                .filter(|p| *p != "linux-image-amd64")
                .map(str::to_string)
        });
        assert_eq!(newest.as_deref(), Some("linux-image-6.1.0-56-amd64"));
        assert!(natural_cmp("a-10", "a-9").is_gt() && natural_cmp("", "a").is_lt());
    }
}
