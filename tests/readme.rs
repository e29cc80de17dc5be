//! The README's two commands, as a newcomer runs them. They are read from the README (not
//! copied here): the first is run verbatim in the workspace, on a fresh data directory, and must
//! give an appliance that serves the firmware and a node's boot script with the discovery
//! kernel in it; the second must be what CI runs. A README that lies fails here.
//!
//! The environment, not the command, points the appliance at a fresh data directory, a shared
//! package cache (so a second run downloads nothing) and free loopback ports
//! (`PROVISIONER_DATA_DIR`, `PROVISIONER_CACHE_DIR`, `PROVISIONER_HTTP_LISTEN`,
//! `PROVISIONER_TFTP_LISTEN`, as the README says).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{read, require_tools, wait_for, workspace};

/// The commands of the README's "The two commands" block: (run, test).
fn commands() -> (String, String) {
    let readme = std::fs::read_to_string(workspace().join("README.md")).expect("README.md");
    let section = readme
        .split("## The two commands")
        .nth(1)
        .expect("a section `The two commands`");
    let block = section
        .split("```sh")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh block in it");
    let lines: Vec<&str> = block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(lines.len(), 2, "two commands: {lines:?}");
    (lines[0].to_string(), lines[1].to_string())
}

#[test]
fn ci_runs_the_readmes_test_command() {
    let (_, test) = commands();
    assert_eq!(test, "cargo test --workspace");
    let ci = std::fs::read_to_string(workspace().join(".ci/run")).expect(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == test),
        ".ci/run does not run `{test}`:\n{ci}"
    );
}

/// GET `path`: (status, body).
fn get(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let status = String::from_utf8_lossy(&resp[9..12]).parse().unwrap();
    (status, resp[end + 4..].to_vec())
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
#[cfg_attr(
    not(lab),
    ignore = "runs `cargo run --release -- up` and fetches Debian packages: needs root, apt-get and a package mirror (run as root, as CI does)"
)]
fn the_first_command_starts_an_appliance_that_boots_nodes() {
    require_tools(&[("apt-get", "apt"), ("dpkg-deb", "dpkg")]);
    let (run, _) = commands();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("first-run.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new("sh")
        .args(["-c", &run])
        .current_dir(workspace())
        .env("PROVISIONER_DATA_DIR", dir.path().join("data"))
        .env(
            "PROVISIONER_CACHE_DIR",
            workspace().join("target/provisioner-cache"),
        )
        .env("PROVISIONER_HTTP_LISTEN", "127.0.0.1:0")
        .env("PROVISIONER_TFTP_LISTEN", "127.0.0.1:0")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        // Its own process group: cargo and the appliance it runs are stopped together, by
        // this group's id, when the test ends.
        .process_group(0)
        .spawn()
        .expect("run the README's first command");
    struct Group(i32);
    impl Drop for Group {
        fn drop(&mut self) {
            let pg = nix::unistd::Pid::from_raw(-self.0);
            let _ = nix::sys::signal::kill(pg, nix::sys::signal::Signal::SIGTERM);
            std::thread::sleep(Duration::from_secs(2));
            let _ = nix::sys::signal::kill(pg, nix::sys::signal::Signal::SIGKILL);
        }
    }
    let _group = Group(child.id() as i32);

    // A release build, the firmware and the discovery image the first time: bounded, long.
    let addr: SocketAddr = wait_for(Duration::from_secs(45 * 60), || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("`{run}` ended ({status}):\n{}", read(&log));
        }
        read(&log)
            .lines()
            .find_map(|l| l.split("HTTP listening addr=").nth(1))
            .and_then(|a| a.split_whitespace().next()?.parse().ok())
    })
    .unwrap_or_else(|| panic!("`{run}` did not start serving:\n{}", read(&log)));
    let text = read(&log);

    let (status, body) = get(addr, "/healthz");
    assert_eq!(status, 200, "{}\n{text}", String::from_utf8_lossy(&body));

    // The firmware, as the manifest pins it.
    let (status, body) = get(addr, "/firmware/undionly.kpxe");
    assert_eq!(status, 200, "{text}");
    let manifest = std::fs::read_to_string(workspace().join("firmware/manifest.toml")).unwrap();
    assert!(
        manifest.contains(&sha256(&body)),
        "undionly.kpxe served is not the pinned one"
    );

    // A node's boot script names the discovery kernel the first start built.
    let (status, body) = get(addr, "/boot/52-54-00-12-34-56.ipxe");
    assert_eq!(status, 200);
    let script = String::from_utf8_lossy(&body);
    let built: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("data/images/discovery/discovery.json"))
            .unwrap_or_else(|e| panic!("no discovery image was built ({e}):\n{text}")),
    )
    .unwrap();
    let kernel = built["kernel"]["sha256"].as_str().unwrap();
    assert!(
        script.contains(&format!("/artifacts/{kernel}/vmlinuz")),
        "{script}"
    );
    assert!(
        text.contains("first start: building the discovery image"),
        "a line says what the first start does:\n{text}"
    );
}
