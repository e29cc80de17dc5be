//! The virtual rack: a private network (one namespace, one bridge, a tap per node), the
//! appliance on it in full DHCP mode, and N QEMU nodes network-booting from it, each with its
//! serial console in a file. Every packet a node sends is counted by destination
//! ([`traffic`]). Everything it made is removed on exit, Ctrl-C or failure.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::types::MacAddr;

pub mod traffic;

/// The lab network, inside its own namespace.
pub const LAB_ADDR: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const LAB_RANGE: &str = "10.99.0.100-10.99.0.200";
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS.fd";
const AAVMF_CODE: &str = "/usr/share/AAVMF/AAVMF_CODE.fd";
const AAVMF_VARS: &str = "/usr/share/AAVMF/AAVMF_VARS.fd";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// SeaBIOS with the NIC's iPXE option ROM.
    Bios,
    /// OVMF's own PXE client (the NIC's option ROM disabled).
    Uefi,
    /// An arm64 node (QEMU `virt`) with AAVMF's own PXE client, as a Grace tray boots.
    #[value(name = "uefi-arm64")]
    #[serde(rename = "uefi-arm64")]
    UefiArm64,
}

impl Firmware {
    pub fn as_str(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
            Firmware::UefiArm64 => "uefi-arm64",
        }
    }

    /// The QEMU binary, the firmware it needs, and the packages that carry them.
    fn machine(
        self,
    ) -> (
        &'static str,
        Option<(&'static str, &'static str)>,
        &'static str,
    ) {
        match self {
            Firmware::Bios => ("qemu-system-x86_64", None, "qemu-system-x86 ipxe-qemu"),
            Firmware::Uefi => (
                "qemu-system-x86_64",
                Some((OVMF_CODE, OVMF_VARS)),
                "qemu-system-x86 ovmf",
            ),
            Firmware::UefiArm64 => (
                "qemu-system-aarch64",
                Some((AAVMF_CODE, AAVMF_VARS)),
                "qemu-system-arm qemu-efi-aarch64",
            ),
        }
    }
}

/// One lab node's hardware.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeSpec {
    pub memory_mib: u32,
    pub cpus: u32,
    /// A virtio disk of this many MiB, if any.
    pub disk_mib: Option<u64>,
    /// An NVMe disk of this many MiB, if any.
    pub nvme_mib: Option<u64>,
    /// The SMBIOS system serial number, if set.
    pub serial: Option<String>,
    /// This node's firmware, if not the lab's.
    pub firmware: Option<Firmware>,
}

impl NodeSpec {
    pub fn with_memory(memory_mib: u32) -> Self {
        NodeSpec {
            memory_mib,
            cpus: 1,
            disk_mib: None,
            nvme_mib: None,
            serial: None,
            firmware: None,
        }
    }
}

impl std::str::FromStr for NodeSpec {
    type Err = String;

    /// `mem=1024,cpus=2,disk=2048,nvme=1024,serial=SN1,firmware=uefi` (sizes in MiB; all
    /// optional).
    fn from_str(s: &str) -> Result<Self, String> {
        let mut spec = NodeSpec::with_memory(512);
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}` is not KEY=VALUE"))?;
            let num = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| format!("`{k}={v}`: not a number"))
            };
            match k {
                "mem" => spec.memory_mib = num(v)? as u32,
                "cpus" => spec.cpus = num(v)?.max(1) as u32,
                "disk" => spec.disk_mib = Some(num(v)?),
                "nvme" => spec.nvme_mib = Some(num(v)?),
                "serial"
                    if !v.is_empty()
                        && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
                {
                    spec.serial = Some(v.to_string())
                }
                "serial" => return Err(format!("serial `{v}`: letters, digits and '-' only")),
                "firmware" => {
                    spec.firmware = Some(match v {
                        "bios" => Firmware::Bios,
                        "uefi" => Firmware::Uefi,
                        "uefi-arm64" => Firmware::UefiArm64,
                        _ => return Err(format!("firmware `{v}`: bios, uefi or uefi-arm64")),
                    })
                }
                _ => {
                    return Err(format!(
                        "unknown key `{k}` (mem, cpus, disk, nvme, serial, firmware)"
                    ));
                }
            }
        }
        Ok(spec)
    }
}

#[derive(Debug, Clone)]
pub struct LabOptions {
    pub nodes: Vec<NodeSpec>,
    pub firmware: Firmware,
    pub dir: PathBuf,
    pub firmware_dir: PathBuf,
    pub discovery_kernel: PathBuf,
    pub discovery_initrd: PathBuf,
    pub discovery_cmdline: String,
    /// A rack plan imported into the appliance before it starts.
    pub plan: Option<PathBuf>,
    /// Stop after this long even if nodes are still running.
    pub timeout: Duration,
    /// A node is also done once its console shows this text.
    pub until: Option<String>,
}

/// What the lab saw of one node, written to `DIR/summary.json` at the end.
#[derive(Debug, Serialize)]
pub struct NodeSummary {
    pub mac: String,
    pub spec: NodeSpec,
    /// When QEMU was started (Unix ms).
    pub powered_on_ms: i64,
    pub firmware: Firmware,
    pub console: PathBuf,
    /// Whether the node powered off by itself before the timeout.
    pub exited: bool,
    /// Whether its console showed the `until` text before the timeout.
    pub until_seen: bool,
    /// `GET /api/v1/nodes/{mac}` from the appliance, while it still ran.
    pub api: serde_json::Value,
    /// What the node sent, by destination ([`traffic`]); null where `nft` was missing.
    pub traffic: Option<traffic::Traffic>,
}

/// Removes, on drop, what the lab made: processes by PID, then the namespace (with its
/// bridge and taps).
struct Cleanup {
    ns: String,
    children: Vec<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.start_kill();
        }
        for c in &mut self.children {
            if let Some(pid) = c.id() {
                // Reap synchronously: the runtime may be going away.
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
            }
        }
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.ns])
            .status();
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .context("cannot run `ip` (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub fn node_mac(i: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0x00, 0x99, 0x00, i])
}

/// How many times the lab restarts an appliance that died, as a service manager would.
const APPLIANCE_RESTARTS: u32 = 5;

/// Starts the appliance in the lab's namespace, appending to its log, and writes its PID to
/// `DIR/appliance.pid` (`ip netns exec` execs it, so the child's PID is the appliance's).
fn spawn_appliance(
    opts: &LabOptions,
    ns: &str,
    data: &Path,
    app_log: &Path,
) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("cannot find this program")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(app_log)?;
    let child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(&exe)
        .args([
            "up",
            // The lab's network reaches nothing outside: what nodes need is given below.
            "--offline",
            "--interface",
            "br0",
            "--dhcp",
            "full",
            "--dhcp-range",
            LAB_RANGE,
        ])
        .arg("--data-dir")
        .arg(data)
        .arg("--firmware-dir")
        .arg(&opts.firmware_dir)
        .args([
            "--http-listen",
            &format!("{LAB_ADDR}:8080"),
            "--tftp-listen",
            &format!("{LAB_ADDR}:69"),
        ])
        .arg("--discovery-kernel")
        .arg(&opts.discovery_kernel)
        .arg("--discovery-initrd")
        .arg(&opts.discovery_initrd)
        .args(["--discovery-cmdline", &opts.discovery_cmdline])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start the appliance")?;
    if let Some(pid) = child.id() {
        std::fs::write(opts.dir.join("appliance.pid"), format!("{pid}\n"))?;
    }
    Ok(child)
}

/// Runs the lab; returns what each node did.
pub async fn run(opts: LabOptions) -> anyhow::Result<Vec<NodeSummary>> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the lab needs root (network namespaces and taps)");
    }
    for f in [&opts.discovery_kernel, &opts.discovery_initrd] {
        if !f.is_file() {
            bail!("discovery image file {} does not exist", f.display());
        }
    }
    let firmware_of = |spec: &NodeSpec| spec.firmware.unwrap_or(opts.firmware);
    for spec in &opts.nodes {
        let (_, uefi, packages) = firmware_of(spec).machine();
        if let Some((code, _)) = uefi
            && !Path::new(code).is_file()
        {
            bail!("{code} is missing (apt-get install {packages})");
        }
    }
    std::fs::create_dir_all(&opts.dir)
        .with_context(|| format!("cannot create {}", opts.dir.display()))?;
    let ns = format!("pvlab{}", std::process::id());
    ip(&["netns", "add", &ns])?;
    let mut lab = Cleanup {
        ns: ns.clone(),
        children: Vec::new(),
    };
    ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    ip(&["-n", &ns, "link", "add", "br0", "type", "bridge"])?;
    ip(&[
        "-n",
        &ns,
        "addr",
        "add",
        &format!("{LAB_ADDR}/24"),
        "dev",
        "br0",
    ])?;
    ip(&["-n", &ns, "link", "set", "br0", "up"])?;
    if opts.nodes.is_empty() || opts.nodes.len() > 100 {
        bail!("a lab has 1 to 100 nodes");
    }
    for i in 0..opts.nodes.len() {
        let tap = format!("tap{i}");
        ip(&["-n", &ns, "tuntap", "add", "dev", &tap, "mode", "tap"])?;
        ip(&["-n", &ns, "link", "set", &tap, "master", "br0"])?;
        ip(&["-n", &ns, "link", "set", &tap, "up"])?;
    }
    // Every packet a node sends is counted by destination: the appliance, the segment, or
    // elsewhere (which a sovereign node never has).
    let watch = match traffic::start(&ns, opts.nodes.len(), LAB_ADDR) {
        Ok(w) => Some(w),
        Err(e) => {
            warn!(error = %e, "the nodes' traffic is not counted");
            None
        }
    };

    let app_log = opts.dir.join("appliance.log");
    let data = opts.dir.join("data");
    if let Some(plan) = &opts.plan {
        let config = crate::config::Config::merge(
            crate::config::FileConfig::default(),
            crate::config::Overrides {
                data_dir: Some(data.clone()),
                ..Default::default()
            },
        )?;
        let n = crate::admin::import_plan(&config, plan).await?;
        info!(plan = %plan.display(), slots = n, "rack plan imported");
    }
    std::fs::File::create(&app_log)?;
    let appliance = spawn_appliance(&opts, &ns, &data, &app_log)?;
    lab.children.push(appliance);
    wait_for_log(&app_log, "DHCP serving", Duration::from_secs(60)).await?;
    info!(ns = %ns, log = %app_log.display(), "appliance up on the lab network");

    let mut nodes = Vec::new();
    for (i, spec) in opts.nodes.iter().enumerate() {
        let i = i as u8;
        let console = opts.dir.join(format!("node{i}.console"));
        let firmware = firmware_of(spec);
        let (qemu, uefi, packages) = firmware.machine();
        let mut cmd = Command::new("ip");
        // A reboot resets the VM, as a server's does; powering off ends QEMU.
        cmd.args(["netns", "exec", &ns, qemu, "-accel", "tcg"])
            // -nographic: SeaBIOS and the NIC's iPXE ROM print to the serial line too.
            .args([
                "-m",
                &spec.memory_mib.to_string(),
                "-smp",
                &spec.cpus.to_string(),
                "-nographic",
                "-monitor",
                "none",
            ])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .args([
                "-netdev",
                &format!("tap,id=n0,ifname=tap{i},script=no,downscript=no"),
            ]);
        let mac = node_mac(i);
        // Disks boot after the network, in this order, as a server's boot order has them.
        for (bootindex, (kind, size)) in [("virtio", spec.disk_mib), ("nvme", spec.nvme_mib)]
            .into_iter()
            .enumerate()
        {
            let Some(mib) = size else { continue };
            let path = opts.dir.join(format!("node{i}.{kind}.img"));
            // Sparse, and kept: a second lab in the same DIR powers the same nodes on again.
            let disk = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            if disk.metadata()?.len() != mib << 20 {
                disk.set_len(mib << 20)?;
            }
            let id = format!("{kind}{i}");
            cmd.arg("-drive").arg(format!(
                "file={},if=none,id={id},format=raw",
                path.display()
            ));
            let bootindex = bootindex + 2;
            cmd.args([
                "-device",
                &match kind {
                    "nvme" => format!("nvme,drive={id},serial=LABNVME{i},bootindex={bootindex}"),
                    _ => {
                        format!("virtio-blk-pci,drive={id},serial=LABDISK{i},bootindex={bootindex}")
                    }
                },
            ]);
        }
        if let Some(serial) = &spec.serial {
            cmd.args(["-smbios", &format!("type=1,serial={serial}")]);
        }
        match firmware {
            Firmware::Bios => {
                cmd.args([
                    "-device",
                    &format!("virtio-net-pci,netdev=n0,mac={mac},bootindex=1"),
                ]);
            }
            Firmware::Uefi | Firmware::UefiArm64 => {
                let (code, vars_template) = uefi.expect("UEFI firmware has its files");
                if firmware == Firmware::UefiArm64 {
                    cmd.args(["-machine", "virt", "-cpu", "cortex-a57"]);
                }
                // The node's NVRAM, kept like its disks.
                let vars = opts.dir.join(format!("node{i}.vars.fd"));
                if !vars.is_file() {
                    std::fs::copy(vars_template, &vars)
                        .with_context(|| format!("cannot copy {vars_template}"))?;
                }
                cmd.args([
                    "-drive",
                    &format!("if=pflash,format=raw,readonly=on,file={code}"),
                ])
                .arg("-drive")
                .arg(format!("if=pflash,format=raw,file={}", vars.display()))
                .args([
                    "-device",
                    &format!("virtio-net-pci,netdev=n0,mac={mac},romfile=,bootindex=1"),
                ]);
            }
        }
        let qemu_log = std::fs::File::create(opts.dir.join(format!("node{i}.qemu.log")))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(qemu_log.try_clone()?)
            .stderr(qemu_log)
            .spawn()
            .with_context(|| format!("cannot start {qemu} (apt-get install {packages})"))?;
        // `ip netns exec` execs QEMU: this PID is the node's (pulling its plug kills it).
        if let Some(pid) = child.id() {
            std::fs::write(opts.dir.join(format!("node{i}.pid")), format!("{pid}\n"))?;
        }
        info!(node = i, %mac, console = %console.display(), "node powered on");
        lab.children.push(child);
        nodes.push((mac, console, crate::clock::now_ms()));
    }

    // Wait for every node to power off, the timeout, or Ctrl-C / SIGTERM.
    let mut term = signal(SignalKind::terminate())?;
    let deadline = tokio::time::Instant::now() + opts.timeout;
    let mut exited = vec![false; nodes.len()];
    let mut until_seen = vec![false; nodes.len()];
    let mut restarts = 0;
    loop {
        for (i, done) in exited.iter_mut().enumerate() {
            if !*done && matches!(lab.children[i + 1].try_wait(), Ok(Some(_))) {
                *done = true;
                info!(node = i, "node powered off");
            }
        }
        if let Some(text) = &opts.until {
            for (i, seen) in until_seen.iter_mut().enumerate() {
                if !*seen
                    // Firmware writes bytes that are not UTF-8 to the console.
                    && std::fs::read(&nodes[i].1)
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(text.as_str()))
                {
                    *seen = true;
                    info!(node = i, "node's console showed the --until text");
                }
            }
        }
        if let Ok(Some(status)) = lab.children[0].try_wait() {
            if restarts == APPLIANCE_RESTARTS {
                bail!(
                    "the appliance died {restarts} times; see {}",
                    app_log.display()
                );
            }
            restarts += 1;
            warn!(%status, restarts, "the appliance died; restarting it");
            lab.children[0] = spawn_appliance(&opts, &ns, &data, &app_log)?;
        }
        if exited.iter().zip(&until_seen).all(|(e, u)| *e || *u) {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = tokio::time::sleep_until(deadline) => { warn!("lab timeout; stopping the nodes"); break; }
            _ = tokio::signal::ctrl_c() => { warn!("interrupted; removing the lab"); break; }
            _ = term.recv() => { warn!("terminated; removing the lab"); break; }
        }
    }

    let counted = match watch.as_ref().map(traffic::Watch::read) {
        Some(Ok(t)) => t.into_iter().map(Some).collect(),
        Some(Err(e)) => {
            warn!(error = %e, "cannot read the nodes' traffic counters");
            vec![None; nodes.len()]
        }
        None => vec![None; nodes.len()],
    };
    let mut summary = Vec::new();
    for (i, (mac, console, powered_on_ms)) in nodes.into_iter().enumerate() {
        let api = settled_node(&ns, mac).await;
        summary.push(NodeSummary {
            mac: mac.to_string(),
            spec: opts.nodes[i].clone(),
            powered_on_ms,
            firmware: opts.nodes[i].firmware.unwrap_or(opts.firmware),
            console,
            exited: exited[i],
            until_seen: until_seen[i],
            api,
            traffic: counted[i].clone(),
        });
        if let Some(t) = &counted[i]
            && t.elsewhere > 0
        {
            warn!(node = i, packets = t.elsewhere, destinations = ?t.elsewhere_destinations,
                "the node sent packets to destinations other than the appliance");
        }
    }
    std::fs::write(
        opts.dir.join("summary.json"),
        serde_json::to_vec_pretty(&summary)?,
    )?;
    drop(lab);
    Ok(summary)
}

/// The node's record from the API once the boot journal has caught up: events are written
/// in ticks, and a node that calls back and powers off at once is faster than a tick.
async fn settled_node(ns: &str, mac: MacAddr) -> serde_json::Value {
    let get = || {
        http_get_in_netns(
            ns,
            SocketAddr::from((LAB_ADDR, 8080)),
            &format!("/api/v1/nodes/{mac}"),
        )
        .ok()
        .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
        .unwrap_or(serde_json::Value::Null)
    };
    let mut last = get();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = get();
        if now == last {
            break;
        }
        last = now;
    }
    last
}

async fn wait_for_log(path: &Path, needle: &str, limit: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return Ok(());
        }
        if text.contains("Error:") || tokio::time::Instant::now() >= deadline {
            bail!(
                "the appliance did not start; its log ({}):\n{text}",
                path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A plain HTTP GET made from inside namespace `ns` (a thread enters it), so the lab needs no
/// route into its private network.
fn http_get_in_netns(ns: &str, addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let ns_path = format!("/var/run/netns/{ns}");
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    std::thread::spawn(move || -> anyhow::Result<String> {
        let f = std::fs::File::open(&ns_path)?;
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(request.as_bytes())?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        Ok(resp
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("HTTP thread panicked"))?
}
