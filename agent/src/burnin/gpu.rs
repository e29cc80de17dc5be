//! Burn-in of the node's NVIDIA GPUs (issue 5): HBM patterns and bandwidth, a sustained bf16
//! GEMM checked bit for bit, PCIe and GPU-to-GPU copies, through cudarc with the CUDA
//! libraries loaded at run time; health counters, throttle reasons, power, temperature and
//! clocks through NVML; XIDs from the kernel log. Each GPU runs on its own worker thread,
//! every step bounded by the plan's tool timeout. Where the driver or a library is missing,
//! every GPU says so (`cannot_validate`): never a panic, never a pass.

mod cuda;
mod gemm;
mod health;
mod kmsg;
mod measure;
mod pattern;
mod peers;
mod steps;
mod supervise;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nvml_wrapper::Nvml;
use provisioner_protocol::Facts;
use provisioner_protocol::burnin::{BurnInPlan, DeviceKind, DeviceResult, Measurement, checks};

pub use kmsg::xids_from_kmsg;

use cuda::{GpuJob, GpuOutput};
use health::{Health, Samples};
use steps::Step;
use supervise::{Job, Outcome, Running};

/// How often the GPUs are sampled while they compute.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// A step's first second finds the GPU still coming up from idle clocks: not sampled.
const SETTLE: Duration = Duration::from_secs(1);

/// One GPU of the run, from the facts' PCI address to its result.
struct Card {
    result: DeviceResult,
    /// The address in the one form every source is normalized to.
    address: String,
    ordinal: Option<usize>,
    before: Option<Health>,
    samples: Samples,
    /// With no GEMM in the run (a retry of another check), sample every step.
    sample_every_step: bool,
    gemm_hash: Option<u64>,
}

impl Card {
    fn new(id: &str) -> Card {
        Card {
            result: DeviceResult {
                id: id.to_string(),
                kind: Some(DeviceKind::Gpu),
                ..DeviceResult::default()
            },
            address: kmsg::pci_address(id).unwrap_or_else(|| id.to_lowercase()),
            ordinal: None,
            before: None,
            samples: Samples::default(),
            sample_every_step: false,
            gemm_hash: None,
        }
    }

    /// The first reason a GPU cannot be validated is the one reported.
    fn cannot_validate(&mut self, why: String) {
        self.result.cannot_validate.get_or_insert(why);
    }

    fn usable(&self) -> Option<usize> {
        self.ordinal
            .filter(|_| self.result.cannot_validate.is_none())
    }

    fn measured(&mut self, check: &str, value: f64, unit: &str, attempt: u32) {
        let m = Measurement {
            value,
            unit: unit.to_string(),
            attempt,
        };
        self.result.measurements.insert(check.to_string(), m);
    }
}

/// Burns in every GPU in the facts (or those `plan.only` names), one result per GPU.
pub fn run(plan: &BurnInPlan, facts: &Facts, say: &mut dyn FnMut(&str)) -> Vec<DeviceResult> {
    let mut cards: Vec<Card> = facts
        .gpus
        .iter()
        .filter(|id| steps::device_wanted(plan, id))
        .map(|id| Card::new(id))
        .collect();
    if cards.is_empty() {
        return Vec::new();
    }
    let (nvml, ordinals) = match open_driver(plan) {
        Ok(opened) => opened,
        Err(why) => {
            say(&format!("burn-in gpu: cannot validate any GPU: {why}"));
            return cards
                .into_iter()
                .map(|mut card| {
                    card.cannot_validate(why.clone());
                    card.result
                })
                .collect();
        }
    };
    let mut log = match kmsg::KernelLog::open_at_end() {
        Ok(log) => Some(log),
        Err(e) => {
            say(&format!("burn-in gpu: cannot read /dev/kmsg for XIDs: {e}"));
            None
        }
    };
    identify(&nvml, &ordinals, &mut cards, say);
    burn_each(plan, &nvml, &mut cards, say);
    p2p(plan, facts, &ordinals, &mut cards, say);
    compare_gemm_results(&mut cards, say);
    finish_health(&nvml, &mut cards, say);
    if let Some(log) = &mut log {
        match log.read_new() {
            Ok(text) => assign_xids(&xids_from_kmsg(&text), &mut cards, say),
            Err(e) => say(&format!("burn-in gpu: cannot read /dev/kmsg for XIDs: {e}")),
        }
    }
    cards.into_iter().map(|card| card.result).collect()
}

/// NVML and the CUDA ordinals of the GPUs, or why there are none ("no NVIDIA driver: ...").
fn open_driver(plan: &BurnInPlan) -> Result<(Nvml, BTreeMap<String, usize>), String> {
    missing_libraries().map_err(|missing| format!("no NVIDIA driver: {missing}"))?;
    let nvml = Nvml::init().map_err(|e| format!("no NVIDIA driver: NVML: {e}"))?;
    match supervise::bounded(Step::Setup.limit(plan), peers::pci_ordinals) {
        Ok(Ok(ordinals)) => Ok((nvml, ordinals)),
        Ok(Err(e)) => Err(format!("no NVIDIA driver: cuInit: {e}")),
        Err(e) => Err(format!("no NVIDIA driver: CUDA start-up {e}")),
    }
}

/// The libraries cudarc would otherwise panic without: the driver's libcuda, NVRTC and cuBLAS.
fn missing_libraries() -> Result<(), String> {
    // SAFETY: each only tries to dlopen the library under its usual names.
    let found = unsafe {
        [
            ("libcuda", cudarc::driver::sys::is_culib_present()),
            ("libnvrtc", cudarc::nvrtc::sys::is_culib_present()),
            ("libcublas", cudarc::cublas::sys::is_culib_present()),
        ]
    };
    let missing: Vec<&str> = found
        .iter()
        .filter(|(_, present)| !present)
        .map(|(name, _)| *name)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let path = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    Err(format!(
        "{} not found (LD_LIBRARY_PATH={path:?})",
        missing.join(", ")
    ))
}

/// Model, driver, VBIOS and the health before the run, from NVML; the CUDA ordinal.
fn identify(
    nvml: &Nvml,
    ordinals: &BTreeMap<String, usize>,
    cards: &mut [Card],
    say: &mut dyn FnMut(&str),
) {
    let driver = nvml.sys_driver_version().ok();
    for card in cards {
        card.result.driver = driver.clone();
        card.ordinal = ordinals.get(&card.address).copied();
        let device = match nvml.device_by_pci_bus_id(card.result.id.as_str()) {
            Ok(device) => device,
            Err(e) => {
                card.cannot_validate(format!("not found by NVML: {e}"));
                continue;
            }
        };
        card.result.model = device.name().ok();
        card.result.firmware = device.vbios_version().ok();
        let before = health::read_health(&device);
        if before.ecc_enabled == Some(false) {
            say(&format!("burn-in gpu {}: ECC is off", card.result.id));
        }
        if let (Ok(link_gen), Ok(width), Ok(max_gen), Ok(max_width)) = (
            device.current_pcie_link_gen(),
            device.current_pcie_link_width(),
            device.max_pcie_link_gen(),
            device.max_pcie_link_width(),
        ) {
            say(&format!(
                "burn-in gpu {}: {} PCIe gen {link_gen} x{width} (max gen {max_gen} x{max_width})",
                card.result.id,
                card.result.model.as_deref().unwrap_or("?")
            ));
        }
        card.before = Some(before);
        if card.ordinal.is_none() {
            card.cannot_validate("not visible to CUDA (is CUDA_VISIBLE_DEVICES set?)".into());
        }
    }
}

/// The per-GPU steps, all GPUs at once (as they will run in production, power and heat
/// included; only the PCIe copies take turns), sampling NVML about every second alongside.
fn burn_each(plan: &BurnInPlan, nvml: &Nvml, cards: &mut [Card], say: &mut dyn FnMut(&str)) {
    let mut jobs: Vec<Job<GpuOutput>> = Vec::new();
    let mut index = Vec::new();
    let pcie_turn = Arc::new(Mutex::new(()));
    for (i, card) in cards.iter_mut().enumerate() {
        let Some(ordinal) = card.usable() else {
            continue;
        };
        let wanted: Vec<Step> = Step::PER_GPU
            .into_iter()
            .filter(|s| steps::wanted(plan, &card.result.id, *s))
            .collect();
        if wanted.is_empty() {
            continue;
        }
        card.sample_every_step = !wanted.contains(&Step::Gemm);
        let job = GpuJob {
            id: card.result.id.clone(),
            ordinal,
            steps: wanted,
            plan: plan.clone(),
            pcie_turn: pcie_turn.clone(),
        };
        jobs.push(Box::new(move |reporter| cuda::burn(&job, reporter)));
        index.push(i);
    }
    if jobs.is_empty() {
        return;
    }
    let mut sample = |running: &[Option<Running>]| {
        let now = Instant::now();
        for (slot, running) in running.iter().enumerate() {
            let card = &mut cards[index[slot]];
            if let Some(r) = running
                && should_sample(r, card.sample_every_step, now)
                && let Ok(device) = nvml.device_by_pci_bus_id(card.result.id.as_str())
            {
                card.samples.add(&health::read_sample(&device));
            }
        }
    };
    let outcomes = supervise::supervise(
        jobs,
        Step::Setup.limit(plan),
        SAMPLE_EVERY,
        say,
        &mut sample,
    );
    let attempt = steps::attempt(plan);
    for (slot, outcome) in outcomes.into_iter().enumerate() {
        let card = &mut cards[index[slot]];
        card.result.conditions = card.samples.conditions();
        match outcome {
            Outcome::Done(out) => {
                for (check, value, unit) in out.measurements {
                    card.measured(check, value, unit, attempt);
                }
                for (name, count) in out.counters {
                    card.result.counters.insert(name.to_string(), count);
                }
                card.gemm_hash = out.gemm_hash;
                if let Some(e) = out.error {
                    card.cannot_validate(format!("gpu {e}"));
                }
            }
            outcome => card.cannot_validate(outcome_text(&outcome)),
        }
    }
}

/// Whether a GPU in this step is sampled now: during the GEMM (or every step where the run
/// has no GEMM), once the step has settled.
fn should_sample(running: &Running, every_step: bool, now: Instant) -> bool {
    let step_counts = running.step == Step::Gemm || (every_step && running.step != Step::Setup);
    step_counts && now.saturating_duration_since(running.since) >= SETTLE
}

fn outcome_text<R>(outcome: &Outcome<R>) -> String {
    match outcome {
        Outcome::Done(_) => "done".into(),
        Outcome::TimedOut { step, limit } => {
            format!("gpu {} timed out after {} s", step.name(), limit.as_secs())
        }
        Outcome::Panicked(why) => format!("gpu burn-in failed: {why}"),
    }
}

/// Each GPU copies to the next one the CUDA driver sees, one pair at a time, so every link
/// is measured alone.
fn p2p(
    plan: &BurnInPlan,
    facts: &Facts,
    ordinals: &BTreeMap<String, usize>,
    cards: &mut [Card],
    say: &mut dyn FnMut(&str),
) {
    // The ring is every GPU of the node, not only those retried: a retry still needs a peer.
    let mut ring: Vec<(String, usize)> = facts
        .gpus
        .iter()
        .filter_map(|id| {
            let address = kmsg::pci_address(id)?;
            Some((id.clone(), *ordinals.get(&address)?))
        })
        .collect();
    let hung = |id: &str, cards: &[Card]| {
        cards
            .iter()
            .any(|c| c.result.id == id && c.result.cannot_validate.is_some())
    };
    ring.retain(|(id, _)| !hung(id, cards));
    if ring.len() < 2 {
        return;
    }
    let attempt = steps::attempt(plan);
    for card in cards.iter_mut() {
        let Some(src) = card.usable() else { continue };
        if !steps::wanted(plan, &card.result.id, Step::P2p) {
            continue;
        }
        let Some(at) = ring.iter().position(|(id, _)| *id == card.result.id) else {
            continue;
        };
        let (peer, dst) = ring[(at + 1) % ring.len()].clone();
        match supervise::bounded(Step::P2p.limit(plan), move || peers::p2p(src, dst)) {
            Ok(Ok((gbps, direct))) => {
                let how = if direct {
                    "peer access"
                } else {
                    "no peer access: staged through the host"
                };
                say(&format!(
                    "burn-in gpu {}: p2p to {peer}: {gbps:.1} GB/s ({how})",
                    card.result.id
                ));
                card.measured(checks::P2P, gbps, "GB/s", attempt);
            }
            Ok(Err(e)) => card.cannot_validate(format!("gpu p2p to {peer}: {e}")),
            Err(e) => {
                card.cannot_validate(format!("gpu p2p to {peer} {e}"));
                // Whatever hung may hang the next pair too.
                ring.retain(|(id, _)| *id != card.result.id && *id != peer);
                if ring.len() < 2 {
                    return;
                }
            }
        }
    }
}

/// Every GPU computed the same product from the same inputs: one that disagrees with its
/// node-mates of the same model counts one more mismatch.
fn compare_gemm_results(cards: &mut [Card], say: &mut dyn FnMut(&str)) {
    let (computed, hashes): (Vec<usize>, Vec<(String, u64)>) = cards
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            Some((
                i,
                (c.result.model.clone().unwrap_or_default(), c.gemm_hash?),
            ))
        })
        .unzip();
    let disagree = measure::cross_gpu_disagreements(&hashes);
    for (i, disagrees) in computed.into_iter().zip(disagree) {
        if disagrees {
            let card = &mut cards[i];
            say(&format!(
                "burn-in gpu {}: its GEMM result differs from its node-mates'",
                card.result.id
            ));
            *card
                .result
                .counters
                .entry(checks::GEMM_MISMATCHES.to_string())
                .or_default() += 1;
        }
    }
}

/// The health after the run: the counters are the changes since before.
fn finish_health(nvml: &Nvml, cards: &mut [Card], say: &mut dyn FnMut(&str)) {
    for card in cards {
        let Some(before) = &card.before else { continue };
        match nvml.device_by_pci_bus_id(card.result.id.as_str()) {
            Ok(device) => {
                let after = health::read_health(&device);
                for (name, count) in health::health_counters(before, &after) {
                    if count > 0 {
                        say(&format!("burn-in gpu {}: {name} {count}", card.result.id));
                    }
                    card.result.counters.insert(name.to_string(), count);
                }
            }
            Err(e) => card.cannot_validate(format!("lost by NVML during the run: {e}")),
        }
    }
}

fn assign_xids(xids: &BTreeMap<String, Vec<u32>>, cards: &mut [Card], say: &mut dyn FnMut(&str)) {
    for card in cards {
        if let Some(codes) = xids.get(&card.address) {
            say(&format!("burn-in gpu {}: XIDs {codes:?}", card.result.id));
            card.result.xids = codes.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use steps::tests::plan;

    #[test]
    fn samples_are_taken_in_the_gemm_once_it_settled() {
        let now = Instant::now();
        let gemm = |ago| Running {
            step: Step::Gemm,
            since: now - Duration::from_millis(ago),
        };
        assert!(should_sample(&gemm(1500), false, now));
        assert!(!should_sample(&gemm(200), false, now));
        let copy = Running {
            step: Step::Copy,
            since: now - Duration::from_secs(5),
        };
        assert!(!should_sample(&copy, false, now));
        assert!(should_sample(&copy, true, now));
        let setup = Running {
            step: Step::Setup,
            since: now - Duration::from_secs(5),
        };
        assert!(!should_sample(&setup, true, now));
    }

    #[test]
    fn timeouts_and_panics_read_as_reasons() {
        let timed_out: Outcome<()> = Outcome::TimedOut {
            step: Step::Gemm,
            limit: Duration::from_secs(360),
        };
        assert_eq!(outcome_text(&timed_out), "gpu gemm timed out after 360 s");
        let panicked: Outcome<()> = Outcome::Panicked("Missing symbol cuFoo".into());
        assert_eq!(
            outcome_text(&panicked),
            "gpu burn-in failed: Missing symbol cuFoo"
        );
    }

    fn card(id: &str, model: &str, hash: Option<u64>) -> Card {
        let mut card = Card::new(id);
        card.result.model = Some(model.into());
        card.gemm_hash = hash;
        card
    }

    #[test]
    fn one_gpu_computing_differently_counts_a_mismatch() {
        let h = "NVIDIA H100 80GB HBM3";
        let mut cards = vec![
            card("0000:18:00.0", h, Some(5)),
            card("0000:2a:00.0", h, Some(5)),
            card("0000:3a:00.0", h, Some(6)),
            card("0000:5d:00.0", h, None),
        ];
        cards[2]
            .result
            .counters
            .insert(checks::GEMM_MISMATCHES.into(), 0);
        let mut lines = Vec::new();
        compare_gemm_results(&mut cards, &mut |l| lines.push(l.to_string()));
        let mismatches: Vec<Option<u64>> = cards
            .iter()
            .map(|c| c.result.counters.get(checks::GEMM_MISMATCHES).copied())
            .collect();
        assert_eq!(mismatches, vec![None, None, Some(1), None]);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("0000:3a:00.0"));
    }

    #[test]
    fn xids_reach_their_gpu_whatever_the_address_case() {
        let mut cards = vec![Card::new("0000:18:00.0"), Card::new("0000:2A:00.0")];
        let xids = xids_from_kmsg(
            "NVRM: Xid (PCI:0000:18:00): 79, pid=1, GPU has fallen off the bus.\n\
             NVRM: Xid (PCI:0000:2a:00): 13, pid=1, Graphics Exception\n",
        );
        assign_xids(&xids, &mut cards, &mut |_| {});
        assert_eq!(cards[0].result.xids, vec![79]);
        assert_eq!(cards[1].result.xids, vec![13]);
    }

    #[test]
    fn a_retry_runs_only_the_gpus_it_names() {
        let facts = Facts {
            gpus: vec!["0000:fe:1f.0".into(), "0000:ff:1f.0".into()],
            ..Facts::default()
        };
        let retry = plan(&[("0000:ff:1f.0", checks::HBM_COPY)]);
        let results = run(&retry, &facts, &mut |_| {});
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].id, "0000:ff:1f.0");
        // Whatever this machine has, a GPU it does not have cannot be validated.
        assert!(results[0].cannot_validate.is_some());
    }

    #[test]
    fn no_gpus_no_results() {
        assert!(run(&plan(&[]), &Facts::default(), &mut |_| {}).is_empty());
    }
}
