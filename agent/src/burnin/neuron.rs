//! Burn-in of the node's AWS Neuron devices (Trainium2/3): which devices the driver sees and
//! their memory (`neuron-ls`), their hardware fault counters before and after (sysfs, both
//! layouts, and `neuron-monitor` where installed), and a checked all-reduce across every
//! NeuronCore (`nccom-test --check`) for the collective bandwidth. A missing driver or tool,
//! or one that hangs, makes every device it concerns "cannot validate": a failure, never a
//! pass.

pub mod ls;
pub mod monitor;
pub mod nccom;
pub mod sysfs;
pub mod tool;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use provisioner_protocol::Facts;
use provisioner_protocol::burnin::{BurnInPlan, DeviceKind, DeviceResult, Measurement, checks};

use ls::NeuronDevice;
use tool::{ToolError, Tools};

/// Each device's memory as neuron-ls reports it, GiB: a device short of memory is a fault
/// the appliance can see. Not a check with a floor of its own.
pub const DEVICE_MEMORY: &str = "device_memory";

const GIB: f64 = (1u64 << 30) as f64;

/// Where the burn-in looks: the machine's root (`/` on a node, a recorded tree in tests) and
/// the tools it runs (found in `PATH` on a node, scripts in tests).
pub struct Env {
    pub root: PathBuf,
    pub tools: Tools,
}

impl Env {
    pub fn node() -> Env {
        Env {
            root: PathBuf::from("/"),
            tools: Tools::find(&Tools::search_dirs()),
        }
    }
}

pub fn run(plan: &BurnInPlan, facts: &Facts, say: &mut dyn FnMut(&str)) -> Vec<DeviceResult> {
    run_in(plan, facts, &Env::node(), say)
}

/// The burn-in of the Neuron devices of `facts`, on the machine `env` describes.
pub fn run_in(
    plan: &BurnInPlan,
    facts: &Facts,
    env: &Env,
    say: &mut dyn FnMut(&str),
) -> Vec<DeviceResult> {
    let limit = Duration::from_secs(plan.tool_timeout_seconds.into());
    let attempt = if plan.only.is_empty() { 1 } else { 2 };
    let wanted = |id: &str| plan.only.is_empty() || plan.only.iter().any(|(d, _)| d == id);
    if !sysfs::driver_present(&env.root) {
        let why = format!("no Neuron driver (/{} missing)", sysfs::DEVICES);
        say(&format!("neuron: {why}"));
        return unvalidated(facts, &why, wanted);
    }
    let listed = match list(env, limit) {
        Ok(listed) => listed,
        Err(why) => {
            say(&format!("neuron: {why}"));
            return unvalidated(facts, &why, wanted);
        }
    };
    say(&format!("neuron: neuron-ls lists {} devices", listed.len()));
    let devices: Vec<(String, Option<&NeuronDevice>)> = ids(facts, &listed)
        .into_iter()
        .filter(|(id, _)| wanted(id))
        .collect();
    if devices.is_empty() {
        return Vec::new();
    }
    let before = counters(env, &devices);
    if let Some(Ok(first)) = before.values().next() {
        say(&format!(
            "neuron: hardware counters in sysfs, {}",
            match first.layout {
                sysfs::Layout::Before2_31 => "layout before driver 2.31 (stats/hardware)",
                sysfs::Layout::From2_31 => "layout of driver 2.31 or later (no stats/hardware)",
            }
        ));
    }
    let monitor_before = monitor(env, limit, say);
    let collective = collective(env, &listed, limit, say);
    let after = counters(env, &devices);
    let monitor_after = monitor_before
        .as_ref()
        .and_then(|_| monitor(env, limit, say));
    let seen = Seen {
        driver: sysfs::driver_version(&env.root),
        attempt,
        before,
        after,
        monitor: monitor_before.zip(monitor_after),
        collective,
    };
    devices
        .into_iter()
        .map(|(id, device)| seen.result(id, device, env))
        .collect()
}

/// What the run saw of the node, from which each device's result is drawn.
struct Seen {
    driver: Option<String>,
    attempt: u32,
    before: Readings,
    after: Readings,
    monitor: Option<(monitor::HwCounters, monitor::HwCounters)>,
    collective: Result<nccom::Collective, String>,
}

impl Seen {
    fn result(&self, id: String, device: Option<&NeuronDevice>, env: &Env) -> DeviceResult {
        let mut result = DeviceResult {
            id,
            kind: Some(DeviceKind::Neuron),
            driver: self.driver.clone(),
            ..Default::default()
        };
        let Some(device) = device else {
            result.cannot_validate = Some("not listed by neuron-ls".into());
            return result;
        };
        result.model = sysfs::device_name(&env.root, device.index);
        result.measurements.insert(
            DEVICE_MEMORY.into(),
            measure(device.memory_bytes as f64 / GIB, "GiB", self.attempt),
        );
        let mut problems = Vec::new();
        match (&self.before[&device.index], &self.after[&device.index]) {
            (Ok(b), Ok(a)) => result.counters = sysfs::rise(&b.values, &a.values),
            (Err(e), _) | (_, Err(e)) => problems.push(format!("hardware counters: {e}")),
        }
        if let Some((b, a)) = &self.monitor
            && let (Some(b), Some(a)) = (b.get(&device.index), a.get(&device.index))
        {
            // The same count from both sources is taken once, at its larger rise.
            for (name, rise) in sysfs::rise(b, a) {
                let counter = result.counters.entry(name).or_default();
                *counter = (*counter).max(rise);
            }
        }
        match &self.collective {
            Ok(run) => {
                // Which device computed wrong is not known: all of them carry it.
                result
                    .counters
                    .insert(checks::COLLECTIVE_WRONG_RESULTS.into(), run.wrong_results);
                if let Some(busbw) = run.busbw() {
                    result.measurements.insert(
                        checks::COLLECTIVE_BUSBW.into(),
                        measure(busbw, "GB/s", self.attempt),
                    );
                }
                if !run.failures.is_empty() {
                    problems.push(format!("nccom-test: {}", run.failures.join("; ")));
                }
            }
            Err(why) => problems.push(why.clone()),
        }
        if !problems.is_empty() {
            result.cannot_validate = Some(problems.join("; "));
        }
        result
    }
}

fn measure(value: f64, unit: &str, attempt: u32) -> Measurement {
    Measurement {
        value,
        unit: unit.into(),
        attempt,
    }
}

/// Every device of the facts, unvalidated for the same reason.
fn unvalidated(facts: &Facts, why: &str, wanted: impl Fn(&str) -> bool) -> Vec<DeviceResult> {
    facts
        .neuron_devices
        .iter()
        .filter(|id| wanted(id))
        .map(|id| DeviceResult {
            id: id.clone(),
            kind: Some(DeviceKind::Neuron),
            cannot_validate: Some(why.to_string()),
            ..Default::default()
        })
        .collect()
}

/// The devices as the facts (PCI) and neuron-ls know them: every one either knows, the
/// facts' first, so a device the driver does not list is reported, not dropped.
fn ids<'a>(facts: &Facts, listed: &'a [NeuronDevice]) -> Vec<(String, Option<&'a NeuronDevice>)> {
    let mut ids: Vec<(String, Option<&NeuronDevice>)> = facts
        .neuron_devices
        .iter()
        .map(|id| (id.clone(), listed.iter().find(|d| d.address == *id)))
        .collect();
    for device in listed {
        if !ids.iter().any(|(id, _)| *id == device.address) {
            ids.push((device.address.clone(), Some(device)));
        }
    }
    ids
}

/// neuron-ls's devices, or why there are none to test.
fn list(env: &Env, limit: Duration) -> Result<Vec<NeuronDevice>, String> {
    let Some(program) = &env.tools.neuron_ls else {
        return Err("neuron-ls not found".into());
    };
    let mut last = String::new();
    for args in ls::JSON_ARGS {
        match tool::run("neuron-ls", program, args, limit) {
            Ok(out) => {
                return ls::parse(&out.stdout)
                    .map_err(|e| format!("neuron-ls output not understood: {e}"));
            }
            // The other option, for a neuron-ls that knows only that one.
            Err(e @ ToolError::Failed { .. }) => last = e.to_string(),
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(last)
}

type Readings = BTreeMap<u32, Result<sysfs::Counters, String>>;

fn counters(env: &Env, devices: &[(String, Option<&NeuronDevice>)]) -> Readings {
    devices
        .iter()
        .filter_map(|(_, d)| *d)
        .map(|d| {
            (
                d.index,
                sysfs::read(&env.root, d.index).map_err(|e| e.to_string()),
            )
        })
        .collect()
}

/// neuron-monitor's counters, where it is installed and answers; it adds to sysfs, which
/// decides on its own whether a device can be validated.
fn monitor(env: &Env, limit: Duration, say: &mut dyn FnMut(&str)) -> Option<monitor::HwCounters> {
    let program = env.tools.neuron_monitor.as_ref()?;
    match monitor::snapshot(program, limit) {
        Ok(counters) => Some(counters),
        Err(e) => {
            say(&format!("neuron: {e}; counters from sysfs only"));
            None
        }
    }
}

/// The checked all-reduce over every NeuronCore, or why it could not be measured.
fn collective(
    env: &Env,
    listed: &[NeuronDevice],
    limit: Duration,
    say: &mut dyn FnMut(&str),
) -> Result<nccom::Collective, String> {
    let Some(program) = &env.tools.nccom_test else {
        return Err("nccom-test not found".into());
    };
    let ranks: u32 = listed.iter().map(|d| d.cores).sum();
    say(&format!(
        "neuron: nccom-test all-reduce over {ranks} NeuronCores"
    ));
    let args = nccom::args(ranks);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (output, failed) = match tool::run("nccom-test", program, &args, limit) {
        Ok(out) => (format!("{}\n{}", out.stdout, out.stderr), None),
        Err(ToolError::Failed { stdout, stderr, .. }) => {
            let why = format!("nccom-test failed{}", first_line(&stderr, &stdout));
            (format!("{stdout}\n{stderr}"), Some(why))
        }
        Err(e) => return Err(e.to_string()),
    };
    let run = nccom::parse(&output);
    for failure in &run.failures {
        say(&format!("neuron: nccom-test: {failure}"));
    }
    if run.wrong_results > 0 {
        say(&format!(
            "neuron: nccom-test --check: {} wrong results",
            run.wrong_results
        ));
    }
    // A wrong result or a size that did not run is the finding; the exit status only
    // repeats it.
    if run.wrong_results > 0 || !run.failures.is_empty() {
        return Ok(run);
    }
    if let Some(why) = failed {
        return Err(why);
    }
    match run.busbw() {
        Some(busbw) => {
            say(&format!("neuron: all-reduce bus bandwidth {busbw:.2} GB/s"));
            Ok(run)
        }
        None => Err("nccom-test reported no bus bandwidth".into()),
    }
}

fn first_line(stderr: &str, stdout: &str) -> String {
    stderr
        .lines()
        .chain(stdout.lines())
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| format!(": {l}"))
        .unwrap_or_default()
}
