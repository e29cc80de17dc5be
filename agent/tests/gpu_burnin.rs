//! The GPU burn-in on a machine without the NVIDIA driver or CUDA: every GPU in the facts
//! gets a "no NVIDIA driver" result saying what is missing; nothing panics, nothing passes.
//! On a machine that has the libraries, a GPU that is not there still cannot be validated.

use provisioner_agent::burnin::gpu;
use provisioner_protocol::Facts;
use provisioner_protocol::burnin::{BurnInPlan, DeviceKind};

fn plan() -> BurnInPlan {
    BurnInPlan {
        gemm_seconds: 5,
        hbm_fraction: 0.9,
        cpu_seconds: 5,
        memory_fraction: 0.5,
        disk_read_bytes: 0,
        disks_writable: Vec::new(),
        nic_speed_mbps: None,
        tool_timeout_seconds: 30,
        only: Vec::new(),
    }
}

fn driver_present() -> bool {
    // SAFETY: only tries to dlopen libcuda.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

#[test]
fn without_a_driver_every_gpu_cannot_be_validated() {
    // Addresses no real machine uses for a GPU: on a GPU machine they are simply not found.
    let facts = Facts {
        gpus: vec!["0000:fe:1f.0".into(), "0000:ff:1f.0".into()],
        ..Facts::default()
    };
    let mut lines = Vec::new();
    let results = gpu::run(&plan(), &facts, &mut |l| lines.push(l.to_string()));
    assert_eq!(results.len(), 2, "{results:?}");
    for (result, id) in results.iter().zip(&facts.gpus) {
        assert_eq!(&result.id, id);
        assert_eq!(result.kind, Some(DeviceKind::Gpu));
        let why = result.cannot_validate.as_deref().expect("a reason");
        if !driver_present() {
            assert!(why.contains("no NVIDIA driver"), "{why}");
            assert!(why.contains("libcuda"), "names what is missing: {why}");
        }
        assert!(result.measurements.is_empty(), "{result:?}");
        // Nothing was read, so nothing reads as healthy: no zero counters either.
        assert!(result.counters.is_empty(), "{result:?}");
    }
    if !driver_present() {
        assert!(
            lines.iter().any(|l| l.contains("no NVIDIA driver")),
            "{lines:?}"
        );
    }
}
