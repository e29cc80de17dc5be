//! A hardening profile (`images/hardening/*.toml`): what the image builder installs, removes,
//! mounts and writes into a Debian root tree so that the scanners a customer's security team
//! runs (OpenSCAP's ANSSI BP-028 content, Lynis) grade it well. Every setting names the rules it
//! answers, so the profile reads as the reason for itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

/// The profile format this code reads.
pub const FORMAT: u32 = 1;

/// How many symbolic links one path may pass through before we call it a loop (as Linux does).
const MAX_LINKS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum HardeningError {
    #[error("cannot read hardening profile {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("hardening profile {path} does not parse: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("hardening profile {path} has format {found}; this provisioner reads format {FORMAT}")]
    Format { path: PathBuf, found: u32 },
    #[error("hardening profile {path}: {setting}: {problem}")]
    Invalid {
        path: PathBuf,
        setting: String,
        problem: String,
    },
    #[error("{setting}: {path} would leave the tree {tree} ({why})")]
    Escapes {
        tree: PathBuf,
        setting: String,
        path: String,
        why: &'static str,
    },
    #[error("{setting}: no user or group {name} in {tree}/etc/{database}")]
    UnknownOwner {
        tree: PathBuf,
        setting: String,
        name: String,
        database: &'static str,
    },
    #[error("{setting}: cannot write {path}: {source}")]
    Write {
        setting: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{setting}: cannot run chroot: {source}")]
    Spawn {
        setting: String,
        source: std::io::Error,
    },
    #[error("{setting}: `{command}` failed in the tree ({status}): {output}")]
    Command {
        setting: String,
        command: String,
        status: String,
        output: String,
    },
}

/// A loaded, checked profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub description: String,
    packages: Vec<Packages>,
    kernel: Vec<Kernel>,
    mounts: Vec<Mount>,
    fstab: Vec<FstabLine>,
    files: Vec<File>,
    permissions: Vec<Permission>,
    runs: Vec<Run>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    format: u32,
    name: String,
    description: String,
    #[serde(default)]
    packages: Vec<Packages>,
    #[serde(default)]
    kernel: Vec<Kernel>,
    #[serde(default)]
    mount: Vec<Mount>,
    #[serde(default)]
    fstab: Vec<FstabLine>,
    #[serde(default)]
    file: Vec<File>,
    #[serde(default)]
    permissions: Vec<Permission>,
    #[serde(default)]
    run: Vec<Run>,
}

/// Packages the builder installs with mmdebstrap (`install`) or leaves out / purges
/// (`remove`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Packages {
    #[serde(default)]
    pub install: Vec<String>,
    #[serde(default)]
    pub remove: Vec<String>,
    pub rules: Vec<String>,
}

/// Arguments for the kernel command line the builder writes into the bootloader's
/// configuration (and `/etc/default/grub`, where the scanners look).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    pub args: Vec<String>,
    pub rules: Vec<String>,
}

/// A separate filesystem the builder makes, mounted at `path` with these fstab options.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    pub path: String,
    pub size_mib: u64,
    pub options: String,
    pub rules: Vec<String>,
}

/// An fstab line that is no partition: `tmpfs /dev/shm tmpfs nodev,nosuid,noexec 0 0`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FstabLine {
    pub spec: String,
    pub path: String,
    pub fstype: String,
    pub options: String,
    pub rules: Vec<String>,
}

/// A file written into the tree, replacing what is there.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub path: String,
    pub mode: String,
    #[serde(default = "root")]
    pub owner: String,
    #[serde(default = "root")]
    pub group: String,
    pub content: String,
    pub rules: Vec<String>,
}

/// New mode (and owner) for files the packages installed.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Permission {
    pub paths: Vec<String>,
    pub mode: String,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    pub rules: Vec<String>,
}

/// A command run in the tree (`chroot TREE /bin/sh -c COMMAND`, no /proc, no network) for what
/// a file cannot say.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    pub command: String,
    pub rules: Vec<String>,
}

fn root() -> String {
    "root".to_string()
}

/// What `apply` did, for the build log and the manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    pub files: Vec<String>,
    pub permissions: Vec<String>,
    pub commands: usize,
    pub rules: BTreeSet<String>,
}

impl Profile {
    /// Reads and checks a profile file.
    pub fn load(path: &Path) -> Result<Profile, HardeningError> {
        let text = std::fs::read_to_string(path).map_err(|source| HardeningError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Profile::parse(path, &text)
    }

    /// Parses `text` as the profile at `path` (named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Profile, HardeningError> {
        let doc: Document = toml::from_str(text).map_err(|e| HardeningError::Parse {
            path: path.to_path_buf(),
            source: Box::new(e),
        })?;
        if doc.format != FORMAT {
            return Err(HardeningError::Format {
                path: path.to_path_buf(),
                found: doc.format,
            });
        }
        let profile = Profile {
            name: doc.name,
            description: doc.description,
            packages: doc.packages,
            kernel: doc.kernel,
            mounts: doc.mount,
            fstab: doc.fstab,
            files: doc.file,
            permissions: doc.permissions,
            runs: doc.run,
        };
        profile
            .check()
            .map_err(|(setting, problem)| HardeningError::Invalid {
                path: path.to_path_buf(),
                setting,
                problem,
            })?;
        Ok(profile)
    }

    /// Packages to install into the tree with the recipe's own (mmdebstrap `--include`).
    pub fn packages_add(&self) -> Vec<String> {
        let all = self.packages.iter().flat_map(|p| p.install.iter().cloned());
        all.collect::<BTreeSet<_>>().into_iter().collect()
    }

    /// Packages that must not be in the image (the builder leaves them out, or purges them).
    pub fn packages_remove(&self) -> Vec<String> {
        let all = self.packages.iter().flat_map(|p| p.remove.iter().cloned());
        all.collect::<BTreeSet<_>>().into_iter().collect()
    }

    /// The kernel command line arguments, in profile order.
    pub fn kernel_cmdline(&self) -> Vec<String> {
        self.kernel.iter().flat_map(|k| k.args.clone()).collect()
    }

    /// Separate filesystems to make, in profile order (a parent before its children).
    pub fn mounts(&self) -> &[Mount] {
        &self.mounts
    }

    /// fstab lines that are not partitions (tmpfs, proc options).
    pub fn fstab(&self) -> &[FstabLine] {
        &self.fstab
    }

    /// Every rule some setting answers.
    pub fn rules(&self) -> BTreeSet<String> {
        self.settings()
            .into_iter()
            .flat_map(|(_, r)| r.iter().cloned())
            .collect()
    }

    /// (setting name as errors call it, its rules) for every setting.
    fn settings(&self) -> Vec<(String, &[String])> {
        let mut out = Vec::new();
        named(&mut out, "packages", &self.packages, |x| &x.rules);
        named(&mut out, "kernel", &self.kernel, |x| &x.rules);
        named(&mut out, "mount", &self.mounts, |x| &x.rules);
        named(&mut out, "fstab", &self.fstab, |x| &x.rules);
        named(&mut out, "file", &self.files, |x| &x.rules);
        named(&mut out, "permissions", &self.permissions, |x| &x.rules);
        named(&mut out, "run", &self.runs, |x| &x.rules);
        out
    }
}

fn named<'a, T>(
    out: &mut Vec<(String, &'a [String])>,
    kind: &str,
    items: &'a [T],
    rules: impl Fn(&'a T) -> &'a [String],
) {
    let each = items.iter().enumerate();
    out.extend(each.map(|(i, x)| (format!("{kind}[{i}]"), rules(x))));
}

/// A problem found by `check`: (setting, what is wrong).
type Problem = (String, String);

fn problem(setting: impl Into<String>, what: impl Into<String>) -> Problem {
    (setting.into(), what.into())
}

impl Profile {
    /// Everything `load` can see is wrong before anything touches a tree.
    fn check(&self) -> Result<(), Problem> {
        if !is_name(&self.name) {
            return Err(problem("name", "use lowercase letters, digits and '-'"));
        }
        for (setting, rules) in self.settings() {
            check_rules(&setting, rules)?;
        }
        self.check_packages()?;
        self.check_kernel()?;
        self.check_mounts()?;
        self.check_files()
    }

    fn check_packages(&self) -> Result<(), Problem> {
        for (i, p) in self.packages.iter().enumerate() {
            let setting = format!("packages[{i}]");
            if p.install.is_empty() && p.remove.is_empty() {
                return Err(problem(setting, "names no package to install or remove"));
            }
            if let Some(bad) = p.install.iter().chain(&p.remove).find(|n| !is_package(n)) {
                return Err(problem(
                    setting,
                    format!("{bad:?} is not a Debian package name"),
                ));
            }
        }
        let install: BTreeSet<String> = self.packages_add().into_iter().collect();
        match self
            .packages_remove()
            .into_iter()
            .find(|r| install.contains(r))
        {
            Some(both) => Err(problem(
                "packages",
                format!("{both} is both installed and removed"),
            )),
            None => Ok(()),
        }
    }

    fn check_kernel(&self) -> Result<(), Problem> {
        for (i, k) in self.kernel.iter().enumerate() {
            if k.args.is_empty() || k.args.iter().any(|a| !is_word(a)) {
                let what = "args must be non-empty words without spaces";
                return Err(problem(format!("kernel[{i}]"), what));
            }
        }
        Ok(())
    }

    fn check_mounts(&self) -> Result<(), Problem> {
        let mut seen = BTreeSet::new();
        for (i, m) in self.mounts.iter().enumerate() {
            let setting = format!("mount[{i}]");
            tree_path(&m.path).map_err(|e| problem(&setting, format!("path {:?}: {e}", m.path)))?;
            if m.path == "/" || !seen.insert(m.path.as_str()) {
                return Err(problem(
                    setting,
                    format!("{} is the root or named twice", m.path),
                ));
            }
            let later = &self.mounts[i + 1..];
            if let Some(parent) = later
                .iter()
                .find(|p| m.path.starts_with(&format!("{}/", p.path)))
            {
                let what = format!("{} must come after {}, which holds it", m.path, parent.path);
                return Err(problem(setting, what));
            }
            if m.size_mib == 0 || !is_word(&m.options) {
                return Err(problem(
                    setting,
                    "needs a size_mib above 0 and options without spaces",
                ));
            }
        }
        for (i, f) in self.fstab.iter().enumerate() {
            if ![&f.spec, &f.path, &f.fstype, &f.options]
                .iter()
                .all(|w| is_word(w))
            {
                let what = "spec, path, fstype and options must be words without spaces";
                return Err(problem(format!("fstab[{i}]"), what));
            }
        }
        Ok(())
    }

    fn check_files(&self) -> Result<(), Problem> {
        let mut seen = BTreeSet::new();
        for (i, f) in self.files.iter().enumerate() {
            let setting = format!("file[{i}]");
            tree_path(&f.path).map_err(|e| problem(&setting, format!("path {:?}: {e}", f.path)))?;
            mode(&f.mode).map_err(|e| problem(&setting, e))?;
            if !seen.insert(f.path.as_str()) {
                return Err(problem(setting, format!("{} is written twice", f.path)));
            }
        }
        for (i, p) in self.permissions.iter().enumerate() {
            let setting = format!("permissions[{i}]");
            mode(&p.mode).map_err(|e| problem(&setting, e))?;
            for path in &p.paths {
                tree_path(path).map_err(|e| problem(&setting, format!("path {path:?}: {e}")))?;
            }
        }
        match self.runs.iter().position(|r| r.command.trim().is_empty()) {
            Some(i) => Err(problem(format!("run[{i}]"), "the command is empty")),
            None => Ok(()),
        }
    }
}

/// A rule is a short XCCDF rule id (`sysctl_kernel_kptr_restrict`) or a Lynis test id
/// (`lynis:SSH-7408`).
fn check_rules(setting: &str, rules: &[String]) -> Result<(), Problem> {
    if rules.is_empty() {
        return Err(problem(setting, "names no rule it answers (rules = [...])"));
    }
    let xccdf = |r: &str| {
        !r.is_empty()
            && r.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    };
    let lynis = |r: &str| {
        r.strip_prefix("lynis:").is_some_and(|t| {
            t.split_once('-').is_some_and(|(a, n)| {
                !a.is_empty()
                    && a.bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
                    && !n.is_empty()
                    && n.bytes().all(|b| b.is_ascii_digit())
            })
        })
    };
    match rules.iter().find(|r| !xccdf(r) && !lynis(r)) {
        Some(bad) => Err(problem(
            setting,
            format!("rule {bad:?} is neither a short XCCDF rule id nor lynis:TEST-1234"),
        )),
        None => Ok(()),
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Debian policy 5.6.1: lowercase letters, digits, `+`, `-`, `.`; starts alphanumeric.
fn is_package(s: &str) -> bool {
    s.len() >= 2
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

fn is_word(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(char::is_whitespace)
}

/// The components of an absolute path inside the tree; `..`, `.` and relative paths refused.
fn tree_path(path: &str) -> Result<Vec<&str>, &'static str> {
    let rest = path
        .strip_prefix('/')
        .ok_or("must be absolute (as seen from inside the image)")?;
    let parts: Vec<&str> = rest.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err("must not contain '..', '.' or empty components");
    }
    Ok(parts)
}

/// An octal file mode such as `0640`.
fn mode(text: &str) -> Result<u32, String> {
    let ok = (3..=4).contains(&text.len()) && text.bytes().all(|b| (b'0'..=b'7').contains(&b));
    match ok.then(|| u32::from_str_radix(text, 8)) {
        Some(Ok(m)) => Ok(m),
        _ => Err(format!("mode {text:?} is not an octal mode like \"0644\"")),
    }
}

impl Profile {
    /// Writes the files, runs the commands and sets the permissions, in that order (so a
    /// package's own scripts run by a command cannot undo a mode set here). Same profile and
    /// same tree give the same bytes: nothing here writes a date or a random value.
    pub fn apply(&self, tree: &Path) -> Result<Applied, HardeningError> {
        let ids = Ids::read(tree)?;
        let mut applied = Applied {
            rules: self.rules(),
            ..Applied::default()
        };
        let remove = self.packages_remove();
        if !remove.is_empty() {
            // dpkg only warns about a package that is not installed.
            run_in(
                tree,
                "packages.remove",
                &format!("dpkg --purge {}", remove.join(" ")),
            )?;
            applied.commands += 1;
        }
        if !self.kernel.is_empty() {
            self.write_grub_default(tree, &ids)?;
            applied.files.push(GRUB_DEFAULT.to_string());
        }
        for (i, f) in self.files.iter().enumerate() {
            write_file(tree, &format!("file[{i}]"), f, &ids)?;
            applied.files.push(f.path.clone());
        }
        for (i, r) in self.runs.iter().enumerate() {
            run_in(tree, &format!("run[{i}]"), &r.command)?;
            applied.commands += 1;
        }
        for (i, p) in self.permissions.iter().enumerate() {
            let done = set_permissions(tree, &format!("permissions[{i}]"), p, &ids)?;
            applied.permissions.extend(done);
        }
        Ok(applied)
    }
}

/// Where the scanners (and `update-grub` on the node) read the kernel command line.
pub const GRUB_DEFAULT: &str = "/etc/default/grub";

impl Profile {
    fn write_grub_default(&self, tree: &Path, ids: &Ids) -> Result<(), HardeningError> {
        let setting = "kernel";
        let path = resolve(tree, setting, GRUB_DEFAULT)?;
        let existing = std::fs::read_to_string(&path).ok();
        let file = File {
            path: GRUB_DEFAULT.to_string(),
            mode: "0644".to_string(),
            owner: root(),
            group: root(),
            content: grub_default(existing.as_deref(), &self.kernel_cmdline()),
            rules: Vec::new(),
        };
        write_file(tree, setting, &file, ids)
    }
}

/// `/etc/default/grub` with `GRUB_CMDLINE_LINUX` set to `args` (other lines kept; Debian's
/// defaults when there is no file yet).
pub fn grub_default(existing: Option<&str>, args: &[String]) -> String {
    let line = format!("GRUB_CMDLINE_LINUX=\"{}\"", args.join(" "));
    let base = existing.unwrap_or(
        "GRUB_DEFAULT=0\nGRUB_TIMEOUT=5\nGRUB_DISTRIBUTOR=Debian\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n",
    );
    let mut out: Vec<&str> = base
        .lines()
        .filter(|l| !l.trim_start().starts_with("GRUB_CMDLINE_LINUX="))
        .collect();
    out.push(&line);
    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// The tree's own users and groups (never the build host's).
struct Ids {
    tree: PathBuf,
    users: BTreeMap<String, u32>,
    groups: BTreeMap<String, u32>,
}

impl Ids {
    fn read(tree: &Path) -> Result<Ids, HardeningError> {
        let table = |name: &str| {
            let path = tree.join("etc").join(name);
            std::fs::read_to_string(&path)
                .map(|t| id_table(&t))
                .map_err(|source| HardeningError::Read { path, source })
        };
        Ok(Ids {
            tree: tree.to_path_buf(),
            users: table("passwd")?,
            groups: table("group")?,
        })
    }

    fn owner(&self, setting: &str, user: &str, group: &str) -> Result<(u32, u32), HardeningError> {
        let find = |map: &BTreeMap<String, u32>, name: &str, database| {
            map.get(name)
                .copied()
                .ok_or_else(|| HardeningError::UnknownOwner {
                    tree: self.tree.clone(),
                    setting: setting.to_string(),
                    name: name.to_string(),
                    database,
                })
        };
        Ok((
            find(&self.users, user, "passwd")?,
            find(&self.groups, group, "group")?,
        ))
    }
}

/// `name:x:id:...` lines → name → id; lines that do not parse are skipped.
fn id_table(text: &str) -> BTreeMap<String, u32> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let id = f.nth(1)?.parse().ok()?;
            Some((name.to_string(), id))
        })
        .collect()
}

/// Where `path` (absolute, as seen inside the image) lies on the host, following the tree's
/// relative symbolic links; an absolute link, or a `..` that climbs above the tree's root, is
/// refused, since on the host either would leave the tree.
pub fn resolve(tree: &Path, setting: &str, path: &str) -> Result<PathBuf, HardeningError> {
    let escapes = |why| HardeningError::Escapes {
        tree: tree.to_path_buf(),
        setting: setting.to_string(),
        path: path.to_string(),
        why,
    };
    let mut pending: Vec<PathBuf> = vec![PathBuf::from(path.trim_start_matches('/'))];
    let mut inside = PathBuf::new();
    let mut links = 0;
    while let Some(next) = pending.pop() {
        let mut parts = next.components();
        let Some(first) = parts.next() else { continue };
        let rest = parts.as_path().to_path_buf();
        if !rest.as_os_str().is_empty() {
            pending.push(rest);
        }
        match first {
            Component::Normal(name) => {
                let here = tree.join(&inside).join(name);
                match std::fs::read_link(&here) {
                    Ok(target) if target.is_absolute() => {
                        return Err(escapes("absolute symbolic link"));
                    }
                    Ok(target) => {
                        links += 1;
                        if links > MAX_LINKS {
                            return Err(escapes("too many symbolic links"));
                        }
                        pending.push(target);
                    }
                    Err(_) => inside.push(name),
                }
            }
            Component::ParentDir => {
                if !inside.pop() {
                    return Err(escapes("'..' above the tree's root"));
                }
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(escapes("absolute path")),
        }
    }
    Ok(tree.join(inside))
}

fn write_file(tree: &Path, setting: &str, f: &File, ids: &Ids) -> Result<(), HardeningError> {
    let (uid, gid) = ids.owner(setting, &f.owner, &f.group)?;
    let dest = resolve(tree, setting, &f.path)?;
    let io = |path: &Path| {
        let (setting, path) = (setting.to_string(), path.to_path_buf());
        move |source| HardeningError::Write {
            setting,
            path,
            source,
        }
    };
    if let Some(parent) = dest.parent() {
        use std::os::unix::fs::DirBuilderExt;
        let mut dirs = std::fs::DirBuilder::new();
        dirs.recursive(true).mode(0o755);
        dirs.create(parent).map_err(io(parent))?;
    }
    std::fs::write(&dest, &f.content).map_err(io(&dest))?;
    own(&dest, f.mode.as_str(), Some((uid, gid))).map_err(io(&dest))
}

fn own(path: &Path, mode_text: &str, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let bits = mode(mode_text).map_err(std::io::Error::other)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    // After chown, which clears set-id bits.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(bits))
}

fn set_permissions(
    tree: &Path,
    setting: &str,
    p: &Permission,
    ids: &Ids,
) -> Result<Vec<String>, HardeningError> {
    let owner = match (&p.owner, &p.group) {
        (None, None) => None,
        (u, g) => Some(ids.owner(
            setting,
            u.as_deref().unwrap_or("root"),
            g.as_deref().unwrap_or("root"),
        )?),
    };
    let mut done = Vec::new();
    for path in &p.paths {
        let host = resolve(tree, setting, path)?;
        // A package this profile does not install leaves nothing to tighten.
        if std::fs::symlink_metadata(&host).is_err() {
            continue;
        }
        own(&host, &p.mode, owner).map_err(|source| HardeningError::Write {
            setting: setting.to_string(),
            path: host.clone(),
            source,
        })?;
        done.push(path.clone());
    }
    Ok(done)
}

/// `chroot TREE /bin/sh -c COMMAND` with a small fixed environment.
fn run_in(tree: &Path, setting: &str, command: &str) -> Result<(), HardeningError> {
    let out = Command::new("chroot")
        .arg(tree)
        .args(["/bin/sh", "-c", command])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C.UTF-8")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .map_err(|source| HardeningError::Spawn {
            setting: setting.to_string(),
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    Err(HardeningError::Command {
        setting: setting.to_string(),
        command: command.to_string(),
        status: out.status.to_string(),
        output: output.trim().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
format = 1
name = "small"
description = "a test profile"

[[packages]]
install = ["auditd"]
rules = ["package_audit_installed"]

[[kernel]]
args = ["audit=1", "pti=on"]
rules = ["grub2_pti_argument"]

[[mount]]
path = "/var/log/audit"
size_mib = 256
options = "nodev,nosuid,noexec"
rules = ["lynis:FILE-6310"]

[[file]]
path = "/etc/sysctl.d/90-test.conf"
mode = "0640"
rules = ["sysctl_kernel_kptr_restrict"]
content = "kernel.kptr_restrict = 2\n"

[[permissions]]
paths = ["/etc/shadow", "/etc/not-installed"]
mode = "0600"
rules = ["file_permissions_etc_shadow"]
"#;

    fn load(text: &str) -> Result<Profile, HardeningError> {
        Profile::parse(Path::new("test.toml"), text)
    }

    /// A tree with just what `apply` reads: passwd, group and a shadow file.
    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nshadow:x:42:\n").unwrap();
        std::fs::write(dir.path().join("etc/shadow"), "root:*:1::::::\n").unwrap();
        dir
    }

    #[test]
    fn the_shipped_profile_loads_and_names_its_rules() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../images/hardening/anssi-bp28-intermediary.toml");
        let p = Profile::load(&path).unwrap();
        assert!(p.packages_add().contains(&"auditd".to_string()));
        assert!(p.kernel_cmdline().contains(&"audit=1".to_string()));
        assert!(p.mounts().iter().any(|m| m.path == "/var/log/audit"));
        assert!(p.rules().contains("sysctl_kernel_kptr_restrict"));
    }

    #[test]
    fn accessors_give_what_the_builder_needs() {
        let p = load(SMALL).unwrap();
        assert_eq!(p.packages_add(), ["auditd"]);
        assert_eq!(p.kernel_cmdline(), ["audit=1", "pti=on"]);
        assert_eq!(p.mounts()[0].options, "nodev,nosuid,noexec");
        assert_eq!(p.mounts()[0].size_mib, 256);
    }

    #[test]
    fn errors_name_the_file_and_the_setting() {
        let no_rules = SMALL.replace("rules = [\"grub2_pti_argument\"]", "rules = []");
        let e = load(&no_rules).unwrap_err().to_string();
        assert!(e.contains("test.toml") && e.contains("kernel[0]"), "{e}");
        let escape = SMALL.replace("/etc/sysctl.d/90-test.conf", "/etc/../../x");
        assert!(load(&escape).unwrap_err().to_string().contains("file[0]"));
        let bad_mode = SMALL.replace("\"0640\"", "\"rw-r-----\"");
        assert!(load(&bad_mode).unwrap_err().to_string().contains("file[0]"));
        let future = SMALL.replace("format = 1", "format = 2");
        assert!(matches!(
            load(&future),
            Err(HardeningError::Format { found: 2, .. })
        ));
        let typo = SMALL.replace("size_mib", "size_mb");
        assert!(matches!(load(&typo), Err(HardeningError::Parse { .. })));
        let child_first = format!(
            "{SMALL}\n[[mount]]\npath = \"/var/log\"\nsize_mib = 1\noptions = \"nodev\"\nrules = [\"x\"]\n"
        );
        let e = load(&child_first).unwrap_err().to_string();
        assert!(
            e.contains("mount[0]") && e.contains("after /var/log"),
            "{e}"
        );
        let both = SMALL.replace(
            "install = [\"auditd\"]",
            "install = [\"x11\"]\nremove = [\"x11\"]",
        );
        assert!(load(&both).unwrap_err().to_string().contains("both"));
    }

    #[test]
    fn apply_writes_files_with_mode_and_owner_and_the_kernel_line() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tree();
        let applied = load(SMALL).unwrap().apply(dir.path()).unwrap();
        let written = dir.path().join("etc/sysctl.d/90-test.conf");
        assert_eq!(
            std::fs::read_to_string(&written).unwrap(),
            "kernel.kptr_restrict = 2\n"
        );
        let mode = std::fs::metadata(&written).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o640);
        let shadow = std::fs::metadata(dir.path().join("etc/shadow")).unwrap();
        assert_eq!(shadow.permissions().mode() & 0o7777, 0o600);
        assert_eq!(applied.permissions, ["/etc/shadow"]);
        let grub = std::fs::read_to_string(dir.path().join("etc/default/grub")).unwrap();
        assert!(
            grub.contains("GRUB_CMDLINE_LINUX=\"audit=1 pti=on\"\n"),
            "{grub}"
        );
    }

    #[test]
    fn apply_is_deterministic() {
        let (a, b) = (tree(), tree());
        let p = load(SMALL).unwrap();
        p.apply(a.path()).unwrap();
        p.apply(b.path()).unwrap();
        p.apply(b.path()).unwrap();
        for f in ["etc/sysctl.d/90-test.conf", "etc/default/grub"] {
            let read = |d: &tempfile::TempDir| std::fs::read(d.path().join(f)).unwrap();
            assert_eq!(read(&a), read(&b), "{f}");
        }
    }

    #[test]
    fn links_that_leave_the_tree_are_refused() {
        let dir = tree();
        let t = dir.path();
        std::os::unix::fs::symlink("/etc", t.join("etc/sysctl.d")).unwrap();
        let e = load(SMALL).unwrap().apply(t).unwrap_err();
        assert!(
            matches!(
                e,
                HardeningError::Escapes {
                    why: "absolute symbolic link",
                    ..
                }
            ),
            "{e}"
        );
        std::fs::remove_file(t.join("etc/sysctl.d")).unwrap();
        std::os::unix::fs::symlink("../../..", t.join("etc/sysctl.d")).unwrap();
        let e = load(SMALL).unwrap().apply(t).unwrap_err();
        assert!(matches!(e, HardeningError::Escapes { .. }), "{e}");
        std::fs::remove_file(t.join("etc/sysctl.d")).unwrap();
        // A relative link that stays inside (merged /usr) is followed.
        std::fs::create_dir_all(t.join("usr/lib/sysctl.d")).unwrap();
        std::os::unix::fs::symlink("../usr/lib/sysctl.d", t.join("etc/sysctl.d")).unwrap();
        let inside = resolve(t, "file[0]", "/etc/sysctl.d/90-test.conf").unwrap();
        assert_eq!(inside, t.join("usr/lib/sysctl.d/90-test.conf"));
    }

    #[test]
    fn the_grub_default_keeps_other_lines_and_replaces_the_command_line() {
        let old = "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX=\"quiet\"\nGRUB_TIMEOUT=1\n";
        let args = ["audit=1".to_string()];
        assert_eq!(
            grub_default(Some(old), &args),
            "GRUB_DEFAULT=0\nGRUB_TIMEOUT=1\nGRUB_CMDLINE_LINUX=\"audit=1\"\n"
        );
        assert!(grub_default(None, &args).starts_with("GRUB_DEFAULT=0\n"));
    }

    #[test]
    fn unknown_owners_are_named() {
        let owned = SMALL.replace("mode = \"0640\"", "mode = \"0640\"\nowner = \"_chrony\"");
        let dir = tree();
        let e = load(&owned)
            .unwrap()
            .apply(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("_chrony") && e.contains("passwd"), "{e}");
    }
}
