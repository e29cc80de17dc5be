//! A site for page tests: the appliance on loopback with a rack plan imported, and nodes
//! that boot and report through its real HTTP API (curl).

use std::path::Path;
use std::process::Command;

use super::{ON_LOOPBACK, Running};

/// A response: status, Content-Type and body.
pub struct Page {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

pub fn fetch(url: &str, extra: &[&str]) -> Page {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(["-w", "\n%{http_code} %{content_type}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", ""));
    let (status, content_type) = tail.split_once(' ').unwrap_or((tail, ""));
    Page {
        status: status.parse().unwrap_or(0),
        content_type: content_type.to_string(),
        body: body.to_string(),
    }
}

pub fn html(url: &str) -> String {
    let page = fetch(url, &[]);
    assert_eq!(page.status, 200, "{url}: {}", page.body);
    assert_eq!(page.content_type, "text/html; charset=utf-8", "{url}");
    page.body
}

/// The appliance on loopback with `plan` (CSV) imported into its data dir first.
pub struct Site {
    pub dir: tempfile::TempDir,
    app: Running,
    args: Vec<String>,
    pub base: String,
    /// `https://127.0.0.1:PORT` when the site was started with `--https-listen`.
    pub https: Option<String>,
}

impl Site {
    /// The appliance killed (SIGKILL, by PID) and started again on the same store; its HTTP
    /// port changes.
    pub fn restart(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let _ = self.app.child.kill();
        let _ = self.app.child.wait();
        self.app = Running::start(&args);
        self.base = format!("http://{}", self.app.addr("HTTP listening"));
        if self.https.is_some() {
            self.https = Some(format!("https://{}", self.app.addr("HTTPS listening")));
        }
    }

    /// The appliance's command line, as `provisioner` runs it on the site's store.
    pub fn cli(&self, args: &[&str]) -> String {
        super::cli(&self.dir.path().join("data"), args)
    }
}

pub fn import(plan: &str, dir: &Path) {
    let file = dir.join("plan.csv");
    std::fs::write(&file, plan).expect("write the plan");
    super::cli(
        &dir.join("data"),
        &["plan", "import", file.to_str().expect("UTF-8")],
    );
}

pub fn site(plan: &str) -> Site {
    site_seeded(plan, |_| {})
}

/// Like `site`, with `seed` run on the data dir after the import, before the appliance starts.
pub fn site_seeded(plan: &str, seed: impl FnOnce(&Path)) -> Site {
    site_with(plan, seed, &[])
}

/// Like `site_seeded`, with more flags for `up`.
pub fn site_with(plan: &str, seed: impl FnOnce(&Path), extra: &[&str]) -> Site {
    let dir = tempfile::tempdir().expect("tempdir");
    import(plan, dir.path());
    seed(&dir.path().join("data"));
    let path = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(dir.path().join("kernel"), b"not really a kernel").unwrap();
    std::fs::write(dir.path().join("initrd"), b"not really an initrd").unwrap();
    let (data, fw, kernel, initrd) = (
        path("data"),
        path("firmware"),
        path("kernel"),
        path("initrd"),
    );
    let mut args: Vec<&str> = ON_LOOPBACK.to_vec();
    args.extend([
        "--data-dir",
        &data,
        "--firmware-dir",
        &fw,
        "--discovery-kernel",
        &kernel,
        "--discovery-initrd",
        &initrd,
    ]);
    args.extend(extra);
    let mut app = Running::start(&args);
    let base = format!("http://{}", app.addr("HTTP listening"));
    let https = extra
        .contains(&"--https-listen")
        .then(|| format!("https://{}", app.addr("HTTPS listening")));
    Site {
        https,
        args: args.iter().map(|a| a.to_string()).collect(),
        dir,
        app,
        base,
    }
}

/// The node fetches its boot script (and so is `inspecting`); returns its agent token.
pub fn boot(base: &str, mac: &str) -> String {
    let script = fetch(&format!("{base}/boot/{}.ipxe", mac.replace(':', "-")), &[]);
    assert_eq!(script.status, 200, "{}", script.body);
    script
        .body
        .split_whitespace()
        .find_map(|w| w.strip_prefix("provisioner.token="))
        .unwrap_or_else(|| panic!("no agent token in:\n{}", script.body))
        .to_string()
}

/// The node's agent reports its facts; returns the state the appliance put it in.
pub fn inspect(base: &str, mac: &str, serial: &str) -> String {
    let token = boot(base, mac);
    let mut facts = provisioner_protocol::Facts::default();
    facts.dmi.product_serial = Some(serial.to_string());
    facts.memory.total_bytes = 2 << 30;
    facts.nics.push(provisioner_protocol::Nic {
        name: "eth0".into(),
        mac: mac.into(),
        driver: None,
        pci_address: None,
        speed_mbps: None,
        carrier: Some(true),
    });
    let reply = report(base, mac, &token, &facts);
    assert!(
        (200..300).contains(&reply.status),
        "inspection of {mac}: {} {}",
        reply.status,
        reply.body
    );
    let reply: serde_json::Value = serde_json::from_str(&reply.body).expect("a JSON reply");
    reply["state"].as_str().unwrap_or_default().to_string()
}

/// The agent on `mac` posts its inspection report on `token`; the response.
pub fn report(base: &str, mac: &str, token: &str, facts: &provisioner_protocol::Facts) -> Page {
    let body = serde_json::json!({ "mac": mac, "facts": facts });
    fetch(
        &format!("{base}{}", provisioner_protocol::PATH_INSPECTION),
        &[
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body.to_string(),
        ],
    )
}

/// Facts of an HGX H100: 8 GPUs (10de:2330), 2 TiB.
pub fn h100_facts(serial: &str) -> provisioner_protocol::Facts {
    let mut f = provisioner_protocol::Facts::default();
    f.dmi.product_serial = Some(serial.into());
    f.memory.total_bytes = 2 << 40;
    for i in 0..8 {
        let address = format!("0000:{:02x}:00.0", 0x18 + i);
        f.pci.push(provisioner_protocol::PciDevice {
            address: address.clone(),
            vendor: 0x10de,
            device: 0x2330,
            class: 0x030200,
            ..Default::default()
        });
        f.gpus.push(address);
    }
    f
}

/// The report the agent printed on a real H100, its one GPU at each of `ids`; the node's
/// other devices as they were.
pub fn h100_report(mac: &str, ids: &[String]) -> provisioner_protocol::burnin::BurnInReport {
    use provisioner_protocol::burnin::{BurnInReport, DeviceKind, DeviceResult, Measurement};
    let real: BurnInReport =
        serde_json::from_str(&super::nvidia::fixture("h100-agent-run", "report.json"))
            .expect("the fixture is a report");
    let (gpus, others): (Vec<DeviceResult>, Vec<DeviceResult>) = real
        .devices
        .into_iter()
        .partition(|d| d.kind == Some(DeviceKind::Gpu));
    let mut gpu = gpus.into_iter().next().expect("the fixture has a GPU");
    // The run was on a single-GPU VM, with no GPU-to-GPU copy: a healthy NVLink 4 figure, so
    // that the node passes and its figures are a cohort.
    gpu.measurements.insert(
        "p2p".into(),
        Measurement {
            value: 370.0,
            unit: "GB/s".into(),
            attempt: 1,
        },
    );
    let mut devices: Vec<DeviceResult> = ids
        .iter()
        .map(|id| DeviceResult {
            id: id.clone(),
            ..gpu.clone()
        })
        .collect();
    devices.extend(others);
    BurnInReport {
        mac: mac.parse().ok(),
        devices,
    }
}

/// Takes `mac` through inspection and installation to its burn-in `report`, through the
/// lifecycle on the store in `data` (installation has no API yet), before the appliance runs.
pub fn burned_in(
    data: &Path,
    mac: &str,
    serial: &str,
    report: &provisioner_protocol::burnin::BurnInReport,
) {
    use provisioner::lifecycle::machine::{Actor, Input};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let pool = provisioner::store::open(data, provisioner::store::SyncMode::Normal)
            .await
            .expect("the store");
        let skus =
            provisioner::lifecycle::plan::Skus::parse(provisioner::lifecycle::plan::SHIPPED_SKUS)
                .expect("the shipped SKUs");
        let profiles = provisioner::burnin::profile::Profiles::parse(
            provisioner::burnin::profile::SHIPPED_PROFILES,
        )
        .expect("the shipped profiles");
        let lc = provisioner::lifecycle::Lifecycle::open(
            pool.clone(),
            skus,
            profiles,
            provisioner::lifecycle::Timeouts::default(),
            provisioner::lifecycle::admission::NewNodes::default(),
        )
        .await
        .expect("the lifecycle");
        let who = provisioner::lifecycle::admission::Requester::unknown([127, 0, 0, 1].into());
        let token = lc
            .boot_requested(
                mac.parse().expect("a MAC"),
                &who,
                provisioner::boot::Available { discovery: true },
            )
            .await
            .expect("a boot")
            .token
            .expect("an agent token");
        let inspection = provisioner_protocol::InspectionReport {
            mac: mac.parse().expect("a MAC"),
            facts: h100_facts(serial),
        };
        lc.report(Some(&token), &inspection)
            .await
            .expect("inspected");
        for input in [
            Input::InstallStarted {
                what: "installing in the test".into(),
            },
            Input::DiskWritten,
            Input::Installed,
        ] {
            lc.apply_input(mac, input, &Actor::Appliance)
                .await
                .expect("installed");
        }
        lc.burnin(Some(&token), report).await.expect("judged");
        pool.close().await;
    });
}
