//! `provisioner-agent`: reads the kernel command line, brings up the boot interface, reports
//! the node's facts to the appliance and does what it says next. Every line it prints starts
//! with `provisioner-agent:` so a serial console can be grepped, and it never exits without
//! saying why.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use std::{fs, io, thread};

use provisioner_agent::appliance::Appliance;
use provisioner_agent::args::{Options, USAGE};
use provisioner_agent::cmdline::BootParams;
use provisioner_agent::netup::{self, Up};
use provisioner_agent::power::{self, PowerAction};
use provisioner_agent::progress::Progress;
use provisioner_agent::session::{self, Ending, Node};
use provisioner_agent::{burnin, facts, installing};
use provisioner_protocol::Facts;
use provisioner_protocol::MacAddr;
use provisioner_protocol::burnin::{BurnInPlan, BurnInReport};
use provisioner_protocol::install::{
    InstallPlan, InstallReport, InstalledReport, NodeRecord, TargetDisk,
};

/// A call to the appliance that takes longer than this is failed and retried.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

fn say(line: &str) {
    eprintln!("provisioner-agent: {line}");
}

fn main() -> ExitCode {
    // A crash is an exit too: say it in the line a console reader greps for.
    std::panic::set_hook(Box::new(|info| say(&format!("crashed: {info}"))));
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(e) => {
            say(&format!("{e}"));
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if options.help {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if options.once {
        return print_facts(&options.root);
    }
    if let Some(plan) = &options.burn_in {
        return burn_in_here(plan, &options.root);
    }
    if let Some((plan, device)) = &options.write_image {
        return write_image_here(plan, device);
    }
    if let Some(set) = &options.verify_drivers {
        return verify_drivers_here(set, &options);
    }
    let ran = match &options.installed {
        Some(record) => run_installed(record, &options),
        None => run(&options),
    };
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            say(&why);
            ExitCode::FAILURE
        }
    }
}

/// `--once`: the facts as JSON on stdout, for a technician or a test.
fn print_facts(root: &Path) -> ExitCode {
    let facts = facts::collect(root);
    if !print_json(&facts, "the facts") {
        return ExitCode::FAILURE;
    }
    say(&format!(
        "printed facts ({} PCI devices, {} GPUs, {} disks, {} problems)",
        facts.pci.len(),
        facts.gpus.len(),
        facts.disks.len(),
        facts.problems.len()
    ));
    ExitCode::SUCCESS
}

/// `--write-image PLAN --to DEVICE`: an install's write without an appliance (a technician
/// restoring a disk, the install benchmark); the summary as JSON on stdout.
fn write_image_here(plan: &Path, device: &Path) -> ExitCode {
    let plan: InstallPlan = match fs::read_to_string(plan)
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
    {
        Ok(plan) => plan,
        Err(e) => {
            say(&format!(
                "cannot read the install plan {}: {e}",
                plan.display()
            ));
            return ExitCode::from(2);
        }
    };
    let source = provisioner_agent::install::ImageSource::from(&plan);
    let options = provisioner_agent::install::WriteOptions::default();
    match provisioner_agent::install::write_image(&source, device, &options, &mut |p| {
        say(&format!("install: {p}"))
    }) {
        Ok(done) => {
            let summary = serde_json::json!({
                "image_bytes": done.image_bytes,
                "disk_bytes": done.disk_bytes,
                "mapped_bytes": done.mapped_bytes,
                "received_bytes": done.received_bytes,
                "written_bytes": done.written_bytes,
                "retries": done.retries,
                "seconds": done.seconds,
            });
            if print_json(&summary, "the summary") {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            say(&format!("install failed at {}: {e}", e.stage()));
            ExitCode::FAILURE
        }
    }
}

/// `value` as pretty JSON on stdout; says so on the console and returns false if it cannot.
fn print_json(value: &impl serde::Serialize, what: &str) -> bool {
    let written = serde_json::to_writer_pretty(io::stdout().lock(), value)
        .map_err(io::Error::from)
        .and_then(|()| writeln!(io::stdout()));
    if let Err(e) = written {
        say(&format!("cannot print {what}: {e}"));
        return false;
    }
    true
}

/// `--verify-drivers SET`: the driver checks here, or on an image's tree (`--root`); the
/// report as JSON on stdout.
fn verify_drivers_here(set: &Path, options: &Options) -> ExitCode {
    use provisioner_agent::drivers;
    let set: provisioner_protocol::drivers::DriverSet = match fs::read_to_string(set)
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
    {
        Ok(set) => set,
        Err(e) => {
            say(&format!(
                "cannot read the driver set {}: {e}",
                set.display()
            ));
            return ExitCode::from(2);
        }
    };
    let live = options.live();
    let kernel = match (&options.kernel, live) {
        (Some(k), _) => k.clone(),
        (None, true) => drivers::running_kernel(),
        (None, false) => match drivers::installed_kernel(&options.root) {
            Ok(k) => k,
            Err(e) => {
                say(&e);
                return ExitCode::from(2);
            }
        },
    };
    let sys = Path::new("/sys");
    let report = drivers::verify(&set, &options.root, &kernel, live.then_some(sys));
    if !print_json(&report, "the report") {
        return ExitCode::FAILURE;
    }
    match report.failed() {
        Some(c) => {
            say(&format!(
                "driver set {}: {} failed: {}",
                set.name, c.check, c.detail
            ));
            ExitCode::FAILURE
        }
        None => {
            say(&format!(
                "driver set {}: every check held for kernel {kernel}",
                set.name
            ));
            ExitCode::SUCCESS
        }
    }
}

/// `--burn-in PLAN`: the burn-in run here, without an appliance (a technician's check of a
/// node, a profile measured on a new card); the report as JSON on stdout.
fn burn_in_here(plan: &Path, root: &Path) -> ExitCode {
    let plan: BurnInPlan = match fs::read_to_string(plan)
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
    {
        Ok(plan) => plan,
        Err(e) => {
            say(&format!("cannot read the plan {}: {e}", plan.display()));
            return ExitCode::from(2);
        }
    };
    let facts = facts::collect(root);
    let report = burnin::run(&plan, &facts, &mut |line: &str| say(line));
    if !print_json(&report, "the report") {
        return ExitCode::FAILURE;
    }
    let unvalidated = report
        .devices
        .iter()
        .filter(|d| d.cannot_validate.is_some())
        .count();
    say(&format!(
        "printed the burn-in report ({} devices, {unvalidated} not validated)",
        report.devices.len()
    ));
    ExitCode::SUCCESS
}

/// The agent's life: set up, converse with the appliance, go down as told. Returns why it
/// stopped when it cannot go on.
fn run(options: &Options) -> Result<(), String> {
    let cmdline = fs::read_to_string(&options.cmdline)
        .map_err(|e| format!("cannot read {}: {e}", options.cmdline.display()))?;
    let params = BootParams::parse(&cmdline).map_err(|e| format!("cannot start: {e}"))?;
    say(&format!(
        "starting: appliance {}, boot interface {}",
        params.url, params.mac
    ));
    if options.live() {
        match netup::bring_up(&options.root, &params.mac, &mut say) {
            Up::AlreadyUp(name) => say(&format!("{name} already has an address")),
            Up::Configured(name) => say(&format!("{name} got an address by DHCP")),
        }
    }
    let appliance = Appliance::new(&params.url, &params.token, CALL_TIMEOUT);
    let mut node = Console {
        root: options.root.clone(),
        url: params.url.clone(),
        mac: params.mac,
        progress: Progress::new(&appliance, params.mac, PROGRESS_EVERY),
    };
    let ending = session::run(&appliance, &params.mac, &mut node);
    go_down(ending, options.really_power_off)
}

/// `--installed RECORD`: the installed system's agent. The network is the system's own
/// (ifupdown, DHCP); the unit starts it once the network is online.
fn run_installed(record: &Path, options: &Options) -> Result<(), String> {
    let text = fs::read_to_string(record)
        .map_err(|e| format!("cannot read the node record {}: {e}", record.display()))?;
    let node: NodeRecord = serde_json::from_str(&text)
        .map_err(|e| format!("the node record {} is not one: {e}", record.display()))?;
    let kernel_release = fs::read_to_string(options.root.join("proc/sys/kernel/osrelease"))
        .map_err(|e| format!("cannot read the kernel release: {e}"))?
        .trim()
        .to_string();
    say(&format!(
        "installed system {} ({}, kernel {kernel_release}): appliance {}, boot interface {}",
        node.hostname, node.image, node.url, node.mac
    ));
    let appliance = Appliance::new(&node.url, &node.credential, CALL_TIMEOUT);
    let booted = InstalledReport {
        mac: node.mac,
        image: node.image.clone(),
        raw_sha256: node.raw_sha256.clone(),
        kernel_release,
    };
    let mut console = Console {
        root: options.root.clone(),
        url: node.url.clone(),
        mac: node.mac,
        progress: Progress::new(&appliance, node.mac, PROGRESS_EVERY),
    };
    let ending = session::run_installed(&appliance, &booted, &mut console);
    go_down(ending, options.really_power_off)
}

/// Powers off or reboots where that is the agent's job (see `power`); otherwise says what
/// it would have done (a technician's run, a test) and exits.
fn go_down(ending: Ending, really_power_off: bool) -> Result<(), String> {
    let (action, verb, reason) = match ending {
        Ending::PowerOff { reason } => (PowerAction::PowerOff, "power off", reason),
        Ending::Reboot { reason } => (PowerAction::Reboot, "reboot", reason),
    };
    if !(really_power_off || power::is_init() || power::in_initramfs()) {
        say(&format!(
            "would {verb} ({reason}); not in the initramfs, not PID 1 and no \
             --really-power-off, so exiting"
        ));
        return Ok(());
    }
    say(&format!("{verb}: {reason}"));
    // An installed system's services are stopped and its filesystems unmounted in order.
    if !(power::is_init() || power::in_initramfs()) {
        let how = match action {
            PowerAction::PowerOff => "poweroff",
            PowerAction::Reboot => "reboot",
        };
        match std::process::Command::new("systemctl").arg(how).status() {
            Ok(status) if status.success() => return Ok(()),
            Ok(status) => say(&format!("systemctl {how}: {status}; doing it directly")),
            Err(e) => say(&format!(
                "cannot run systemctl {how} ({e}); doing it directly"
            )),
        }
    }
    let e = power::now(action);
    Err(format!("cannot {verb}: {e}"))
}

/// How often burn-in progress goes to the appliance, at most.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The real node: the console is stderr, waits are real, facts come from `root`; burn-in
/// lines also go to the appliance.
struct Console<'a> {
    root: PathBuf,
    /// The appliance, as this agent reached it, and the boot interface: for the node record
    /// an install writes.
    url: String,
    mac: MacAddr,
    progress: Progress<&'a Appliance>,
}

impl Node for Console<'_> {
    fn say(&mut self, line: &str) {
        say(line);
    }

    fn sleep(&mut self, duration: Duration) {
        thread::sleep(duration);
    }

    fn facts(&mut self) -> Facts {
        facts::collect(&self.root)
    }

    fn burn_in(&mut self, plan: &BurnInPlan) -> BurnInReport {
        let facts = facts::collect(&self.root);
        self.with_progress(|line| burnin::run(plan, &facts, line))
    }

    fn wipe(&mut self, image: &str, disk: &TargetDisk) -> InstallReport {
        let facts = facts::collect(&self.root);
        installing::wipe(
            image,
            disk,
            &facts,
            &self.root.join("dev"),
            &mut |line: &str| say(line),
        )
    }

    fn verify_drivers(
        &mut self,
        set: &provisioner_protocol::drivers::DriverSet,
    ) -> provisioner_protocol::drivers::DriverReport {
        let kernel = provisioner_agent::drivers::running_kernel();
        let sys = self.root.join("sys");
        let mut report =
            provisioner_agent::drivers::verify(set, Path::new("/"), &kernel, Some(&sys));
        // The node's apt: only the appliance, and its suite verifies.
        let host = self
            .url
            .split_once("://")
            .map_or(self.url.as_str(), |(_, r)| r)
            .split([':', '/'])
            .next()
            .unwrap_or_default()
            .to_string();
        report
            .checks
            .push(provisioner_agent::drivers::apt_check(&host));
        report
    }

    fn install(&mut self, plan: &InstallPlan) -> InstallReport {
        let facts = facts::collect(&self.root);
        let dev = self.root.join("dev");
        let node = installing::node_record(plan, &self.url, self.mac);
        let efi = self.root.join("sys/firmware/efi");
        self.with_progress(|line| installing::run(plan, &facts, &dev, &efi, &node, line))
    }
}

impl Console<'_> {
    /// Runs a long step whose lines go to the console and, as progress, to the appliance.
    fn with_progress<T>(&mut self, step: impl FnOnce(&mut dyn FnMut(&str)) -> T) -> T {
        let progress = &mut self.progress;
        let result = step(&mut |line: &str| {
            say(line);
            if let Some(trouble) = progress.line(line, Instant::now()) {
                say(&trouble);
            }
        });
        if let Some(trouble) = progress.flush(Instant::now()) {
            say(&trouble);
        }
        result
    }
}
