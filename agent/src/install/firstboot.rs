//! The node's first-boot configuration, written by the installer into the installed root
//! filesystem after the read-back and before the first MiB, so a node that loses power
//! before it is done has no bootable disk and is installed again.
//!
//! Files rather than a cloud-init NoCloud seed: the image carries no cloud-init (one more
//! daemon that would, by default, look for metadata services off the site), what a node needs
//! is a handful of files, and written here they are checked before the disk can boot, where a
//! seed is only read, or not, at first boot. What is written:
//!
//! - `/etc/hostname`, and `/etc/hosts` naming it (the slot's name);
//! - `/etc/provisioner/node.json` (0600, in a 0700 folder): the appliance's URL, the boot MAC,
//!   the install's credential, the image and its raw sha256, for the installed agent;
//! - `/etc/chrony/chrony.conf`: time only from the configured servers (the appliance unless
//!   configured), no pool;
//! - `/etc/apt/sources.list`: only the appliance's repository (its driver suite), checked with
//!   the appliance's archive key in `/etc/apt/keyrings/provisioner-archive.asc`; other
//!   sources removed;
//! - with operator keys: an `admin` account (no password; sudo) whose keys sshd reads from
//!   `/etc/ssh/authorized_keys/admin` (`/home` is its own filesystem, created at first boot).
//!
//! The network is the image's own: DHCP on the boot interface.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use provisioner_protocol::install::{FirstBoot, NodeRecord};

/// Where the installed agent finds its record, under the installed root.
pub const RECORD: &str = "etc/provisioner/node.json";
/// The appliance's archive key, which the apt sources name as `signed-by`.
pub const APT_KEYRING: &str = "etc/apt/keyrings/provisioner-archive.asc";
/// The operator's account on installed nodes.
pub const ADMIN: &str = "admin";

#[derive(Debug, thiserror::Error)]
pub enum FirstBootError {
    #[error("{0}")]
    Refused(String),
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
}

fn io_at(path: &str) -> impl FnOnce(io::Error) -> FirstBootError + '_ {
    move |source| FirstBootError::Io {
        path: format!("/{path}"),
        source,
    }
}

/// Writes `text` to `root/rel` with `mode`, through a temporary file renamed over it.
fn put(root: &Path, rel: &str, text: &str, mode: u32) -> Result<(), FirstBootError> {
    let path = root.join(rel);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_at(rel))?;
    }
    let tmp = path.with_extension("provisioner-new");
    fs::write(&tmp, text).map_err(io_at(rel))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(io_at(rel))?;
    fs::rename(&tmp, &path).map_err(io_at(rel))
}

fn read(root: &Path, rel: &str) -> Result<String, FirstBootError> {
    match fs::read_to_string(root.join(rel)) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(io_at(rel)(e)),
    }
}

fn valid_hostname(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Writes the configuration into the installed system mounted at `root`; `today` is days
/// since 1970 (the account's last password change). Returns the files written.
pub fn configure(
    root: &Path,
    first: &FirstBoot,
    node: &NodeRecord,
    today: u64,
) -> Result<Vec<String>, FirstBootError> {
    if !valid_hostname(&first.hostname) {
        return Err(FirstBootError::Refused(format!(
            "host name {:?} is not an RFC 1123 label",
            first.hostname
        )));
    }
    let one_line = |what: &str, lines: &[String]| match lines
        .iter()
        .find(|l| l.contains(['\n', '\r', '\0']) || l.trim().is_empty())
    {
        Some(bad) => Err(FirstBootError::Refused(format!(
            "{what} {bad:?} is not one non-empty line"
        ))),
        None => Ok(()),
    };
    one_line("SSH key", &first.ssh_authorized_keys)?;
    one_line("time server", &first.ntp)?;
    one_line("apt source", &first.apt_sources)?;
    if !first.apt_sources.is_empty()
        && !first
            .apt_keyring
            .starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    {
        return Err(FirstBootError::Refused(
            "apt sources without the archive key that signs them".into(),
        ));
    }
    let mut written = Vec::new();
    let mut put = |rel: &str, text: &str, mode: u32| {
        put(root, rel, text, mode).map(|()| written.push(format!("/{rel}")))
    };

    put("etc/hostname", &format!("{}\n", first.hostname), 0o644)?;
    let hosts: String = read(root, "etc/hosts")?
        .lines()
        .filter(|l| !l.starts_with("127.0.1.1"))
        .map(|l| format!("{l}\n"))
        .collect();
    put(
        "etc/hosts",
        &format!("{hosts}127.0.1.1\t{}\n", first.hostname),
        0o644,
    )?;

    fs::create_dir_all(root.join("etc/provisioner")).map_err(io_at("etc/provisioner"))?;
    fs::set_permissions(
        root.join("etc/provisioner"),
        fs::Permissions::from_mode(0o700),
    )
    .map_err(io_at("etc/provisioner"))?;
    let record = serde_json::to_string_pretty(node)
        .map_err(|e| FirstBootError::Refused(format!("the node record: {e}")))?;
    put(RECORD, &(record + "\n"), 0o600)?;

    let servers: String = first
        .ntp
        .iter()
        .map(|s| format!("server {s} iburst\n"))
        .collect();
    put(
        "etc/chrony/chrony.conf",
        &format!(
            "# Written by the provisioner at install: time only from the site.\n{servers}\
             driftfile /var/lib/chrony/chrony.drift\nmakestep 1 3\nrtcsync\nleapsectz right/UTC\n\
             logdir /var/log/chrony\n"
        ),
        0o644,
    )?;

    if !first.apt_keyring.is_empty() {
        fs::create_dir_all(root.join("etc/apt/keyrings")).map_err(io_at("etc/apt/keyrings"))?;
        put(APT_KEYRING, &first.apt_keyring, 0o644)?;
    }
    let sources: String = first.apt_sources.iter().map(|l| format!("{l}\n")).collect();
    put(
        "etc/apt/sources.list",
        &format!(
            "# Written by the provisioner at install: only the appliance's repository.\n{sources}"
        ),
        0o644,
    )?;
    if let Ok(dir) = fs::read_dir(root.join("etc/apt/sources.list.d")) {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".list") || name.ends_with(".sources") {
                let rel = format!("etc/apt/sources.list.d/{name}");
                fs::remove_file(e.path()).map_err(io_at(&rel))?;
                written.push(format!("/{rel} (removed)"));
            }
        }
    }

    if !first.ssh_authorized_keys.is_empty() {
        written.extend(admin_account(root, &first.ssh_authorized_keys, today)?);
    }
    Ok(written)
}

/// The `admin` account: no password, in `sudo`, its keys where sshd reads them.
fn admin_account(root: &Path, keys: &[String], today: u64) -> Result<Vec<String>, FirstBootError> {
    let passwd = read(root, "etc/passwd")?;
    let group = read(root, "etc/group")?;
    let field = |line: &str, i: usize| line.split(':').nth(i).map(str::to_string);
    let ids = |text: &str, i: usize| -> Vec<u32> {
        text.lines()
            .filter_map(|l| field(l, i)?.parse().ok())
            .collect()
    };
    let existing = passwd
        .lines()
        .find(|l| field(l, 0).as_deref() == Some(ADMIN));
    let (uid, gid) = match existing {
        Some(line) => (
            field(line, 2).and_then(|v| v.parse().ok()).unwrap_or(1000),
            field(line, 3).and_then(|v| v.parse().ok()).unwrap_or(1000),
        ),
        None => {
            let taken: Vec<u32> = ids(&passwd, 2).into_iter().chain(ids(&group, 2)).collect();
            let id = (1000..60000)
                .find(|id| !taken.contains(id))
                .ok_or_else(|| {
                    FirstBootError::Refused("no free id for the admin account".into())
                })?;
            (id, id)
        }
    };
    let mut written = Vec::new();
    let mut edit = |rel: &str, mode: u32, text: String| -> Result<(), FirstBootError> {
        put(root, rel, &text, mode)?;
        written.push(format!("/{rel}"));
        Ok(())
    };
    if existing.is_none() {
        edit(
            "etc/passwd",
            0o644,
            format!("{passwd}{ADMIN}:x:{uid}:{gid}:Provisioner operator:/home/{ADMIN}:/bin/bash\n"),
        )?;
        let shadow = read(root, "etc/shadow")?;
        edit(
            "etc/shadow",
            0o640,
            format!("{shadow}{ADMIN}:*:{today}:0:99999:7:::\n"),
        )?;
    }
    edit(
        "etc/group",
        0o644,
        with_member(&group, &format!("{ADMIN}:x:{gid}:")),
    )?;
    let gshadow = read(root, "etc/gshadow")?;
    edit(
        "etc/gshadow",
        0o640,
        with_member(&gshadow, &format!("{ADMIN}:!::")),
    )?;
    edit(
        "etc/ssh/sshd_config.d/60-provisioner.conf",
        0o600,
        "# Written by the provisioner at install: operators' keys are the appliance's to manage.\n\
         AuthorizedKeysFile /etc/ssh/authorized_keys/%u\n"
            .into(),
    )?;
    let keys: String = keys.iter().map(|k| format!("{}\n", k.trim())).collect();
    edit(&format!("etc/ssh/authorized_keys/{ADMIN}"), 0o644, keys)?;
    edit(
        &format!("etc/sudoers.d/60-provisioner-{ADMIN}"),
        0o440,
        format!("# Written by the provisioner at install.\n{ADMIN} ALL=(ALL:ALL) NOPASSWD: ALL\n"),
    )?;
    edit(
        &format!("etc/tmpfiles.d/provisioner-{ADMIN}.conf"),
        0o644,
        format!(
            "# The operator's home, on /home (its own filesystem).\nd /home/{ADMIN} 0700 {ADMIN} {ADMIN} -\n"
        ),
    )?;
    Ok(written)
}

/// `text` (group or gshadow, whose members are both the fourth field) with `admin` a member
/// of `sudo`, and the `admin` group added as `new` if it is not there.
fn with_member(text: &str, new: &str) -> String {
    const MEMBERS: usize = 3;
    let mut out = String::new();
    let mut have_admin = false;
    for line in text.lines() {
        let mut f: Vec<String> = line.split(':').map(str::to_string).collect();
        if f.first().map(String::as_str) == Some(ADMIN) {
            have_admin = true;
        }
        if f.first().map(String::as_str) == Some("sudo") && f.len() > MEMBERS {
            let mut list: Vec<&str> = f[MEMBERS].split(',').filter(|m| !m.is_empty()).collect();
            if !list.contains(&ADMIN) {
                list.push(ADMIN);
            }
            f[MEMBERS] = list.join(",");
        }
        out.push_str(&f.join(":"));
        out.push('\n');
    }
    if !have_admin {
        out.push_str(new);
        out.push('\n');
    }
    out
}

#[cfg(test)]
#[path = "firstboot_tests.rs"]
mod tests;
