//! The judgement of a node's burn-in: pure, from its report, its SKU's profile, how many
//! devices the SKU has, and the figures of its cohort. PASS / WARN / FAIL per check, per
//! device and per node, each with its reason. Exit codes never decide; numbers do.

use std::collections::BTreeMap;

use provisioner_protocol::burnin::{BurnInReport, DeviceKind, DeviceResult, checks, throttle};
use serde::{Deserialize, Serialize};

use super::profile::Profile;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Pass,
    Warn,
    Fail,
}

/// One check of one device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckVerdict {
    pub check: String,
    pub level: Level,
    pub reason: String,
    /// A performance failure on its first attempt: run it again before it counts.
    pub retry: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceVerdict {
    pub id: String,
    pub kind: Option<DeviceKind>,
    pub level: Level,
    pub checks: Vec<CheckVerdict>,
}

/// The node's verdict: the worst of its devices', and what must be run again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    pub level: Level,
    /// Checks to run again (device id, check) before the node is judged: the level is then
    /// only provisional.
    pub retry: Vec<(String, String)>,
    /// Node-level findings (missing devices).
    pub node: Vec<CheckVerdict>,
    pub devices: Vec<DeviceVerdict>,
    pub profile_version: u32,
}

impl Judgement {
    /// The reasons of every failed check, for the node's `failed` state.
    pub fn failures(&self) -> Vec<String> {
        let node = self.node.iter().filter(|c| c.level == Level::Fail);
        let devices = self.devices.iter().flat_map(|d| {
            d.checks
                .iter()
                .filter(|c| c.level == Level::Fail && !c.retry)
                .map(move |c| (Some(d), c))
        });
        node.map(|c| (None, c))
            .chain(devices)
            .map(|(d, c)| match d {
                Some(d) => format!("{} {}: {}", d.id, c.check, c.reason),
                None => c.reason.clone(),
            })
            .collect()
    }
}

/// Which cohort a figure belongs to: the same SKU (the caller's), kind of device, check,
/// driver and firmware.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CohortKey {
    pub kind: DeviceKind,
    pub check: String,
    pub driver: Option<String>,
    pub firmware: Option<String>,
}

impl CohortKey {
    pub fn of(d: &DeviceResult, kind: DeviceKind, check: &str) -> CohortKey {
        CohortKey {
            kind,
            check: check.to_string(),
            driver: d.driver.clone(),
            firmware: d.firmware.clone(),
        }
    }
}

/// The figures of other nodes' devices of the same SKU, by cohort.
pub type Cohort = BTreeMap<CohortKey, Vec<f64>>;

/// Fewer cohort figures than this say nothing about a median.
pub const MIN_COHORT: usize = 5;
/// How many MADs under the cohort median fail a device.
pub const COHORT_MADS: f64 = 4.0;
/// How far under the cohort median fails a device, as a fraction.
pub const COHORT_GAP: f64 = 0.05;

/// What the node must have, from its SKU and its slot of the rack plan.
#[derive(Clone, Debug, Default)]
pub struct Expected {
    /// Devices of each kind the SKU has.
    pub devices: BTreeMap<DeviceKind, u32>,
    /// NICs the slot is cabled for: how many must train at least at what speed (Mb/s).
    pub nics: Option<(u32, u32)>,
}

impl Expected {
    /// What a node of `sku` must have (an unknown SKU: no accelerators), and the NICs its
    /// slot is cabled for.
    pub fn of_sku(sku: Option<&crate::lifecycle::plan::Sku>, nics: Option<(u32, u32)>) -> Expected {
        Expected {
            devices: BTreeMap::from([
                (DeviceKind::Gpu, sku.map_or(0, |s| s.gpus)),
                (DeviceKind::Neuron, sku.map_or(0, |s| s.neuron_devices)),
            ]),
            nics,
        }
    }
}

pub fn judge(
    report: &BurnInReport,
    profile: &Profile,
    expected: &Expected,
    cohort: &Cohort,
) -> Judgement {
    let mut node = Vec::new();
    if let Some((count, mbps)) = expected.nics {
        node.extend(judge_links(report, count, mbps));
    }
    for (kind, want) in &expected.devices {
        let have = report
            .devices
            .iter()
            .filter(|d| d.kind == Some(*kind))
            .count() as u32;
        if have < *want {
            node.push(fail(
                "device_count",
                format!("{have} of {want} {} devices reported", kind_name(*kind)),
            ));
        }
    }
    let mates = node_medians(report);
    let devices: Vec<DeviceVerdict> = report
        .devices
        .iter()
        .map(|d| {
            let shared = shared_reasons(report, d);
            let alone = report.devices.iter().filter(|o| o.kind == d.kind).count() == 1;
            judge_device(d, profile, &mates, shared, cohort, alone)
        })
        .collect();
    let retry = devices
        .iter()
        .flat_map(|d| {
            d.checks
                .iter()
                .filter(|c| c.retry)
                .map(|c| (d.id.clone(), c.check.clone()))
        })
        .collect();
    let level = node
        .iter()
        .map(|c| c.level)
        .chain(devices.iter().map(|d| d.level))
        .max()
        .unwrap_or(Level::Pass);
    Judgement {
        level,
        retry,
        node,
        devices,
        profile_version: profile.version,
    }
}

/// At least `count` NICs must have trained at `mbps` or faster.
fn judge_links(report: &BurnInReport, count: u32, mbps: u32) -> Option<CheckVerdict> {
    let nics: Vec<&DeviceResult> = report
        .devices
        .iter()
        .filter(|d| d.kind == Some(DeviceKind::Nic))
        .collect();
    let speed = |d: &DeviceResult| d.measurements.get(checks::LINK_SPEED).map(|m| m.value);
    let fast = nics
        .iter()
        .filter(|d| speed(d).is_some_and(|v| v >= f64::from(mbps)))
        .count() as u32;
    if fast >= count {
        return None;
    }
    let slow: Vec<String> = nics
        .iter()
        .filter(|d| !speed(d).is_some_and(|v| v >= f64::from(mbps)))
        .map(|d| match (speed(d), &d.cannot_validate) {
            (_, Some(why)) => format!("{} {why}", d.id),
            (Some(v), None) => format!("{} at {v:.0} Mb/s", d.id),
            (None, None) => format!("{} with no speed", d.id),
        })
        .collect();
    Some(fail(
        "nic_links",
        format!(
            "{fast} of {count} planned NICs at {mbps} Mb/s or faster ({})",
            slow.join(", ")
        ),
    ))
}

fn fail(check: &str, reason: String) -> CheckVerdict {
    CheckVerdict {
        check: check.into(),
        level: Level::Fail,
        reason,
        retry: false,
    }
}

fn kind_name(k: DeviceKind) -> &'static str {
    match k {
        DeviceKind::Gpu => "GPU",
        DeviceKind::Neuron => "Neuron",
        DeviceKind::Cpu => "CPU",
        DeviceKind::Memory => "memory",
        DeviceKind::Disk => "disk",
        DeviceKind::Nic => "NIC",
    }
}

/// The median of each measurement over the node's devices of each kind.
fn node_medians(report: &BurnInReport) -> BTreeMap<(DeviceKind, String), (f64, usize)> {
    let mut values: BTreeMap<(DeviceKind, String), Vec<f64>> = BTreeMap::new();
    for d in &report.devices {
        let Some(kind) = d.kind else { continue };
        for (name, m) in &d.measurements {
            values
                .entry((kind, name.clone()))
                .or_default()
                .push(m.value);
        }
    }
    values
        .into_iter()
        .map(|(k, mut v)| {
            let n = v.len();
            (k, (median(&mut v), n))
        })
        .collect()
}

/// The throttle reasons every other device of `d`'s kind on the node also had: a power cap
/// they all ran under explains a floor, not a gap between them.
fn shared_reasons(report: &BurnInReport, d: &DeviceResult) -> u64 {
    report
        .devices
        .iter()
        .filter(|o| o.kind == d.kind && o.id != d.id)
        .filter_map(|o| o.conditions.as_ref().map(|c| c.throttle_reasons))
        .reduce(|a, b| a & b)
        .unwrap_or(0)
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Median absolute deviation.
pub fn mad(v: &[f64], median_of_v: f64) -> f64 {
    let mut dev: Vec<f64> = v.iter().map(|x| (x - median_of_v).abs()).collect();
    median(&mut dev)
}

/// How far under its floor a power cap or heat may excuse a figure.
pub const EXCUSE_DEPTH: f64 = 0.15;

/// Why a device ran slow without being faulty: a power cap or heat among `reasons`, with the
/// figures. A power cap excuses only a device that ran at its limit, and only a limit at least
/// the SKU's: a lowered limit is a fault, not an excuse.
fn slowed_by(d: &DeviceResult, reasons: u64, profile: &Profile) -> Option<String> {
    let c = d.conditions.as_ref()?;
    let r = reasons;
    let at_full_limit = match (c.power_max_w, c.power_limit_w) {
        (Some(max), Some(limit)) => {
            max >= 0.95 * limit && profile.power_limit_min_w.is_none_or(|least| limit >= least)
        }
        _ => false,
    };
    let power = r & (throttle::SW_POWER_CAP | throttle::HW_POWER_BRAKE) != 0 && at_full_limit;
    let heat = r & (throttle::SW_THERMAL | throttle::HW_THERMAL | throttle::HW_SLOWDOWN) != 0;
    let w = |x: Option<f64>| x.map(|v| format!("{v:.0} W")).unwrap_or_else(|| "?".into());
    match (power, heat) {
        (false, false) => None,
        (true, false) => Some(format!(
            "power-capped (reasons {r:#x}, {} of {} limit)",
            w(c.power_max_w),
            w(c.power_limit_w)
        )),
        (_, true) => Some(format!(
            "thermally throttled (reasons {r:#x}, up to {} °C)",
            c.temperature_max_c
                .map(|t| format!("{t:.0}"))
                .unwrap_or_else(|| "?".into())
        )),
    }
}

fn judge_device(
    d: &DeviceResult,
    profile: &Profile,
    mates: &BTreeMap<(DeviceKind, String), (f64, usize)>,
    shared: u64,
    cohort: &Cohort,
    alone: bool,
) -> DeviceVerdict {
    let mut checks = Vec::new();
    // A NIC's link is judged against the plan (`judge_links`): a spare port may be down.
    if let Some(why) = &d.cannot_validate
        && d.kind != Some(DeviceKind::Nic)
    {
        checks.push(fail("validate", format!("cannot validate: {why}")));
    }
    for name in &profile.must_be_zero {
        if let Some(n) = d.counters.get(name).filter(|n| **n > 0) {
            checks.push(fail(name, format!("{name} = {n} (must be 0)")));
        }
    }
    let (hard, soft): (Vec<u32>, Vec<u32>) = d
        .xids
        .iter()
        .partition(|x| profile.hardware_xids.contains(x));
    if !hard.is_empty() {
        checks.push(fail(
            "xid",
            format!("hardware XID {hard:?} in the kernel log"),
        ));
    }
    if !soft.is_empty() {
        checks.push(CheckVerdict {
            check: "xid".into(),
            level: Level::Warn,
            reason: format!("XID {soft:?} in the kernel log (application errors, not hardware)"),
            retry: false,
        });
    }
    // Slowness is excused only in a device that computes correctly: under a floor by any
    // power cap or heat, under its node-mates or cohort only by one they did not share.
    let correct = checks.iter().all(|c| c.level != Level::Fail);
    let reasons = d.conditions.as_ref().map_or(0, |c| c.throttle_reasons);
    let excuses = Excuses {
        floor: slowed_by(d, reasons, profile).filter(|_| correct),
        relative: slowed_by(d, reasons & !shared, profile).filter(|_| correct),
    };
    for floor in profile.floors.iter().filter(|f| Some(f.kind) == d.kind) {
        checks.push(judge_measurement(
            d, floor, profile, mates, cohort, &excuses, alone,
        ));
    }
    let level = checks
        .iter()
        .map(|c| if c.retry { Level::Warn } else { c.level })
        .max()
        .unwrap_or(Level::Pass);
    DeviceVerdict {
        id: d.id.clone(),
        kind: d.kind,
        level,
        checks,
    }
}

/// Why a slow device is not faulty, if it is not: against its floor, and against others.
struct Excuses {
    floor: Option<String>,
    relative: Option<String>,
}

fn judge_measurement(
    d: &DeviceResult,
    floor: &super::profile::Floor,
    profile: &Profile,
    mates: &BTreeMap<(DeviceKind, String), (f64, usize)>,
    cohort: &Cohort,
    excuses: &Excuses,
    alone: bool,
) -> CheckVerdict {
    let name = floor.name.as_str();
    let Some(m) = d.measurements.get(name) else {
        if name == checks::P2P && alone {
            // Still a failure: the SKU's profile asks for it, and a node of that SKU has peers.
            return fail(
                name,
                "not measured: the only device of its kind on the node, no peer to copy to".into(),
            );
        }
        return fail(name, "not measured".into());
    };
    if m.unit != floor.unit {
        return fail(
            name,
            format!("measured in {}, the profile wants {}", m.unit, floor.unit),
        );
    }
    let v = m.value;
    let unit = &m.unit;
    let mut slow = Vec::new();
    let mut relative = false;
    if !v.is_finite() || v < floor.min {
        slow.push(format!(
            "{v:.2} {unit} under the floor of {} {unit}",
            floor.min
        ));
    }
    let kind = floor.kind;
    if let Some((median, n)) = mates.get(&(kind, name.to_string()))
        && *n >= 3
        && v < median * (1.0 - profile.node_gap)
    {
        slow.push(format!(
            "{:.0}% under its node-mates' median of {median:.2} {unit}",
            (1.0 - v / median) * 100.0
        ));
        relative = true;
    }
    if let Some(values) = cohort.get(&CohortKey::of(d, kind, name))
        && values.len() >= MIN_COHORT
    {
        let mut sorted = values.clone();
        let med = median(&mut sorted);
        let spread = mad(values, med);
        if v < med * (1.0 - COHORT_GAP) || (spread > 0.0 && v < med - COHORT_MADS * spread) {
            slow.push(format!(
                "under its cohort's median of {med:.2} {unit} (MAD {spread:.2}, {} devices)",
                values.len()
            ));
            relative = true;
        }
    }
    let excuse = if relative {
        excuses.relative.as_deref()
    } else {
        excuses.floor.as_deref()
    }
    .filter(|_| floor.excusable && v >= floor.min * (1.0 - EXCUSE_DEPTH));
    if !slow.is_empty() {
        let what = slow.join("; ");
        return match excuse {
            Some(why) => CheckVerdict {
                check: name.into(),
                level: Level::Warn,
                reason: format!("{what}: {why}, results correct: slow, not faulty"),
                retry: false,
            },
            None => CheckVerdict {
                check: name.into(),
                level: Level::Fail,
                reason: what,
                retry: m.attempt < 2,
            },
        };
    }
    let (level, reason) = if v < floor.min * (1.0 + profile.warn_margin) {
        (
            Level::Warn,
            format!(
                "{v:.2} {unit}, within {:.0}% of the floor of {} {unit}",
                profile.warn_margin * 100.0,
                floor.min
            ),
        )
    } else {
        (
            Level::Pass,
            format!("{v:.2} {unit} (floor {} {unit})", floor.min),
        )
    };
    let reason = match excuses.floor.as_deref().filter(|_| floor.excusable) {
        Some(why) => format!("{reason}; {why}"),
        None => reason,
    };
    CheckVerdict {
        check: name.into(),
        level,
        reason,
        retry: false,
    }
}
