//! Burn-in of the node's NVIDIA GPUs (issue 5): HBM patterns and bandwidth, a sustained bf16
//! GEMM checked bit for bit, PCIe and GPU-to-GPU copies, through cudarc with the CUDA
//! libraries loaded at run time; health counters, throttle reasons, power, temperature and
//! clocks through NVML; XIDs from the kernel log. Each GPU runs its own steps on a worker
//! thread, every step bounded by the plan's tool timeout and its result kept as soon as it
//! ends; the copies over links then run one GPU at a time; every NVML read is bounded too.
//! Where the driver or a library is missing, every GPU says so (`cannot_validate`): never a
//! panic, never a pass.
//!
//! Written and reviewed against cudarc 0.19 and nvml-wrapper 0.13 without a GPU. What has not
//! run on one yet: this orchestration as a whole (per-step delivery, PCIe after the workers,
//! bounded NVML reads, thread pinning), the NVRTC `compute_XY` option, the fabric and NVLink
//! reads, and the ECC mode and aggregate reads.

mod cuda;
mod driver;
mod gemm;
mod health;
mod kmsg;
mod links;
mod measure;
mod nvml_reads;
mod pattern;
mod peers;
mod samples;
mod steps;
mod supervise;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nvml_wrapper::Nvml;
use provisioner_protocol::Facts;
use provisioner_protocol::burnin::{BurnInPlan, DeviceKind, DeviceResult, Measurement, checks};

pub use kmsg::xids_from_kmsg;

use cuda::{GpuJob, GpuOutput};
use health::Health;
use samples::Samples;
use steps::Step;
use supervise::{End, Job, Outcome, Running};

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
    /// An NVML read of this GPU did not come back: none is tried again.
    nvml_hung: bool,
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
            nvml_hung: false,
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
    // Before NVML and CUDA start: the XIDs a GPU logs while they bring it up count too.
    let mut log = match kmsg::KernelLog::open_at_end() {
        Ok(log) => Some(log),
        Err(e) => {
            say(&format!("burn-in gpu: cannot read /dev/kmsg for XIDs: {e}"));
            None
        }
    };
    let (nvml, ordinals) = match driver::open(Step::Setup.limit(plan)) {
        Ok(opened) => opened,
        Err(why) => {
            say(&format!("burn-in gpu: cannot validate any GPU: {why}"));
            for card in &mut cards {
                card.cannot_validate(why.clone());
            }
            read_xids(log.as_mut(), &mut cards, say);
            return cards.into_iter().map(|card| card.result).collect();
        }
    };
    nvml_reads::identify(&nvml, &ordinals, &mut cards, say);
    burn_each(plan, &nvml, &mut cards, say);
    links::pcie(plan, &nvml, &mut cards, say);
    links::p2p(plan, facts, &ordinals, &mut cards, say);
    compare_gemm_results(&mut cards, say);
    nvml_reads::finish_health(&nvml, &mut cards, say);
    read_xids(log.as_mut(), &mut cards, say);
    cards.into_iter().map(|card| card.result).collect()
}

fn read_xids(log: Option<&mut kmsg::KernelLog>, cards: &mut [Card], say: &mut dyn FnMut(&str)) {
    let Some(log) = log else { return };
    match log.read_new() {
        Ok(text) => assign_xids(&xids_from_kmsg(&text), cards, say),
        Err(e) => say(&format!("burn-in gpu: cannot read /dev/kmsg for XIDs: {e}")),
    }
}

/// The per-GPU steps, all GPUs at once (as they will run in production, power and heat
/// included), sampling NVML about every second alongside.
fn burn_each(plan: &BurnInPlan, nvml: &Arc<Nvml>, cards: &mut [Card], say: &mut dyn FnMut(&str)) {
    let mut jobs: Vec<Job<GpuOutput>> = Vec::new();
    let mut index = Vec::new();
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
            nvml: nvml.clone(),
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
            {
                nvml_reads::sample(nvml, card);
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
        take_outcome(card, outcome, attempt);
    }
}

/// A worker's steps into its GPU's result: every step that ended keeps what it measured,
/// whatever happened to the steps after it; the first failure is the GPU's reason.
fn take_outcome(card: &mut Card, outcome: Outcome<GpuOutput>, attempt: u32) {
    for out in outcome.results {
        for (check, value, unit) in out.measurements {
            card.measured(check, value, unit, attempt);
        }
        for (name, count) in out.counters {
            card.result.counters.insert(name.to_string(), count);
        }
        if out.gemm_hash.is_some() {
            card.gemm_hash = out.gemm_hash;
        }
        if let Some(e) = out.error {
            card.cannot_validate(format!("gpu {e}"));
        }
    }
    if outcome.end != End::Done {
        card.cannot_validate(end_text(&outcome.end));
    }
}

/// Whether a GPU in this step is sampled now: during the GEMM (or every step where the run
/// has no GEMM), once the step has settled.
fn should_sample(running: &Running, every_step: bool, now: Instant) -> bool {
    let step_counts = running.step == Step::Gemm || (every_step && running.step != Step::Setup);
    step_counts && now.saturating_duration_since(running.since) >= SETTLE
}

fn end_text(end: &End) -> String {
    match end {
        End::Done => "done".into(),
        End::TimedOut { step, limit } => {
            format!(
                "gpu {} timed out after {} s",
                step.name(),
                limit.as_secs_f64()
            )
        }
        End::Panicked(why) => format!("gpu burn-in failed: {why}"),
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
        let timed_out = End::TimedOut {
            step: Step::Gemm,
            limit: Duration::from_secs(360),
        };
        assert_eq!(end_text(&timed_out), "gpu gemm timed out after 360 s");
        let panicked = End::Panicked("Missing symbol cuFoo".into());
        assert_eq!(
            end_text(&panicked),
            "gpu burn-in failed: Missing symbol cuFoo"
        );
    }

    fn pattern_output() -> GpuOutput {
        GpuOutput {
            measurements: vec![(checks::HBM_PATTERN_COVERAGE, 0.9, "fraction")],
            counters: BTreeMap::from([
                (checks::PATTERN_BAD_WORDS, 0),
                (checks::HBM_COVERAGE_SHORT, 0),
            ]),
            ..GpuOutput::default()
        }
    }

    fn copy_output() -> GpuOutput {
        GpuOutput {
            measurements: vec![(checks::HBM_COPY, 3.1, "TB/s")],
            ..GpuOutput::default()
        }
    }

    /// Two GPUs' workers as the supervisor runs them, with steps that only deliver: one
    /// hangs in its GEMM after its pattern and copy ended, the other finishes.
    #[test]
    fn a_hung_step_costs_only_itself_and_its_gpu_keeps_the_rest() {
        const SHORT: Duration = Duration::from_millis(200);
        let hangs: Job<GpuOutput> = Box::new(|r| {
            r.begin(Step::Pattern, Duration::from_secs(10));
            r.deliver(pattern_output());
            r.begin(Step::Copy, Duration::from_secs(10));
            r.deliver(copy_output());
            r.begin(Step::Gemm, SHORT);
            std::thread::sleep(Duration::from_secs(30));
        });
        let finishes: Job<GpuOutput> = Box::new(|r| {
            r.begin(Step::Gemm, Duration::from_secs(10));
            r.deliver(GpuOutput {
                measurements: vec![(checks::GEMM_BF16_P50, 670.0, "TFLOP/s")],
                counters: BTreeMap::from([(checks::GEMM_MISMATCHES, 0)]),
                gemm_hash: Some(5),
                error: None,
            });
        });
        let outcomes = supervise::supervise(
            vec![hangs, finishes],
            Duration::from_secs(10),
            Duration::from_secs(1),
            &mut |_| {},
            &mut |_| {},
        );
        let mut cards = [Card::new("0000:18:00.0"), Card::new("0000:2a:00.0")];
        for (card, outcome) in cards.iter_mut().zip(outcomes) {
            take_outcome(card, outcome, 1);
        }
        let hung = &cards[0].result;
        assert_eq!(
            hung.cannot_validate.as_deref(),
            Some("gpu gemm timed out after 0.2 s")
        );
        assert_eq!(hung.measurements[checks::HBM_COPY].value, 3.1);
        assert_eq!(
            hung.measurements[checks::HBM_PATTERN_COVERAGE].unit,
            "fraction"
        );
        assert_eq!(hung.counters[checks::PATTERN_BAD_WORDS], 0);
        assert!(!hung.measurements.contains_key(checks::GEMM_BF16_P50));
        assert_eq!(cards[0].gemm_hash, None);
        let done = &cards[1].result;
        assert_eq!(done.cannot_validate, None);
        assert_eq!(done.measurements[checks::GEMM_BF16_P50].value, 670.0);
        assert_eq!(cards[1].gemm_hash, Some(5));
    }

    #[test]
    fn a_step_that_fails_is_the_reason_and_the_steps_before_it_stay() {
        let mut card = Card::new("0000:18:00.0");
        let failed = GpuOutput {
            error: Some("hbm copy: no device memory could be allocated".into()),
            ..GpuOutput::default()
        };
        let outcome = Outcome {
            results: vec![pattern_output(), failed],
            end: End::Done,
        };
        take_outcome(&mut card, outcome, 2);
        assert_eq!(
            card.result.cannot_validate.as_deref(),
            Some("gpu hbm copy: no device memory could be allocated")
        );
        let coverage = &card.result.measurements[checks::HBM_PATTERN_COVERAGE];
        assert_eq!((coverage.value, coverage.attempt), (0.9, 2));
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
