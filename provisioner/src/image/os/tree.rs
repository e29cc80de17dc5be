//! The image's root tree: bootstrapped by mmdebstrap from Debian packages (kept in a cache so
//! a second build downloads nothing), given the agent and the units that make a node's own
//! identity at its first boot, its times clamped, then split into one source folder per
//! filesystem.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;

use super::grub;
use super::layout::{Filesystem, Table};
use super::manifest::KernelInfo;
use super::recipe::Recipe;
use super::steps::{StepError, Steps};

/// Removes a folder tree if it is there, never following a symlink out of it and never
/// descending into another filesystem: a bootstrap killed mid-way leaves /proc, /sys and
/// /dev/pts mounted in its tree, and those must not be emptied. A mount point in the way is an
/// error that names it.
pub fn remove_all(path: &Path) -> std::io::Result<()> {
    let top = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => m,
        Ok(_) => return std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    remove_within(path, top.dev())
}

fn remove_within(dir: &Path, dev: u64) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let m = std::fs::symlink_metadata(&p)?;
        if m.is_dir() {
            if m.dev() != dev {
                return Err(std::io::Error::other(format!(
                    "{} is a mount point (left by a bootstrap that was killed?): unmount it first",
                    p.display()
                )));
            }
            remove_within(&p, dev)?;
        } else {
            std::fs::remove_file(&p)?;
        }
    }
    std::fs::remove_dir(dir)
}

/// Copies a folder tree as it is (`cp -a`).
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    remove_all(to)?;
    let st = Command::new("cp").arg("-a").arg(from).arg(to).status()?;
    if !st.success() {
        return Err(std::io::Error::other(format!(
            "cp -a {} {} failed",
            from.display(),
            to.display()
        )));
    }
    Ok(())
}

/// `mmdebstrap` of the recipe's base with `packages` into `root`. The .debs are kept in
/// `cache` between builds (synced in before apt runs, out after).
#[allow(clippy::too_many_arguments)]
pub fn bootstrap(
    steps: &mut Steps,
    recipe: &Recipe,
    debian_arch: &str,
    mirror: &str,
    packages: &[String],
    cache: &Path,
    root: &Path,
    drivers: Option<&super::drivers::DriverBuild>,
) -> Result<(), StepError> {
    std::fs::create_dir_all(cache)
        .map_err(steps.io(format!("cannot create the cache {}", cache.display())))?;
    let suite = &recipe.base.suite;
    let mut sources = vec![
        format!("deb {mirror} {suite} main"),
        format!("deb {mirror} {suite}-updates main"),
    ];
    if let Some(sec) = &recipe.base.security_mirror {
        sources.push(format!("deb {sec} {suite}-security main"));
    }
    let mut packages = packages.to_vec();
    let mut setup_hooks = Vec::new();
    let mut customize_hooks = Vec::new();
    if let Some(d) = drivers {
        sources.push(d.source());
        packages.extend(d.packages());
        let work = root.with_file_name("driver-hooks");
        std::fs::create_dir_all(&work)
            .map_err(steps.io("cannot create the driver hooks' folder"))?;
        setup_hooks = d
            .setup_hooks(&work)
            .map_err(steps.io("cannot write the driver set's apt preferences"))?;
        customize_hooks = d.customize_hooks();
    }
    let cache_s = cache.display().to_string();
    let mut cmd = Command::new("mmdebstrap");
    // Python's string hashing orders the sets that maintainer scripts compile into .pyc files:
    // a fixed seed, derived from the recipe, makes them the same bytes on every build.
    let hash_seed = u32::from_be_bytes(
        super::layout::derived_guid(&recipe.name, &recipe.version).as_bytes()[..4]
            .try_into()
            .unwrap_or([0; 4]),
    );
    cmd.env("SOURCE_DATE_EPOCH", recipe.build.epoch.to_string())
        .env("PYTHONHASHSEED", hash_seed.to_string())
        .env("LC_ALL", "C.UTF-8")
        .args(["--mode=root", "--format=directory"])
        .arg(format!("--variant={}", recipe.base.variant))
        .arg(format!("--architectures={debian_arch}"))
        .arg(format!("--include={}", packages.join(",")))
        .arg("--aptopt=Acquire::Languages \"none\"")
        .arg("--dpkgopt=path-exclude=/usr/share/doc/*/changelog*")
        .arg("--skip=download/empty")
        .arg("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/")
        .arg(format!("--setup-hook=sync-in {cache_s} /var/cache/apt/archives/"))
        .args(setup_hooks.iter().map(|h| format!("--setup-hook={h}")))
        .args(customize_hooks.iter().map(|h| format!("--customize-hook={h}")))
        .arg(format!("--customize-hook=sync-out /var/cache/apt/archives {cache_s}"))
        .arg("--customize-hook=rm -f \"$1\"/var/cache/apt/archives/*.deb \"$1\"/var/cache/apt/archives/lock");
    cmd.arg(suite).arg(root);
    for s in &sources {
        cmd.arg(s);
    }
    steps.run(&mut cmd)?;
    let debs = std::fs::read_dir(cache).map(|d| d.count()).unwrap_or(0);
    steps.note(&format!(
        "{} packages; .deb cache {} ({debs} files)",
        packages.len(),
        cache.display()
    ));
    Ok(())
}

fn write(steps: &Steps, path: &Path, text: &str, mode: u32) -> Result<(), StepError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(steps.io(format!("cannot create {}", parent.display())))?;
    }
    let _ = std::fs::remove_file(path);
    std::fs::write(path, text).map_err(steps.io(format!("cannot write {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(steps.io(format!("cannot chmod {}", path.display())))
}

fn in_root(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

/// The agent at the recipe's path, started by systemd once the installer has written the
/// node's record (`/etc/provisioner/node.json`: the appliance, the node's credential); an
/// image booted without an install (a test VM) runs no agent. Its lines go to the journal and
/// the console.
pub fn install_agent(
    steps: &mut Steps,
    recipe: &Recipe,
    agent: &Path,
    root: &Path,
) -> Result<(), StepError> {
    let dest = in_root(root, &recipe.agent.path);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(steps.io("cannot create the agent's folder"))?;
    }
    std::fs::copy(agent, &dest)
        .map_err(steps.io(format!("cannot copy the agent {}", agent.display())))?;
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))
        .map_err(steps.io("cannot chmod the agent"))?;
    let unit = format!(
        "[Unit]\n\
         Description=Provisioner node agent: reports to the appliance and does what it says\n\
         Documentation=https://provisioner.invalid/docs/images.md\n\
         ConditionPathExists=/etc/provisioner/node.json\n\
         Wants=network-online.target\n\
         After=network-online.target\n\n\
         [Service]\n\
         Type=simple\n\
         ExecStart={} --installed /etc/provisioner/node.json --really-power-off\n\
         StandardOutput=journal+console\n\
         StandardError=journal+console\n\
         Restart=on-failure\n\
         RestartSec=10\n\
         NoNewPrivileges=yes\n\
         ProtectHome=yes\n\n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        recipe.agent.path
    );
    let unit_path = root.join("etc/systemd/system").join(&recipe.agent.unit);
    write(steps, &unit_path, &unit, 0o644)?;
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).map_err(steps.io("cannot create multi-user.target.wants"))?;
    let link = wants.join(&recipe.agent.unit);
    let _ = std::fs::remove_file(&link);
    symlink(format!("/etc/systemd/system/{}", recipe.agent.unit), &link)
        .map_err(steps.io("cannot enable the agent's unit"))?;
    steps.note(&format!(
        "agent {} as {}",
        recipe.agent.path, recipe.agent.unit
    ));
    Ok(())
}

/// No SSH host keys, machine-id or random seed in an image that many nodes share: each node
/// makes its own at first boot.
pub fn leave_identity_to_first_boot(steps: &mut Steps, root: &Path) -> Result<(), StepError> {
    let ssh = root.join("etc/ssh");
    if let Ok(dir) = std::fs::read_dir(&ssh) {
        for e in dir.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("ssh_host_") {
                std::fs::remove_file(e.path()).map_err(steps.io(format!("cannot remove {n}")))?;
            }
        }
    }
    write(
        steps,
        &root.join("etc/systemd/system/ssh.service.d/provisioner-host-keys.conf"),
        "# SSH host keys are made on the node's first boot, never shipped in the image.\n\
         # The unit's own check (sshd -t) needs them: it runs after.\n\
         [Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n",
        0o644,
    )?;
    // systemd makes the machine-id at first boot when the file is empty.
    write(steps, &root.join("etc/machine-id"), "", 0o444)?;
    for gone in [
        "var/lib/dbus/machine-id",
        "var/lib/systemd/random-seed",
        "etc/resolv.conf",
    ] {
        let p = root.join(gone);
        if std::fs::symlink_metadata(&p).is_ok() {
            std::fs::remove_file(&p).map_err(steps.io(format!("cannot remove /{gone}")))?;
        }
    }
    let dbus = root.join("var/lib/dbus");
    if dbus.is_dir() {
        symlink("/etc/machine-id", dbus.join("machine-id"))
            .map_err(steps.io("cannot link the dbus machine-id"))?;
    }
    // mmdebstrap copies the build host's names; the installer writes the node's.
    write(steps, &root.join("etc/hostname"), "localhost\n", 0o644)?;
    write(
        steps,
        &root.join("etc/hosts"),
        "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n",
        0o644,
    )?;
    Ok(())
}

/// What records the time of the build rather than the image: dpkg's and apt's logs of the
/// hardening profile's purges, and apt-show-versions' caches (Perl hash order; its apt hook
/// makes them again on the node's first apt run).
pub fn drop_build_records(steps: &mut Steps, root: &Path) -> Result<(), StepError> {
    for f in [
        "var/log/dpkg.log",
        "var/log/alternatives.log",
        "var/log/apt/history.log",
        "var/log/apt/term.log",
        "var/log/apt/eipp.log.xz",
        "var/cache/apt/pkgcache.bin",
        "var/cache/apt/srcpkgcache.bin",
        "var/cache/apt-show-versions/apackages-multiarch",
        "var/cache/apt-show-versions/ipackages-multiarch",
        "var/cache/apt-show-versions/files",
    ] {
        let p = root.join(f);
        if std::fs::symlink_metadata(&p).is_ok() {
            std::fs::remove_file(&p).map_err(steps.io(format!("cannot remove /{f}")))?;
        }
    }
    Ok(())
}

/// fstab, grub.cfg and a DHCP interface, from the table and the command line.
pub fn write_boot_config(
    steps: &mut Steps,
    recipe: &Recipe,
    console: &str,
    cmdline: &str,
    table: &Table,
    extra_fstab: &[String],
    root: &Path,
) -> Result<(), StepError> {
    let mut fstab = table.fstab();
    for line in extra_fstab {
        fstab += line;
        fstab.push('\n');
    }
    write(steps, &root.join("etc/fstab"), &fstab, 0o644)?;
    // Where the scanners read the kernel's parameters (update-grub is never run: grub.cfg is
    // written below).
    let args: Vec<&str> = cmdline
        .split(' ')
        .filter(|w| !w.starts_with("root="))
        .collect();
    write(
        steps,
        &root.join("etc/default/grub"),
        &format!(
            "# Written by provisioner image build; /boot/grub/grub.cfg boots with the same.\n\
             GRUB_DEFAULT=0\nGRUB_TIMEOUT=1\nGRUB_DISTRIBUTOR=Debian\nGRUB_CMDLINE_LINUX_DEFAULT=\"\"\n\
             GRUB_CMDLINE_LINUX=\"{}\"\n",
            args.join(" ")
        ),
        0o644,
    )?;
    let serial = console.starts_with("tty") && console != "tty0";
    let title = format!("{} {}", recipe.name, recipe.version);
    let (_, boot_dir) = table.boot();
    write(
        steps,
        &root.join("boot/grub/grub.cfg"),
        &grub::grub_cfg(&title, cmdline, serial, boot_dir),
        0o600,
    )?;
    // Every separate filesystem waits for its device; systemd gives each 90 s, which a server
    // with many disks and controllers (or an emulated test node) can pass while udev settles.
    write(
        steps,
        &root.join("etc/systemd/system.conf.d/60-provisioner-device-timeout.conf"),
        "# Written by provisioner image build: the separate filesystems wait up to 5 minutes\n\
         # for their devices (systemd's default is 90 s) before the boot gives up.\n\
         [Manager]\nDefaultDeviceTimeoutSec=300\n",
        0o644,
    )?;
    // Kernel links inside /boot (it may be its own filesystem, which GRUB reads alone), kept
    // current by kernel updates on the node.
    write(
        steps,
        &root.join("etc/kernel-img.conf"),
        "# Written by provisioner image build: grub.cfg boots /boot/vmlinuz.\ndo_symlinks = yes\nlink_in_boot = yes\n",
        0o644,
    )?;
    let release = kernel_release(steps, root)?;
    for (link, target) in [
        ("vmlinuz", format!("vmlinuz-{release}")),
        ("initrd.img", format!("initrd.img-{release}")),
    ] {
        let p = root.join("boot").join(link);
        let _ = std::fs::remove_file(&p);
        symlink(&target, &p).map_err(steps.io(format!("cannot link /boot/{link}")))?;
    }
    write(
        steps,
        &root.join("etc/network/interfaces.d/eth0"),
        "# The boot interface, by DHCP (net.ifnames=0 keeps its name eth0).\nallow-hotplug eth0\niface eth0 inet dhcp\n",
        0o644,
    )?;
    for p in &table.partitions {
        if let Some(m) = &p.mount {
            std::fs::create_dir_all(in_root(root, m))
                .map_err(steps.io(format!("cannot create {m}")))?;
        }
    }
    steps.note(&format!("kernel command line: {cmdline}"));
    Ok(())
}

/// The release of the one kernel in /boot.
fn kernel_release(steps: &mut Steps, root: &Path) -> Result<String, StepError> {
    let mut releases: Vec<String> = std::fs::read_dir(root.join("boot"))
        .map_err(steps.io("cannot read /boot"))?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("vmlinuz-")
                .map(str::to_string)
        })
        .collect();
    releases.sort();
    let [release] = releases.as_slice() else {
        return Err(steps.check(format!("expected one kernel in /boot, found {releases:?}")));
    };
    Ok(release.clone())
}

/// The kernel the image boots: the one `/boot/vmlinuz-*` and the package that installed it.
pub fn kernel_info(steps: &mut Steps, root: &Path, cmdline: &str) -> Result<KernelInfo, StepError> {
    let release = &kernel_release(steps, root)?;
    for link in ["vmlinuz", "initrd.img"] {
        if std::fs::symlink_metadata(root.join("boot").join(link)).is_err() {
            return Err(steps.check(format!(
                "/boot/{link} is missing: grub.cfg boots through it"
            )));
        }
    }
    if !root.join(format!("boot/initrd.img-{release}")).is_file() {
        return Err(steps.check(format!("no /boot/initrd.img-{release}")));
    }
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status"))
        .map_err(steps.io("cannot read the dpkg status"))?;
    let package = format!("linux-image-{release}");
    let version = super::sbom::parse_status(&status)
        .map_err(|e| steps.check(e.to_string()))?
        .into_iter()
        .find(|p| p.name == package)
        .map(|p| p.version)
        .ok_or_else(|| steps.check(format!("{package} is not installed")))?;
    Ok(KernelInfo {
        package,
        version,
        release: release.clone(),
        cmdline: cmdline.to_string(),
    })
}

/// Every time in the tree no later than `epoch` (SOURCE_DATE_EPOCH): what the build itself
/// wrote gets the epoch, what came from packages keeps its own time. Access times follow.
pub fn clamp_times(root: &Path, epoch: u64) -> std::io::Result<()> {
    let mut stack = vec![root.to_path_buf()];
    let mut paths = Vec::new();
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(e.path());
            }
            paths.push(e.path());
        }
    }
    paths.push(root.to_path_buf());
    for p in paths {
        let m = std::fs::symlink_metadata(&p)?;
        let mtime = (m.mtime() as u64).min(epoch) as i64;
        let t = TimeSpec::new(mtime, 0);
        utimensat(
            nix::fcntl::AT_FDCWD,
            &p,
            &t,
            &t,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(std::io::Error::from)?;
    }
    Ok(())
}

use std::os::unix::fs::MetadataExt;

/// Moves each separate filesystem's content out of `root` into `work/fs-NAME`, deepest mount
/// first, leaving its mount point empty (with its mode); the ESP starts empty. Returns the
/// source folder of each ext4 partition by name. The moves change the times of the mount
/// points they empty, so every tree is clamped to `epoch` again afterwards.
pub fn split(
    root: &Path,
    work: &Path,
    table: &Table,
    epoch: u64,
) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut mounted: Vec<_> = table
        .partitions
        .iter()
        .filter(|p| p.filesystem == Filesystem::Ext4 && p.mount.as_deref() != Some("/"))
        .collect();
    mounted
        .sort_by_key(|p| std::cmp::Reverse(p.mount.as_deref().unwrap_or("").matches('/').count()));
    let mut out = Vec::new();
    for p in mounted {
        let Some(mount) = &p.mount else { continue };
        let from = in_root(root, mount);
        let to = work.join(format!("fs-{}", p.name));
        remove_all(&to)?;
        std::fs::create_dir_all(&to)?;
        std::fs::create_dir_all(&from)?;
        let mode = std::fs::metadata(&from)?.permissions();
        std::fs::set_permissions(&to, mode)?;
        for e in std::fs::read_dir(&from)? {
            let e = e?;
            std::fs::rename(e.path(), to.join(e.file_name()))?;
        }
        let mtime = std::fs::symlink_metadata(&from)?.mtime();
        let t = TimeSpec::new(mtime, 0);
        utimensat(
            nix::fcntl::AT_FDCWD,
            &to,
            &t,
            &t,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(std::io::Error::from)?;
        out.push((p.name.clone(), to));
    }
    out.push(("root".to_string(), root.to_path_buf()));
    for (_, tree) in &out {
        clamp_times(tree, epoch)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::os::layout::{self, Mount, Want};
    use crate::image::os::recipe::Arch;

    #[test]
    fn split_moves_each_mount_out_deepest_first_and_keeps_modes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        for d in ["var/log/audit", "var/lib", "tmp", "etc"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("var/log/audit/audit.log"), "a").unwrap();
        std::fs::write(root.join("var/log/syslog"), "s").unwrap();
        std::fs::write(root.join("var/lib/x"), "x").unwrap();
        std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))
            .unwrap();
        let mounts = vec![
            Mount {
                path: "/var".into(),
                size_mib: 8,
                options: "nodev".into(),
            },
            Mount {
                path: "/var/log/audit".into(),
                size_mib: 8,
                options: "nodev".into(),
            },
            Mount {
                path: "/tmp".into(),
                size_mib: 8,
                options: "nodev".into(),
            },
        ];
        let table = layout::plan(&Want {
            seed: "t",
            arch: Arch::X86_64,
            disk_mib: 4096,
            bios_boot_mib: None,
            esp_mib: 64,
            mounts: &mounts,
            root_min_mib: 1,
            root_options: "defaults",
        })
        .unwrap();
        let epoch = 1_700_000_000;
        clamp_times(&root, epoch).unwrap();
        let work = dir.path().join("work");
        let sources = split(&root, &work, &table, epoch).unwrap();
        let names: Vec<&str> = sources.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["var-log-audit", "var", "tmp", "root"]);
        assert!(work.join("fs-var-log-audit/audit.log").is_file());
        assert!(work.join("fs-var/log/syslog").is_file());
        assert!(
            work.join("fs-var/log/audit").is_dir(),
            "nested mount point stays"
        );
        assert!(!work.join("fs-var/log/audit/audit.log").exists());
        assert_eq!(std::fs::read_dir(root.join("var")).unwrap().count(), 0);
        let mode = std::fs::metadata(work.join("fs-tmp"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o1777);
        // Emptying a mount point is a change to it: the split must not leave today's time
        // there (two builds would differ by it).
        for (name, tree) in &sources {
            for p in [
                tree.clone(),
                tree.join("log"),
                tree.join("var"),
                tree.join("tmp"),
            ] {
                if let Ok(m) = std::fs::symlink_metadata(&p) {
                    assert!(
                        m.mtime() <= epoch as i64,
                        "{name}: {} has {}",
                        p.display(),
                        m.mtime()
                    );
                }
            }
        }
    }

    #[test]
    fn remove_all_takes_files_links_and_folders_but_not_what_a_link_points_to() {
        let dir = tempfile::tempdir().unwrap();
        let keep = dir.path().join("keep");
        std::fs::create_dir(&keep).unwrap();
        std::fs::write(keep.join("precious"), "x").unwrap();
        let gone = dir.path().join("gone");
        std::fs::create_dir_all(gone.join("a/b")).unwrap();
        std::fs::write(gone.join("a/b/f"), "x").unwrap();
        symlink(&keep, gone.join("a/link")).unwrap();
        remove_all(&gone).unwrap();
        assert!(!gone.exists());
        assert!(keep.join("precious").is_file());
        remove_all(&gone).unwrap();
        // A filesystem mounted inside (as a killed bootstrap leaves /proc or /dev/pts) is
        // refused by name, and nothing in it is touched. Mounting needs root.
        if nix::unistd::geteuid().is_root() {
            let mnt = gone.join("proc");
            std::fs::create_dir_all(&mnt).unwrap();
            let mounted = Command::new("mount")
                .args(["-t", "tmpfs", "tmpfs"])
                .arg(&mnt)
                .status();
            if mounted.is_ok_and(|s| s.success()) {
                std::fs::write(mnt.join("inside"), "x").unwrap();
                let e = remove_all(&gone).unwrap_err();
                let inside = mnt.join("inside").is_file();
                let _ = Command::new("umount").arg(&mnt).status();
                assert!(e.to_string().contains("mount point"), "{e}");
                assert!(inside, "a file in the mounted filesystem was removed");
                remove_all(&gone).unwrap();
            }
        }
    }

    #[test]
    fn clamp_times_moves_only_what_is_newer_than_the_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old");
        let new = dir.path().join("new");
        std::fs::write(&old, "o").unwrap();
        std::fs::write(&new, "n").unwrap();
        let t = TimeSpec::new(1000, 0);
        utimensat(
            nix::fcntl::AT_FDCWD,
            &old,
            &t,
            &t,
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
        symlink("new", dir.path().join("link")).unwrap();
        clamp_times(dir.path(), 5000).unwrap();
        assert_eq!(std::fs::metadata(&old).unwrap().mtime(), 1000);
        assert_eq!(std::fs::metadata(&new).unwrap().mtime(), 5000);
        assert_eq!(
            std::fs::symlink_metadata(dir.path().join("link"))
                .unwrap()
                .mtime(),
            5000
        );
    }
}
