//! The node's GPUs together: which CUDA ordinal each PCI address has, and GPU-to-GPU copies
//! (NVLink where the GPUs have it, PCIe P2P or staged through the host where not).

use std::collections::BTreeMap;
use std::sync::Arc;

use cudarc::driver::sys::{self, CUdevice_attribute, CUevent_flags, CUresult};
use cudarc::driver::{CudaContext, CudaSlice, DriverError, result};

use super::cuda::{GpuError, LINK_BYTES, LINK_REPS};
use super::measure::link_gbps;

/// CUDA ordinals by PCI address (`0000:18:00.0`): CUDA numbers GPUs fastest first unless
/// told otherwise, so the facts' addresses are matched to ordinals here.
pub fn pci_ordinals() -> Result<BTreeMap<String, usize>, DriverError> {
    result::init()?;
    let mut ordinals = BTreeMap::new();
    for ordinal in 0..result::device::get_count()? {
        let dev = result::device::get(ordinal)?;
        // SAFETY: `dev` came from cuDeviceGet just above.
        let attr = |a| unsafe { result::device::get_attribute(dev, a) };
        let domain = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID)?;
        let bus = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID)?;
        let device = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID)?;
        ordinals.insert(
            format!("{domain:04x}:{bus:02x}:{device:02x}.0"),
            ordinal as usize,
        );
    }
    Ok(ordinals)
}

/// Copies from GPU `src` into GPU `dst` (CUDA ordinals), with peer access enabled where the
/// GPUs have it: GB/s, and whether peer access was on.
pub fn p2p(src: usize, dst: usize) -> Result<(f64, bool), GpuError> {
    let src_ctx = CudaContext::new(src)?;
    let dst_ctx = CudaContext::new(dst)?;
    let peer = enable_peer_access(&src_ctx, &dst_ctx)?;
    let src_stream = src_ctx.default_stream();
    let dst_stream = dst_ctx.default_stream();
    // SAFETY: device memory only copied, never read on the host.
    let from: CudaSlice<u8> = unsafe { src_stream.alloc(LINK_BYTES) }?;
    let mut to: CudaSlice<u8> = unsafe { dst_stream.alloc(LINK_BYTES) }?;
    src_stream.synchronize()?;
    dst_stream.memcpy_dtod(&from, &mut to)?;
    let start = dst_stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
    for _ in 0..LINK_REPS {
        dst_stream.memcpy_dtod(&from, &mut to)?;
    }
    let end = dst_stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
    let seconds = f64::from(start.elapsed_ms(&end)?) / 1e3;
    Ok((link_gbps(LINK_BYTES as u64, LINK_REPS, seconds), peer))
}

/// Without peer access a copy between GPUs is staged through host memory.
fn enable_peer_access(a: &Arc<CudaContext>, b: &Arc<CudaContext>) -> Result<bool, DriverError> {
    let mut can = 0;
    // SAFETY: both devices come from live contexts; `can` is ours.
    unsafe { sys::cuDeviceCanAccessPeer(&mut can, b.cu_device(), a.cu_device()) }.result()?;
    if can == 0 {
        return Ok(false);
    }
    for (ctx, peer) in [(a, b), (b, a)] {
        ctx.bind_to_thread()?;
        // SAFETY: `peer` is a live context on another device.
        match unsafe { sys::cuCtxEnablePeerAccess(peer.cu_ctx(), 0) }.result() {
            Ok(()) | Err(DriverError(CUresult::CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}
