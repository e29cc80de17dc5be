//! Bringing up the interface the node booted from, so that the agent can reach the
//! appliance. In the discovery initramfs nothing has configured it (no systemd, no udev):
//! the agent runs busybox `udhcpc` on it. On an installed OS it already has an address and
//! is left alone.

use std::env;
use std::ffi::CStr;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::cmdline::MacAddr;

/// The script the discovery image provides to apply a lease.
const IMAGE_SCRIPT: &str = "/etc/udhcpc.script";
/// Where the agent writes its own when the image has none.
const OWN_SCRIPT_DIR: &str = "/run/provisioner-agent";
const OWN_SCRIPT: &str = include_str!("udhcpc.script");
/// `-t 10` discovers, 3 s apart by default: this bounds udhcpc if it hangs all the same.
const UDHCPC_DEADLINE: Duration = Duration::from_secs(90);
/// Where busybox installs its applets, for when the agent runs without a `PATH` (the
/// kernel starts init without one).
const TOOL_DIRS: [&str; 4] = ["/sbin", "/usr/sbin", "/bin", "/usr/bin"];

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("no network interface has MAC {0} (driver not loaded yet?)")]
    NoInterface(MacAddr),
    #[error("cannot list network interfaces: {0}")]
    Interfaces(io::Error),
    #[error("{0} not found in PATH nor in /sbin, /usr/sbin, /bin, /usr/bin")]
    ToolMissing(&'static str),
    #[error("cannot run {tool}: {source}")]
    Spawn {
        tool: &'static str,
        source: io::Error,
    },
    #[error("{tool} failed ({status})")]
    Failed {
        tool: &'static str,
        status: ExitStatus,
    },
    #[error("{tool} did not finish in {}s", .deadline.as_secs())]
    TimedOut {
        tool: &'static str,
        deadline: Duration,
    },
    #[error("cannot write the udhcpc script {path}: {source}")]
    Script { path: PathBuf, source: io::Error },
    #[error("{0} has no IPv4 address after DHCP")]
    NoAddress(String),
}

/// What was done to the boot interface.
#[derive(Debug, PartialEq)]
pub enum Up {
    /// It had an address already (installed OS, or the kernel's `ip=`).
    AlreadyUp(String),
    /// It got one by DHCP.
    Configured(String),
}

/// Tries until the boot interface has an IPv4 address, printing each failure and the wait.
pub fn bring_up(root: &Path, mac: &MacAddr, say: &mut dyn FnMut(&str)) -> Up {
    let mut backoff = Backoff::default();
    loop {
        match try_bring_up(root, mac) {
            Ok(up) => return up,
            Err(e) => {
                let (retry, delay) = backoff.next_retry();
                say(&format!(
                    "boot interface not up: {e}, retry {retry} in {}s",
                    delay.as_secs()
                ));
                thread::sleep(delay);
            }
        }
    }
}

fn try_bring_up(root: &Path, mac: &MacAddr) -> Result<Up, NetError> {
    let name = interface_with_mac(root, mac)
        .map_err(NetError::Interfaces)?
        .ok_or(NetError::NoInterface(*mac))?;
    if has_ipv4(&name).map_err(NetError::Interfaces)? {
        return Ok(Up::AlreadyUp(name));
    }
    run("ip", &["link", "set", "dev", &name, "up"], None)?;
    let script = udhcpc_script()?;
    let script = script.to_string_lossy();
    run(
        "udhcpc",
        &["-i", &name, "-n", "-q", "-t", "10", "-s", &script],
        Some(UDHCPC_DEADLINE),
    )?;
    if !has_ipv4(&name).map_err(NetError::Interfaces)? {
        return Err(NetError::NoAddress(name));
    }
    Ok(Up::Configured(name))
}

/// The interface in `sys/class/net` whose `address` is `mac`.
pub fn interface_with_mac(root: &Path, mac: &MacAddr) -> io::Result<Option<String>> {
    let mut names: Vec<String> = fs::read_dir(root.join("sys/class/net"))?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<_>>()?;
    names.sort();
    Ok(names.into_iter().find(|name| {
        let address = root.join("sys/class/net").join(name).join("address");
        fs::read_to_string(address)
            .is_ok_and(|a| a.trim().parse::<MacAddr>().is_ok_and(|a| a == *mac))
    }))
}

/// Whether the interface has an IPv4 address, from getifaddrs(3).
pub fn has_ipv4(name: &str) -> io::Result<bool> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list that freeifaddrs releases below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found = false;
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, not yet freed; its
        // name is a NUL-terminated string and its address, when not null, a sockaddr.
        let entry = unsafe { &*cursor };
        let ipv4 = !entry.ifa_addr.is_null()
            && i32::from(unsafe { (*entry.ifa_addr).sa_family }) == libc::AF_INET;
        if ipv4 && unsafe { CStr::from_ptr(entry.ifa_name) }.to_bytes() == name.as_bytes() {
            found = true;
            break;
        }
        cursor = entry.ifa_next;
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    Ok(found)
}

/// The image's script, or the agent's own written to /run.
fn udhcpc_script() -> Result<PathBuf, NetError> {
    if Path::new(IMAGE_SCRIPT).is_file() {
        return Ok(PathBuf::from(IMAGE_SCRIPT));
    }
    let path = Path::new(OWN_SCRIPT_DIR).join("udhcpc.script");
    let write = || -> io::Result<()> {
        fs::create_dir_all(OWN_SCRIPT_DIR)?;
        fs::write(&path, OWN_SCRIPT)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
    };
    write().map_err(|source| NetError::Script {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

fn run(tool: &'static str, args: &[&str], deadline: Option<Duration>) -> Result<(), NetError> {
    let path = find_tool(tool).ok_or(NetError::ToolMissing(tool))?;
    let mut child = Command::new(path)
        .args(args)
        .spawn()
        .map_err(|source| NetError::Spawn { tool, source })?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => return Err(NetError::Spawn { tool, source }),
        }
        if let Some(deadline) = deadline.filter(|d| started.elapsed() > *d) {
            // It may have exited in between: either way it is reaped below.
            let _ = child.kill();
            let _ = child.wait();
            return Err(NetError::TimedOut { tool, deadline });
        }
        thread::sleep(Duration::from_millis(100));
    };
    if !status.success() {
        return Err(NetError::Failed { tool, status });
    }
    Ok(())
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(TOOL_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_an_ipv4_address_when_127_0_0_1_can_be_bound() {
        // A fresh network namespace has lo down and without its address: ask the kernel
        // another way, by binding to the address.
        let bindable = std::net::UdpSocket::bind("127.0.0.1:0").is_ok();
        assert_eq!(has_ipv4("lo").unwrap(), bindable);
    }

    #[test]
    fn a_made_up_interface_has_no_address() {
        assert!(!has_ipv4("no-such-if0").unwrap());
    }
}
