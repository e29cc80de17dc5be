//! The steps of a GPU's burn-in, the checks each one reports, how long each may take, and
//! which of them a plan asks for (all of them, or only the retried (device, check) pairs).

use std::time::Duration;

use provisioner_protocol::burnin::{BurnInPlan, checks};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Context, NVRTC compile, module load.
    Setup,
    Pattern,
    Copy,
    Gemm,
    Pcie,
    P2p,
}

impl Step {
    /// The steps each GPU's worker runs, all GPUs at once, in order. `Pcie` and `P2p` run
    /// after them, one GPU at a time: GPUs behind one switch share its uplink, and one link's
    /// figure must not depend on which other copies happened to run beside it.
    pub const PER_GPU: [Step; 3] = [Step::Pattern, Step::Copy, Step::Gemm];

    pub fn name(self) -> &'static str {
        match self {
            Step::Setup => "setup",
            Step::Pattern => "hbm pattern",
            Step::Copy => "hbm copy",
            Step::Gemm => "gemm",
            Step::Pcie => "pcie",
            Step::P2p => "p2p",
        }
    }

    /// The measurements and counters this step reports (`protocol::burnin::checks`).
    pub fn checks(self) -> &'static [&'static str] {
        match self {
            Step::Setup => &[],
            Step::Pattern => &[
                checks::PATTERN_BAD_WORDS,
                checks::HBM_PATTERN_COVERAGE,
                checks::HBM_COVERAGE_SHORT,
            ],
            Step::Copy => &[checks::HBM_COPY],
            Step::Gemm => &[
                checks::GEMM_BF16_P50,
                checks::GEMM_BF16_P05,
                checks::GEMM_MISMATCHES,
            ],
            Step::Pcie => &[checks::PCIE_H2D, checks::PCIE_D2H],
            Step::P2p => &[checks::P2P],
        }
    }

    /// How long the step may run before it counts as hung: the plan's tool timeout, and for
    /// the GEMM its sustained time on top.
    pub fn limit(self, plan: &BurnInPlan) -> Duration {
        let tool = Duration::from_secs(u64::from(plan.tool_timeout_seconds.max(1)));
        match self {
            Step::Gemm => tool + Duration::from_secs(u64::from(plan.gemm_seconds)),
            _ => tool,
        }
    }
}

/// Whether the plan asks for `step` on the GPU `id`: always on a full run; on a retry
/// (`plan.only`) when one of the step's checks is listed for that GPU.
pub fn wanted(plan: &BurnInPlan, id: &str, step: Step) -> bool {
    plan.only.is_empty()
        || plan
            .only
            .iter()
            .any(|(device, check)| device == id && step.checks().contains(&check.as_str()))
}

/// Whether the GPU `id` takes part in this run at all.
pub fn device_wanted(plan: &BurnInPlan, id: &str) -> bool {
    plan.only.is_empty() || plan.only.iter().any(|(device, _)| device == id)
}

/// 1 for a full run, 2 for the retry of a performance failure (`plan.only`).
pub fn attempt(plan: &BurnInPlan) -> u32 {
    if plan.only.is_empty() { 1 } else { 2 }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub fn plan(only: &[(&str, &str)]) -> BurnInPlan {
        BurnInPlan {
            gemm_seconds: 60,
            hbm_fraction: 0.9,
            cpu_seconds: 60,
            memory_fraction: 0.9,
            disk_read_bytes: 0,
            disks_writable: Vec::new(),
            nic_speed_mbps: None,
            tool_timeout_seconds: 300,
            only: only
                .iter()
                .map(|(d, c)| (d.to_string(), c.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_full_run_wants_everything_once() {
        let p = plan(&[]);
        for step in Step::PER_GPU.into_iter().chain([Step::Pcie, Step::P2p]) {
            assert!(wanted(&p, "0000:18:00.0", step));
        }
        assert!(device_wanted(&p, "0000:18:00.0"));
        assert_eq!(attempt(&p), 1);
    }

    #[test]
    fn a_retry_wants_only_its_pairs() {
        let p = plan(&[
            ("0000:18:00.0", checks::GEMM_BF16_P05),
            ("0000:2a:00.0", checks::HBM_COPY),
        ]);
        assert!(wanted(&p, "0000:18:00.0", Step::Gemm));
        assert!(!wanted(&p, "0000:18:00.0", Step::Copy));
        assert!(!wanted(&p, "0000:18:00.0", Step::Pattern));
        assert!(wanted(&p, "0000:2a:00.0", Step::Copy));
        assert!(!wanted(&p, "0000:2a:00.0", Step::Gemm));
        assert!(!device_wanted(&p, "0000:3b:00.0"));
        assert!(!wanted(&p, "0000:3b:00.0", Step::Gemm));
        assert!(!wanted(&p, "0000:18:00.0", Step::Setup));
        assert_eq!(attempt(&p), 2);
    }

    #[test]
    fn the_gemm_gets_its_sustained_time_on_top() {
        let p = plan(&[]);
        assert_eq!(Step::Copy.limit(&p), Duration::from_secs(300));
        assert_eq!(Step::Gemm.limit(&p), Duration::from_secs(360));
    }
}
