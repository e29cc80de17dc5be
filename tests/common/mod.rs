//! The virtual rack's plumbing for lab tests: network namespaces joined by bridges, processes
//! started inside them, all removed when the test ends, even when it fails.
//!
//! Traffic stays inside namespaces the test created. Every wait is bounded.

#![allow(dead_code)]

pub mod debian_driver;
pub mod images;
pub mod inproc;
pub mod labrun;
pub mod nvidia;
pub mod site;
pub mod vendor;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// What building and grading a hardened OS image needs (program, Debian package).
pub const IMAGE_TOOLS: &[(&str, &str)] = &[
    ("mmdebstrap", "mmdebstrap"),
    ("sfdisk", "fdisk"),
    ("mkfs.vfat", "dosfstools"),
    ("mcopy", "mtools"),
    ("mkfs.ext4", "e2fsprogs"),
    ("grub-mkimage", "grub-common"),
    ("bmaptool", "bmap-tools"),
    ("zstd", "zstd"),
    ("oscap", "openscap-scanner"),
];

/// Checks a lab test's prerequisites: root and `tools` (program, Debian package). Such a test
/// is marked `#[cfg_attr(not(lab), ignore = "...")]` (see `provisioner/build.rs`), so it runs
/// only as root or in CI; a program missing then fails it, naming the package to install.
pub fn require(tools: &[(&str, &str)]) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this lab test needs root (network namespaces): run it as root, as CI does"
    );
    require_tools(tools);
}

/// Checks that `tools` (program, Debian package) are installed; a missing one fails the test,
/// naming its package. Tests that need them are marked `#[cfg_attr(not(tool = "..."),
/// ignore = ...)]`, so this fails only where the build saw them and they have gone since, or in
/// CI, where every one must be installed.
pub fn require_tools(tools: &[(&str, &str)]) {
    let missing: Vec<String> = tools
        .iter()
        .filter(|(bin, _)| which(bin).is_none())
        .map(|(bin, package)| format!("{bin} (apt-get install {package})"))
        .collect();
    assert!(
        missing.is_empty(),
        "test prerequisites missing: {}",
        missing.join(", ")
    );
}

pub fn which(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A private network: one namespace holding bridges (`br0`, `br1`, ...) and one namespace per
/// host, each host wired to a bridge by a veth pair. Dropping it kills what it started and
/// deletes every namespace.
pub struct Lab {
    pub prefix: String,
    switch: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    pub dir: tempfile::TempDir,
    links: u32,
}

impl Lab {
    pub fn new(bridges: usize) -> Lab {
        let prefix = format!(
            "pv{}x{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let switch = format!("{prefix}-sw");
        let mut lab = Lab {
            prefix,
            switch: switch.clone(),
            namespaces: Vec::new(),
            children: Vec::new(),
            dir: tempfile::tempdir().expect("tempdir"),
            links: 0,
        };
        ip(&["netns", "add", &switch]);
        lab.namespaces.push(switch.clone());
        ip(&["-n", &switch, "link", "set", "lo", "up"]);
        for b in 0..bridges {
            let br = format!("br{b}");
            ip(&["-n", &switch, "link", "add", &br, "type", "bridge"]);
            ip(&["-n", &switch, "link", "set", &br, "up"]);
        }
        lab
    }

    /// Adds a host namespace `name` (no links yet) and returns its full name.
    pub fn host(&mut self, name: &str) -> String {
        let ns = format!("{}-{name}", self.prefix);
        ip(&["netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    /// Wires `ns` to bridge `bridge` as interface `ifname`, with `addr` (CIDR) if given and
    /// MAC `mac` if given.
    pub fn link(
        &mut self,
        ns: &str,
        ifname: &str,
        bridge: usize,
        addr: Option<&str>,
        mac: Option<&str>,
    ) {
        self.links += 1;
        let outer = format!("v{}", self.links);
        let tmp = format!("t{}{}", self.prefix, self.links);
        let tmp = &tmp[tmp.len().saturating_sub(15)..];
        ip(&[
            "-n",
            &self.switch,
            "link",
            "add",
            &outer,
            "type",
            "veth",
            "peer",
            "name",
            tmp,
        ]);
        ip(&["-n", &self.switch, "link", "set", tmp, "netns", ns]);
        ip(&["-n", ns, "link", "set", tmp, "name", ifname]);
        if let Some(m) = mac {
            ip(&["-n", ns, "link", "set", ifname, "address", m]);
        }
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &outer,
            "master",
            &format!("br{bridge}"),
        ]);
        ip(&["-n", &self.switch, "link", "set", &outer, "up"]);
        if let Some(a) = addr {
            ip(&["-n", ns, "addr", "add", a, "dev", ifname]);
        }
        ip(&["-n", ns, "link", "set", ifname, "up"]);
    }

    /// Adds a tap device on bridge `bridge` for a QEMU node, which must then run in
    /// [`Lab::switch`]; returns the tap's name.
    pub fn tap(&mut self, bridge: usize) -> String {
        self.links += 1;
        let tap = format!("tap{}", self.links);
        ip(&[
            "-n",
            &self.switch,
            "tuntap",
            "add",
            "dev",
            &tap,
            "mode",
            "tap",
        ]);
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &tap,
            "master",
            &format!("br{bridge}"),
        ]);
        ip(&["-n", &self.switch, "link", "set", &tap, "up"]);
        tap
    }

    /// The namespace that holds the bridges (and taps).
    pub fn switch(&self) -> &str {
        &self.switch
    }

    /// Changes the MAC of a host's interface, to play another client.
    pub fn set_mac(&self, ns: &str, ifname: &str, mac: &str) {
        ip(&["-n", ns, "link", "set", ifname, "down"]);
        ip(&["-n", ns, "addr", "flush", "dev", ifname]);
        ip(&["-n", ns, "link", "set", ifname, "address", mac]);
        ip(&["-n", ns, "link", "set", ifname, "up"]);
    }

    /// A command that runs inside `ns`.
    pub fn cmd(&self, ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }

    /// Starts a long-running process in `ns`, its output in `DIR/<log>`; it is killed (by its
    /// PID) when the lab is dropped. Returns its index for `kill`.
    pub fn spawn(&mut self, ns: &str, log: &str, program: &str, args: &[&str]) -> usize {
        let out = fs::File::create(self.dir.path().join(log)).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = self
            .cmd(ns, program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        self.children.push(child);
        self.children.len() - 1
    }

    pub fn pid(&self, idx: usize) -> i32 {
        self.children[idx].id() as i32
    }

    /// Sends `sig` to a started process and waits (bounded) for it to exit.
    pub fn signal(
        &mut self,
        idx: usize,
        sig: nix::sys::signal::Signal,
    ) -> Option<std::process::ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(self.pid(idx));
        let _ = nix::sys::signal::kill(pid, sig);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.children[idx].try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn log(&self, name: &str) -> String {
        fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes an executable script into the lab directory.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.path(name);
        fs::write(&p, body).expect("write script");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    }

    /// GET over HTTP from inside `ns` with curl (a real client); the body.
    pub fn http_get(&self, ns: &str, url: &str) -> Option<String> {
        let out = self
            .cmd(ns, "curl")
            .args(["-sf", "--max-time", "5", url])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// The workspace's root folder.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The lab's node image (`tests/lab/node-image.sh`), built once into target/lab-image:
/// (kernel, initrd).
pub fn node_image() -> (PathBuf, PathBuf) {
    let out = workspace().join("target/lab-image");
    let status = Command::new("bash")
        .arg(workspace().join("tests/lab/node-image.sh"))
        .arg(&out)
        .status()
        .expect("run node-image.sh");
    assert!(status.success(), "node-image.sh failed");
    (out.join("vmlinuz"), out.join("initrd.img"))
}

/// The firmware set, fetched from Debian's ipxe package if not yet present (the packages kept
/// in target/provisioner-cache, so nothing is downloaded twice).
pub fn firmware_dir() -> PathBuf {
    let dir = workspace().join("firmware");
    let status = Command::new(appliance())
        .args(["firmware", "fetch", "--firmware-dir"])
        .arg(&dir)
        .arg("--cache-dir")
        .arg(workspace().join("target/provisioner-cache"))
        .status()
        .expect("run provisioner firmware fetch");
    assert!(status.success(), "provisioner firmware fetch failed");
    dir
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The workspace's target folder, from where cargo put the appliance for these tests.
pub fn target_dir() -> PathBuf {
    Path::new(appliance())
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/provisioner")
        .to_path_buf()
}

/// The node agent: PROVISIONER_AGENT, or the workspace's release build, brought up to date
/// here (it is another package, so cargo does not build it for these tests; the discovery
/// image carries the release build). None, with a SKIPPED line, if it cannot be built
/// outside CI; in CI that fails the test.
pub fn agent_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PROVISIONER_AGENT") {
        return Some(PathBuf::from(path));
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace above provisioner/");
    let built = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "-p", "provisioner-agent"])
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir())
        .status();
    let path = target_dir().join("release/provisioner-agent");
    if built.as_ref().is_ok_and(|s| s.success()) && path.is_file() {
        return Some(path);
    }
    let msg =
        format!("cannot build the agent ({built:?}): cargo build --release -p provisioner-agent");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// The appliance binary built by cargo for these tests.
pub fn appliance() -> &'static str {
    env!("CARGO_BIN_EXE_provisioner")
}

/// `provisioner ARGS --data-dir DATA`, which must succeed; its stdout, trimmed.
pub fn cli(data: &Path, args: &[&str]) -> String {
    let out = Command::new(appliance())
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("run provisioner");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `provisioner ARGS --data-dir DATA`, success or not: its output.
pub fn provisioner_output(data: &Path, args: &[&str]) -> Output {
    Command::new(appliance())
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("run provisioner")
}

/// `provisioner ARGS --data-dir DATA`: whether it succeeded, and what it said (stdout, then
/// stderr).
pub fn provisioner(data: &Path, args: &[&str]) -> (bool, String) {
    let out = provisioner_output(data, args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

pub fn read(p: &Path) -> String {
    // Lossy: a console holds what firmware wrote, not always UTF-8.
    fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The appliance started on loopback with `args` after `up`; killed (by PID) on drop.
pub struct Running {
    pub child: Child,
    pub lines: std::sync::mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Running {
    pub fn start(args: &[&str]) -> Running {
        use std::io::BufRead;
        let mut child = Command::new(appliance())
            .arg("up")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the appliance");
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits (bounded) for a log line containing `needle`.
    pub fn wait_line(&mut self, needle: &str) -> Option<String> {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return Some(l.clone());
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return Some(l);
                    }
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// The `addr=` of a log line such as `HTTP listening addr=127.0.0.1:40000`.
    pub fn addr(&mut self, needle: &str) -> std::net::SocketAddr {
        let line = self
            .wait_line(needle)
            .unwrap_or_else(|| panic!("no `{needle}` line"));
        line.split("addr=")
            .nth(1)
            .and_then(|a| a.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in `{line}`"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Flags that put the appliance's HTTP and TFTP on free loopback ports, and keep it from
/// fetching what a test does not give it.
pub const ON_LOOPBACK: [&str; 5] = [
    "--http-listen",
    "127.0.0.1:0",
    "--tftp-listen",
    "127.0.0.1:0",
    "--offline",
];

/// The sha256 of a file, by the system's `sha256sum` (a check independent of our own).
pub fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}

/// One `[[binary]]` entry of a firmware manifest naming `name` with digest `sha`.
pub fn manifest_entry(name: &str, sha: &str) -> String {
    format!(
        "[[binary]]\nname = \"{name}\"\narch = \"x86_64-efi\"\npackage = \"test\"\nversion = \"1\"\npath = \"{name}\"\nsha256 = \"{sha}\"\n"
    )
}

/// The appliance on loopback serving `file.bin` (`size` bytes of a pattern) as its firmware
/// set over TFTP: (the appliance, its TFTP address, the file's bytes, the folder it uses).
pub fn tftp_appliance(size: usize) -> (Running, std::net::SocketAddr, Vec<u8>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let fw = dir.path().join("fw");
    std::fs::create_dir(&fw).unwrap();
    let content: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(fw.join("file.bin"), &content).unwrap();
    let sha = sha256(&fw.join("file.bin"));
    std::fs::write(fw.join("manifest.toml"), manifest_entry("file.bin", &sha)).unwrap();
    let data = dir.path().join("data");
    let mut app = Running::start(
        &[
            &ON_LOOPBACK[..],
            &[
                "--data-dir",
                data.to_str().unwrap(),
                "--firmware-dir",
                fw.to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    let tftp = app.addr("TFTP listening");
    app.wait_line("TFTP serving").expect("TFTP up");
    (app, tftp, content, dir)
}

/// A TFTP request (`op` 1 read, 2 write) for `name` in octet mode, with options.
pub fn tftp_request(op: u16, name: &str, opts: &[(&str, &str)]) -> Vec<u8> {
    let mut p = op.to_be_bytes().to_vec();
    for s in [name, "octet"] {
        p.extend_from_slice(s.as_bytes());
        p.push(0);
    }
    for (k, v) in opts {
        for s in [k, v] {
            p.extend_from_slice(s.as_bytes());
            p.push(0);
        }
    }
    p
}
