//! The node's GPUs and their links: which CUDA ordinal each PCI address has, host↔device
//! copies over PCIe, and GPU-to-GPU copies (NVLink where the GPUs have it, PCIe P2P or staged
//! through the host where not). Each runs for one GPU (or pair) at a time, on a thread of its
//! own bounded by the caller.

use std::collections::BTreeMap;
use std::sync::Arc;

use cudarc::driver::sys::{self, CUdevice_attribute, CUevent_flags, CUresult};
use cudarc::driver::{CudaContext, CudaSlice, DriverError, result};

use super::cuda::GpuError;
use super::measure::link_gbps;

/// Host↔device and GPU↔GPU copies: 256 MiB, this many times after one warm-up.
const LINK_BYTES: usize = 256 << 20;
const LINK_REPS: u32 = 10;

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

/// Host→device and device→host over PCIe, from and to page-locked host memory: GB/s each
/// way. The caller has pinned this thread to the GPU's CPUs, so the host memory is theirs.
pub fn pcie(ordinal: usize) -> Result<(f64, f64), GpuError> {
    let ctx = CudaContext::new(ordinal)?;
    let stream = ctx.default_stream();
    // SAFETY: zeroed right below, before any copy reads it.
    let mut host = unsafe { ctx.alloc_pinned_with_flags::<u8>(LINK_BYTES, 0) }?;
    // SAFETY: the pointer is to LINK_BYTES bytes of our own allocation.
    unsafe { std::ptr::write_bytes(host.as_mut_ptr()?, 0, LINK_BYTES) };
    // SAFETY: written by the first copy before anything reads it.
    let mut dev: CudaSlice<u8> = unsafe { stream.alloc(LINK_BYTES) }?;
    stream.memcpy_htod(&host, &mut dev)?;
    stream.memcpy_dtoh(&dev, &mut host)?;
    let mark = || stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT));
    let start = mark()?;
    for _ in 0..LINK_REPS {
        stream.memcpy_htod(&host, &mut dev)?;
    }
    let middle = mark()?;
    for _ in 0..LINK_REPS {
        stream.memcpy_dtoh(&dev, &mut host)?;
    }
    let end = mark()?;
    let rate = |ms: f32| link_gbps(LINK_BYTES as u64, LINK_REPS, f64::from(ms) / 1e3);
    Ok((
        rate(start.elapsed_ms(&middle)?),
        rate(middle.elapsed_ms(&end)?),
    ))
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
