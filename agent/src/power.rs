//! Powering the node off or rebooting it when the appliance says so: sync(2), then
//! reboot(2). In the discovery initramfs there is no init system to ask.
//!
//! Only where that is plainly the agent's job: when it is PID 1, when it runs from the
//! initramfs (the image's /init starts it), or when told so with `--really-power-off` (an
//! installed OS's service). A technician's run or a test on a workstation never turns the
//! machine off.

use std::fs;
use std::io;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PowerAction {
    PowerOff,
    Reboot,
}

/// Whether this process is the machine's init.
pub fn is_init() -> bool {
    std::process::id() == 1
}

/// Whether `/` is the initramfs (the kernel's `rootfs`): the discovery image, not an
/// installed OS.
pub fn in_initramfs() -> bool {
    fs::read_to_string("/proc/self/mountinfo")
        .is_ok_and(|mountinfo| root_fs_type(&mountinfo) == Some("rootfs"))
}

/// The filesystem type of what is mounted on `/` (the last mount there, which hides those
/// before it), from `/proc/self/mountinfo` (proc(5)): `ID PARENT MAJ:MIN ROOT MOUNTPOINT
/// OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS`.
pub fn root_fs_type(mountinfo: &str) -> Option<&str> {
    mountinfo
        .lines()
        .filter(|line| line.split(' ').nth(4) == Some("/"))
        .filter_map(|line| line.split_once(" - "))
        .filter_map(|(_, after)| after.split(' ').next())
        .next_back()
}

/// Flushes the filesystems and powers off or reboots at once. Returns only if the kernel
/// refused (no CAP_SYS_BOOT), with why.
pub fn now(action: PowerAction) -> io::Error {
    let command = match action {
        PowerAction::PowerOff => libc::RB_POWER_OFF,
        PowerAction::Reboot => libc::RB_AUTOBOOT,
    };
    // SAFETY: sync(2) and reboot(2) take no pointers; reboot returns only on failure.
    unsafe {
        libc::sync();
        libc::reboot(command);
    }
    io::Error::last_os_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_of_an_initramfs_and_of_an_installed_os() {
        let initramfs = "1 1 0:2 / / rw - rootfs rootfs rw,size=8119348k,nr_inodes=2029837\n\
            22 1 0:20 / /proc rw,relatime - proc proc rw\n";
        assert_eq!(root_fs_type(initramfs), Some("rootfs"));
        let installed = "27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard\n\
            22 27 0:21 / /proc rw,relatime shared:12 - proc proc rw\n";
        assert_eq!(root_fs_type(installed), Some("ext4"));
    }

    #[test]
    fn the_last_mount_on_root_is_the_one_seen() {
        let pivoted = "1 1 0:2 / / rw - rootfs rootfs rw\n\
            30 1 8:1 / / rw,relatime - xfs /dev/sda1 rw\n";
        assert_eq!(root_fs_type(pivoted), Some("xfs"));
    }

    #[test]
    fn this_machine_knows_what_its_root_is() {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(root_fs_type(&mountinfo).is_some());
    }
}
