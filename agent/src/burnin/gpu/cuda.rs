//! The CUDA work on one GPU, run on a worker thread: its context, stream and NVRTC-compiled
//! kernels, the steps in order, and the copies (HBM, PCIe). The pattern test and the GEMM
//! live in their own files. The libraries are loaded at run time (cudarc `dynamic-loading`);
//! the caller has checked they exist, since cudarc panics where they do not.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use cudarc::cublas::result::CublasError;
use cudarc::driver::sys::{CUdevice_attribute, CUevent_flags};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, DriverError, LaunchConfig,
};
use cudarc::nvrtc::{CompileError, compile_ptx};
use provisioner_protocol::burnin::{BurnInPlan, checks};

use super::measure::{copy_tbps, link_gbps};
use super::steps::Step;
use super::supervise::Reporter;

const KERNELS: &str = include_str!("kernels.cu");

/// The device-to-device copy: up to 4 GiB, copied this many times after one warm-up.
const COPY_BYTES: usize = 4 << 30;
const COPY_REPS: u32 = 20;
/// Host↔device and GPU↔GPU copies.
pub const LINK_BYTES: usize = 256 << 20;
pub const LINK_REPS: u32 = 10;
const THREADS: u32 = 256;

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("CUDA: {0}")]
    Driver(#[from] DriverError),
    #[error("NVRTC: {0}")]
    Compile(#[from] CompileError),
    #[error("cuBLAS: {0}")]
    Blas(#[from] CublasError),
    #[error("no device memory could be allocated")]
    NoMemory,
    /// A kernel and its host-side twin disagree: the check itself cannot be trusted.
    #[error("self-check: {0}")]
    SelfCheck(String),
}

/// What one GPU's worker is asked to run.
pub struct GpuJob {
    pub id: String,
    pub ordinal: usize,
    /// In order, from `Step::PER_GPU`.
    pub steps: Vec<Step>,
    pub plan: BurnInPlan,
    /// Held through the PCIe step: GPUs behind one switch would share its uplink, and each
    /// GPU's figure would then depend on which others happened to copy at the same time.
    pub pcie_turn: Arc<Mutex<()>>,
}

/// What it measured; `error` says why it stopped early (the GPU cannot be validated).
#[derive(Debug, Default)]
pub struct GpuOutput {
    /// (check, value, unit).
    pub measurements: Vec<(&'static str, f64, &'static str)>,
    pub counters: BTreeMap<&'static str, u64>,
    /// Hash of the first GEMM result, to compare across the node's GPUs.
    pub gemm_hash: Option<u64>,
    pub error: Option<String>,
}

/// The worker: every step of `job` in order, stopping at the first error (a GPU that failed
/// once is not trusted to measure the rest).
pub fn burn(job: &GpuJob, reporter: &Reporter<GpuOutput>) -> GpuOutput {
    let say = |line: String| reporter.say(format!("burn-in gpu {}: {line}", job.id));
    let mut out = GpuOutput::default();
    reporter.begin(Step::Setup, Step::Setup.limit(&job.plan));
    let gpu = match Gpu::open(job.ordinal) {
        Ok(gpu) => gpu,
        Err(e) => {
            out.error = Some(format!("setup: {e}"));
            return out;
        }
    };
    for &step in &job.steps {
        reporter.begin(step, step.limit(&job.plan));
        let done = match step {
            Step::Pattern => gpu.pattern(job.plan.hbm_fraction, &say, &mut out),
            Step::Copy => gpu.copy(&say, &mut out),
            Step::Gemm => gpu.gemm(job.plan.gemm_seconds, &say, &mut out),
            Step::Pcie => {
                // A worker that panicked holding the turn left nothing half-done to protect.
                let _turn = job.pcie_turn.lock().unwrap_or_else(|e| e.into_inner());
                gpu.pcie(&say, &mut out)
            }
            Step::Setup | Step::P2p => Ok(()),
        };
        if let Err(e) = done {
            out.error = Some(format!("{}: {e}", step.name()));
            break;
        }
    }
    out
}

pub struct Kernels {
    pub pattern_write: CudaFunction,
    pub pattern_verify: CudaFunction,
    pub fill_bf16: CudaFunction,
    pub words_differ: CudaFunction,
    pub tally: CudaFunction,
    pub words_hash: CudaFunction,
}

/// One GPU's context, its stream, and the compiled kernels.
pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub kernels: Kernels,
    /// Grid for the grid-stride kernels: enough blocks to fill every SM.
    pub grid: LaunchConfig,
}

impl Gpu {
    fn open(ordinal: usize) -> Result<Gpu, GpuError> {
        let ctx = CudaContext::new(ordinal)?;
        let stream = ctx.default_stream();
        let module = ctx.load_module(compile_ptx(KERNELS)?)?;
        let kernels = Kernels {
            pattern_write: module.load_function("pattern_write")?,
            pattern_verify: module.load_function("pattern_verify")?,
            fill_bf16: module.load_function("fill_bf16")?,
            words_differ: module.load_function("words_differ")?,
            tally: module.load_function("tally")?,
            words_hash: module.load_function("words_hash")?,
        };
        let sms = ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
        let grid = LaunchConfig {
            grid_dim: (u32::try_from(sms.max(1)).unwrap_or(1) * 8, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let gpu = Gpu {
            ctx,
            stream,
            kernels,
            grid,
        };
        gpu.check_pattern_kernels()?;
        Ok(gpu)
    }

    /// An event that records time, for timing work on the stream.
    pub fn mark(&self) -> Result<CudaEvent, DriverError> {
        self.stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
    }

    /// HBM bandwidth: a device-to-device copy reads and writes each byte.
    fn copy(&self, say: &dyn Fn(String), out: &mut GpuOutput) -> Result<(), GpuError> {
        let (free, _) = self.ctx.mem_get_info()?;
        let bytes = COPY_BYTES.min(free / 4) & !0xFFFF;
        if bytes == 0 {
            return Err(GpuError::NoMemory);
        }
        // SAFETY: only copied, never read on the host.
        let src: CudaSlice<u8> = unsafe { self.stream.alloc(bytes) }?;
        let mut dst: CudaSlice<u8> = unsafe { self.stream.alloc(bytes) }?;
        self.stream.memcpy_dtod(&src, &mut dst)?;
        let start = self.mark()?;
        for _ in 0..COPY_REPS {
            self.stream.memcpy_dtod(&src, &mut dst)?;
        }
        let end = self.mark()?;
        let seconds = f64::from(start.elapsed_ms(&end)?) / 1e3;
        let tbps = copy_tbps(bytes as u64, COPY_REPS, seconds);
        say(format!(
            "hbm copy: {:.2} TB/s ({:.1} GB × {COPY_REPS})",
            tbps,
            bytes as f64 / 1e9
        ));
        out.measurements.push((checks::HBM_COPY, tbps, "TB/s"));
        Ok(())
    }

    /// Host↔device over PCIe, from and to page-locked host memory.
    fn pcie(&self, say: &dyn Fn(String), out: &mut GpuOutput) -> Result<(), GpuError> {
        // SAFETY: zeroed right below, before any copy reads it.
        let mut host = unsafe { self.ctx.alloc_pinned_with_flags::<u8>(LINK_BYTES, 0) }?;
        // SAFETY: the pointer is to LINK_BYTES bytes of our own allocation.
        unsafe { std::ptr::write_bytes(host.as_mut_ptr()?, 0, LINK_BYTES) };
        // SAFETY: written by the first copy before anything reads it.
        let mut dev: CudaSlice<u8> = unsafe { self.stream.alloc(LINK_BYTES) }?;
        self.stream.memcpy_htod(&host, &mut dev)?;
        self.stream.memcpy_dtoh(&dev, &mut host)?;
        let start = self.mark()?;
        for _ in 0..LINK_REPS {
            self.stream.memcpy_htod(&host, &mut dev)?;
        }
        let middle = self.mark()?;
        for _ in 0..LINK_REPS {
            self.stream.memcpy_dtoh(&dev, &mut host)?;
        }
        let end = self.mark()?;
        let rate = |ms: f32| link_gbps(LINK_BYTES as u64, LINK_REPS, f64::from(ms) / 1e3);
        let h2d = rate(start.elapsed_ms(&middle)?);
        let d2h = rate(middle.elapsed_ms(&end)?);
        say(format!(
            "pcie: host→device {h2d:.1} GB/s, device→host {d2h:.1} GB/s"
        ));
        out.measurements.push((checks::PCIE_H2D, h2d, "GB/s"));
        out.measurements.push((checks::PCIE_D2H, d2h, "GB/s"));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KERNEL_NAMES: [&str; 6] = [
        "pattern_write",
        "pattern_verify",
        "fill_bf16",
        "words_differ",
        "tally",
        "words_hash",
    ];

    #[test]
    fn the_kernels_source_defines_every_kernel_loaded() {
        for name in KERNEL_NAMES {
            assert!(
                KERNELS.contains(&format!("extern \"C\" __global__ void {name}(")),
                "{name}"
            );
        }
    }

    /// Runs where libnvrtc can be loaded (no GPU needed): point LD_LIBRARY_PATH at one.
    #[test]
    fn the_kernels_compile_with_nvrtc_where_it_is_present() {
        // SAFETY: only tries to dlopen libnvrtc.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            eprintln!("no libnvrtc here: the kernels were not compiled");
            return;
        }
        let ptx = compile_ptx(KERNELS).unwrap_or_else(|e| panic!("{e}"));
        let text = ptx.to_src();
        for name in KERNEL_NAMES {
            assert!(text.contains(&format!(".entry {name}(")), "{name}");
        }
    }
}
