//! A GPU's health through NVML: fault counters read before and after the burn-in (the
//! results are their changes, or their state at the end for the ones that say "pending",
//! "failed", "disabled" or "not ready"). The samples taken while it computes are in
//! `samples.rs`.

use std::collections::BTreeMap;

use nvml_wrapper::Device;
use nvml_wrapper::enum_wrappers::device::{EccCounter, MemoryError};
use nvml_wrapper::enum_wrappers::nv_link::ErrorCounter;
use provisioner_protocol::burnin::checks;

/// NVML's `NVML_NVLINK_MAX_LINKS`.
const NVLINK_MAX_LINKS: u32 = 18;
/// `NVML_SUCCESS`.
const NVML_SUCCESS: u32 = 0;
/// nvml.h `NVML_GPU_FABRIC_STATE_*`.
const FABRIC_STATE_NOT_SUPPORTED: u8 = 0;
const FABRIC_STATE_COMPLETED: u8 = 3;

/// nvml.h `nvmlGpuFabricInfo_t`, the v1 layout `nvmlDeviceGetGpuFabricInfo` fills
/// (nvml-wrapper-sys has it but nvml-wrapper does not re-export it).
#[repr(C)]
struct FabricInfo {
    _cluster_uuid: [u8; 16],
    /// An `nvmlReturn_t`: how the GPU's registration with the fabric went.
    status: u32,
    _clique_id: u32,
    state: u8,
}

/// The fault counters at one moment; `None` where the GPU or driver cannot say (ECC off, no
/// NVLink, row remapping on a GPU that retires pages instead, no NVLink fabric).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Health {
    /// ECC now, and after the next reboot.
    pub ecc_current: Option<bool>,
    pub ecc_pending: Option<bool>,
    pub ecc_uncorrected: Option<u64>,
    pub ecc_corrected: Option<u64>,
    /// Uncorrected errors over the GPU's life (NVML's aggregate count).
    pub ecc_uncorrected_aggregate: Option<u64>,
    pub remap_pending: Option<bool>,
    pub remap_failed: Option<bool>,
    pub retired_pages_pending: Option<bool>,
    pub nvlinks: NvLinks,
    /// The GPU reports NVLink fabric state and it is not registered (or failed to be).
    pub fabric_not_ready: Option<bool>,
}

/// A GPU's NVLinks, summed; all `None` where no link is active (no NVLink, or a PCIe card
/// without bridges, whose links NVML may still list as inactive).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NvLinks {
    /// Links whose state reads inactive.
    pub inactive: Option<u64>,
    /// CRC-data and recovery counts over the active links: data the link got wrong, or a
    /// link that had to be retrained.
    pub errors: Option<u64>,
    /// Replay and CRC-flit counts over the active links: flits resent and then right.
    pub replays: Option<u64>,
}

impl Health {
    /// ECC is off now or will be after the next reboot; `None` where NVML cannot say.
    fn ecc_disabled(&self) -> Option<bool> {
        match (self.ecc_current, self.ecc_pending) {
            (None, None) => None,
            (current, pending) => Some(current == Some(false) || pending == Some(false)),
        }
    }
}

/// The counters a run reports from the health read before and after it.
pub fn health_counters(before: &Health, after: &Health) -> BTreeMap<&'static str, u64> {
    let mut counters = BTreeMap::new();
    let deltas = [
        (
            checks::ECC_UNCORRECTED,
            before.ecc_uncorrected,
            after.ecc_uncorrected,
        ),
        (
            checks::ECC_CORRECTED,
            before.ecc_corrected,
            after.ecc_corrected,
        ),
        (
            checks::NVLINK_ERRORS,
            before.nvlinks.errors,
            after.nvlinks.errors,
        ),
        (
            checks::NVLINK_REPLAYS,
            before.nvlinks.replays,
            after.nvlinks.replays,
        ),
    ];
    for (name, before, after) in deltas {
        if let Some(after) = after {
            counters.insert(name, delta(before, after));
        }
    }
    let states = [
        (checks::REMAP_PENDING, after.remap_pending),
        (checks::REMAP_FAILED, after.remap_failed),
        (checks::RETIRED_PAGES_PENDING, after.retired_pages_pending),
        (checks::ECC_DISABLED, after.ecc_disabled()),
        (checks::FABRIC_NOT_READY, after.fabric_not_ready),
    ];
    for (name, state) in states {
        if let Some(state) = state {
            counters.insert(name, u64::from(state));
        }
    }
    let absolute = [
        (checks::NVLINK_INACTIVE, after.nvlinks.inactive),
        (
            checks::ECC_UNCORRECTED_AGGREGATE,
            after.ecc_uncorrected_aggregate,
        ),
    ];
    for (name, count) in absolute {
        if let Some(count) = count {
            counters.insert(name, count);
        }
    }
    counters
}

/// The change in a counter. A counter that went down was reset (a driver reload clears the
/// volatile counts): all of its value then is new. One never read before counts from zero.
fn delta(before: Option<u64>, after: u64) -> u64 {
    match before {
        Some(before) if before <= after => after - before,
        _ => after,
    }
}

/// Reads the fault counters of one GPU.
pub fn read_health(device: &Device) -> Health {
    let (remap_pending, remap_failed) = match remapped_rows(device) {
        Some((pending, failed)) => (Some(pending), Some(failed)),
        None => (None, None),
    };
    let ecc = device.is_ecc_enabled().ok();
    let links: Vec<LinkReading> = (0..NVLINK_MAX_LINKS)
        .map(|link| read_link(device, link))
        .collect();
    Health {
        ecc_current: ecc.as_ref().map(|m| m.currently_enabled),
        ecc_pending: ecc.as_ref().map(|m| m.pending_enabled),
        ecc_uncorrected: device
            .total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile)
            .ok(),
        ecc_corrected: device
            .total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile)
            .ok(),
        ecc_uncorrected_aggregate: device
            .total_ecc_errors(MemoryError::Uncorrected, EccCounter::Aggregate)
            .ok(),
        remap_pending,
        remap_failed,
        retired_pages_pending: device.are_pages_pending_retired().ok(),
        nvlinks: fold_links(&links),
        fabric_not_ready: fabric_not_ready(device),
    }
}

/// `nvmlDeviceGetRemappedRows` (Ampere and later), which nvml-wrapper 0.13 does not wrap:
/// (a remap is pending, a remap failed).
fn remapped_rows(device: &Device) -> Option<(bool, bool)> {
    let lib = device.nvml().lib();
    // An older libnvidia-ml lacks the symbol; calling it then would panic.
    lib.nvmlDeviceGetRemappedRows.as_ref().ok()?;
    let (mut corrected, mut uncorrected, mut pending, mut failed) = (0u32, 0u32, 0u32, 0u32);
    // SAFETY: the handle is live for `device`'s lifetime and the four out-pointers are ours.
    let rc = unsafe {
        lib.nvmlDeviceGetRemappedRows(
            device.handle(),
            &mut corrected,
            &mut uncorrected,
            &mut pending,
            &mut failed,
        )
    };
    (rc == 0).then_some((pending != 0, failed != 0))
}

/// `nvmlDeviceGetGpuFabricInfo` (driver 525 and later), which nvml-wrapper 0.13 does not
/// wrap: whether a GPU on an NVLink fabric (GB200 NVL, GH200 NVL32) is not yet registered
/// with it. `None` where the GPU has no fabric state to report.
fn fabric_not_ready(device: &Device) -> Option<bool> {
    let lib = device.nvml().lib();
    // An older libnvidia-ml lacks the symbol; calling it then would panic.
    lib.nvmlDeviceGetGpuFabricInfo.as_ref().ok()?;
    let mut info = FabricInfo {
        _cluster_uuid: [0; 16],
        status: NVML_SUCCESS,
        _clique_id: 0,
        state: FABRIC_STATE_NOT_SUPPORTED,
    };
    // SAFETY: the handle is live for `device`'s lifetime, and `info` is ours and laid out as
    // the `nvmlGpuFabricInfo_t` this symbol takes.
    let rc = unsafe { lib.nvmlDeviceGetGpuFabricInfo(device.handle(), (&raw mut info).cast()) };
    fabric_state_not_ready(rc, info.state, info.status)
}

/// From the call's return code and the fabric info's state and status: `None` where the
/// GPU does not report fabric state (the call fails, or the state says not supported);
/// otherwise not ready unless registration completed and succeeded.
fn fabric_state_not_ready(rc: u32, state: u8, status: u32) -> Option<bool> {
    if rc != NVML_SUCCESS || state == FABRIC_STATE_NOT_SUPPORTED {
        return None;
    }
    Some(state != FABRIC_STATE_COMPLETED || status != NVML_SUCCESS)
}

/// One NVLink: its state where NVML reads one, and for an active link its error counters
/// (CRC-data, recovery, replay, CRC-flit) where they read.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct LinkReading {
    active: Option<bool>,
    crc_data: Option<u64>,
    recovery: Option<u64>,
    replay: Option<u64>,
    crc_flit: Option<u64>,
}

fn read_link(device: &Device, link: u32) -> LinkReading {
    let link = device.link_wrapper_for(link);
    let active = link.is_active().ok();
    if active != Some(true) {
        return LinkReading {
            active,
            ..LinkReading::default()
        };
    }
    let counter = |c| link.error_counter(c).ok();
    LinkReading {
        active,
        crc_data: counter(ErrorCounter::DlCrcData),
        recovery: counter(ErrorCounter::DlRecovery),
        replay: counter(ErrorCounter::DlReplay),
        crc_flit: counter(ErrorCounter::DlCrcFlit),
    }
}

/// The links summed. Only a GPU with at least one active link reports anything: links that
/// NVML lists on a GPU with none active are not links that went down.
fn fold_links(links: &[LinkReading]) -> NvLinks {
    let active: Vec<&LinkReading> = links.iter().filter(|l| l.active == Some(true)).collect();
    if active.is_empty() {
        return NvLinks::default();
    }
    let sum = |counts: &[Option<u64>]| -> Option<u64> {
        counts
            .iter()
            .flatten()
            .fold(None, |sum, n| Some(sum.unwrap_or(0u64).saturating_add(*n)))
    };
    let errors: Vec<Option<u64>> = active
        .iter()
        .flat_map(|l| [l.crc_data, l.recovery])
        .collect();
    let replays: Vec<Option<u64>> = active.iter().flat_map(|l| [l.replay, l.crc_flit]).collect();
    NvLinks {
        inactive: Some(links.iter().filter(|l| l.active == Some(false)).count() as u64),
        errors: sum(&errors),
        replays: sum(&replays),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Health {
        Health {
            ecc_current: Some(true),
            ecc_pending: Some(true),
            ecc_uncorrected: Some(0),
            ecc_corrected: Some(3),
            ecc_uncorrected_aggregate: Some(0),
            remap_pending: Some(false),
            remap_failed: Some(false),
            retired_pages_pending: None,
            nvlinks: NvLinks {
                inactive: Some(0),
                errors: Some(10),
                replays: Some(40),
            },
            fabric_not_ready: None,
        }
    }

    #[test]
    fn a_healthy_run_reports_zeros() {
        let counters = health_counters(&healthy(), &healthy());
        for name in [
            checks::ECC_UNCORRECTED,
            checks::ECC_CORRECTED,
            checks::ECC_DISABLED,
            checks::ECC_UNCORRECTED_AGGREGATE,
            checks::REMAP_PENDING,
            checks::REMAP_FAILED,
            checks::NVLINK_INACTIVE,
            checks::NVLINK_ERRORS,
            checks::NVLINK_REPLAYS,
        ] {
            assert_eq!(counters[name], 0, "{name}");
        }
        // Not readable on this GPU: not reported, rather than reported as zero.
        assert!(!counters.contains_key(checks::RETIRED_PAGES_PENDING));
        assert!(!counters.contains_key(checks::FABRIC_NOT_READY));
    }

    #[test]
    fn deltas_and_states_after_injected_faults() {
        let after = Health {
            ecc_uncorrected: Some(1),
            ecc_corrected: Some(7),
            ecc_uncorrected_aggregate: Some(12),
            remap_pending: Some(true),
            nvlinks: NvLinks {
                inactive: Some(2),
                errors: Some(15),
                replays: Some(1040),
            },
            fabric_not_ready: Some(true),
            ..healthy()
        };
        let counters = health_counters(&healthy(), &after);
        assert_eq!(counters[checks::ECC_UNCORRECTED], 1);
        assert_eq!(counters[checks::ECC_CORRECTED], 4);
        // Lifetime count: absolute, not the run's change.
        assert_eq!(counters[checks::ECC_UNCORRECTED_AGGREGATE], 12);
        assert_eq!(counters[checks::REMAP_PENDING], 1);
        assert_eq!(counters[checks::REMAP_FAILED], 0);
        assert_eq!(counters[checks::NVLINK_INACTIVE], 2);
        assert_eq!(counters[checks::NVLINK_ERRORS], 5);
        assert_eq!(counters[checks::NVLINK_REPLAYS], 1000);
        assert_eq!(counters[checks::FABRIC_NOT_READY], 1);
    }

    #[test]
    fn ecc_off_now_or_after_reboot_is_reported() {
        let ecc = |current, pending| {
            let after = Health {
                ecc_current: current,
                ecc_pending: pending,
                ..healthy()
            };
            health_counters(&healthy(), &after)
                .get(checks::ECC_DISABLED)
                .copied()
        };
        assert_eq!(ecc(Some(true), Some(true)), Some(0));
        assert_eq!(ecc(Some(false), Some(false)), Some(1));
        assert_eq!(ecc(Some(true), Some(false)), Some(1));
        assert_eq!(ecc(Some(false), Some(true)), Some(1));
        // NVML cannot say (a GPU without ECC): not reported.
        assert_eq!(ecc(None, None), None);
    }

    #[test]
    fn a_pending_remap_from_before_the_run_still_counts() {
        let before = Health {
            remap_pending: Some(true),
            ..healthy()
        };
        let counters = health_counters(&before, &before);
        assert_eq!(counters[checks::REMAP_PENDING], 1);
    }

    #[test]
    fn counters_reset_or_unread_before() {
        assert_eq!(delta(Some(5), 9), 4);
        assert_eq!(delta(Some(9), 2), 2);
        assert_eq!(delta(None, 3), 3);
        let before = Health::default();
        let counters = health_counters(&before, &healthy());
        assert_eq!(counters[checks::ECC_CORRECTED], 3);
        assert!(health_counters(&healthy(), &Health::default()).is_empty());
    }

    #[test]
    fn fabric_state_is_judged_only_where_the_gpu_has_one() {
        const NOT_SUPPORTED_RC: u32 = 3;
        // HGX H100: the call succeeds and says the GPU has no fabric state.
        assert_eq!(fabric_state_not_ready(NVML_SUCCESS, 0, NVML_SUCCESS), None);
        // A GPU or driver without the call.
        assert_eq!(
            fabric_state_not_ready(NOT_SUPPORTED_RC, 3, NVML_SUCCESS),
            None
        );
        // GB200: registered, registering, not started, or registered with an error.
        assert_eq!(
            fabric_state_not_ready(NVML_SUCCESS, 3, NVML_SUCCESS),
            Some(false)
        );
        assert_eq!(
            fabric_state_not_ready(NVML_SUCCESS, 2, NVML_SUCCESS),
            Some(true)
        );
        assert_eq!(
            fabric_state_not_ready(NVML_SUCCESS, 1, NVML_SUCCESS),
            Some(true)
        );
        assert_eq!(fabric_state_not_ready(NVML_SUCCESS, 3, 999), Some(true));
    }

    #[test]
    fn the_fabric_info_has_nvml_s_v1_layout() {
        // nvml.h: unsigned char clusterUuid[16]; nvmlReturn_t status; unsigned int cliqueId;
        // nvmlGpuFabricState_t state (unsigned char).
        assert_eq!(std::mem::offset_of!(FabricInfo, status), 16);
        assert_eq!(std::mem::offset_of!(FabricInfo, _clique_id), 20);
        assert_eq!(std::mem::offset_of!(FabricInfo, state), 24);
        assert_eq!(std::mem::size_of::<FabricInfo>(), 28);
    }

    fn active(crc_data: u64, recovery: u64, replay: u64, crc_flit: u64) -> LinkReading {
        LinkReading {
            active: Some(true),
            crc_data: Some(crc_data),
            recovery: Some(recovery),
            replay: Some(replay),
            crc_flit: Some(crc_flit),
        }
    }

    fn state(active: Option<bool>) -> LinkReading {
        LinkReading {
            active,
            ..LinkReading::default()
        }
    }

    #[test]
    fn nvlink_errors_and_replays_are_summed_apart() {
        let links = [
            active(1, 2, 100, 7),
            active(0, 0, 5, 0),
            state(Some(false)),
            // A link number the GPU does not have: neither active nor inactive.
            state(None),
        ];
        assert_eq!(
            fold_links(&links),
            NvLinks {
                inactive: Some(1),
                errors: Some(3),
                replays: Some(112),
            }
        );
    }

    #[test]
    fn a_gpu_without_an_active_link_reports_no_nvlink() {
        // A PCIe card without bridges: NVML lists its links, all inactive.
        let pcie_card = vec![state(Some(false)); 18];
        assert_eq!(fold_links(&pcie_card), NvLinks::default());
        assert_eq!(fold_links(&[state(None); 18]), NvLinks::default());
        assert_eq!(fold_links(&[]), NvLinks::default());
    }

    #[test]
    fn unreadable_link_counters_leave_gaps_not_zeros() {
        let links = [state(Some(true)), state(Some(false))];
        assert_eq!(
            fold_links(&links),
            NvLinks {
                inactive: Some(1),
                errors: None,
                replays: None,
            }
        );
    }
}
