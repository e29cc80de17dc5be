//! The CUDA work on one GPU, run on a worker thread: its context, stream and NVRTC-compiled
//! kernels, the steps in order, each step's result sent back as soon as it has one, and the
//! HBM copy. The pattern test and the GEMM live in their own files; the copies over PCIe and
//! between GPUs in `peers.rs`. The libraries are loaded at run time (cudarc
//! `dynamic-loading`); the caller has checked they exist, since cudarc panics where they do
//! not.

use std::collections::BTreeMap;
use std::sync::Arc;

use cudarc::cublas::result::CublasError;
use cudarc::driver::sys::{CUdevice_attribute, CUevent_flags};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, DriverError, LaunchConfig,
};
use cudarc::nvrtc::result::NvrtcError;
use cudarc::nvrtc::sys::nvrtcResult;
use cudarc::nvrtc::{CompileError, CompileOptions, Ptx, compile_ptx, compile_ptx_with_opts};
use nvml_wrapper::Nvml;
use nvml_wrapper::error::NvmlError;
use provisioner_protocol::burnin::{BurnInPlan, checks};

use super::measure::copy_tbps;
use super::steps::Step;
use super::supervise::Reporter;

const KERNELS: &str = include_str!("kernels.cu");

/// The device-to-device copy: up to 4 GiB, copied this many times after one warm-up.
const COPY_BYTES: usize = 4 << 30;
const COPY_REPS: u32 = 20;
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
    /// To pin the worker to the GPU's CPUs.
    pub nvml: Arc<Nvml>,
}

/// What one step measured; `error` says why it stopped (the GPU cannot be validated).
#[derive(Debug, Default, PartialEq)]
pub struct GpuOutput {
    /// (check, value, unit).
    pub measurements: Vec<(&'static str, f64, &'static str)>,
    pub counters: BTreeMap<&'static str, u64>,
    /// Hash of the first GEMM result, to compare across the node's GPUs.
    pub gemm_hash: Option<u64>,
    pub error: Option<String>,
}

/// The worker: every step of `job` in order, each step's output delivered as it ends,
/// stopping at the first error (a GPU that failed once is not trusted to measure the rest).
pub fn burn(job: &GpuJob, reporter: &Reporter<GpuOutput>) {
    let say = |line: String| reporter.say(format!("burn-in gpu {}: {line}", job.id));
    reporter.begin(Step::Setup, Step::Setup.limit(&job.plan));
    if let Err(e) = pin_to_local_cpus(&job.nvml, &job.id) {
        say(format!("not pinned to the GPU's local CPUs: {e}"));
    }
    let gpu = match Gpu::open(job.ordinal, &say) {
        Ok(gpu) => gpu,
        Err(e) => {
            reporter.deliver(GpuOutput {
                error: Some(format!("setup: {e}")),
                ..GpuOutput::default()
            });
            return;
        }
    };
    for &step in &job.steps {
        reporter.begin(step, step.limit(&job.plan));
        let mut out = GpuOutput::default();
        let done = match step {
            Step::Pattern => gpu.pattern(job.plan.hbm_fraction, &say, &mut out),
            Step::Copy => gpu.copy(&say, &mut out),
            Step::Gemm => gpu.gemm(job.plan.gemm_seconds, &say, &mut out),
            // Not a worker's: they run one GPU at a time after the workers.
            Step::Setup | Step::Pcie | Step::P2p => Ok(()),
        };
        let failed = done.is_err();
        if let Err(e) = done {
            out.error = Some(format!("{}: {e}", step.name()));
        }
        reporter.deliver(out);
        if failed {
            break;
        }
    }
}

/// Binds the calling thread to the CPUs NVML calls local to the GPU `id` (its NUMA node),
/// so the host memory it pins and the copies it drives stay near the GPU's PCIe root.
pub fn pin_to_local_cpus(nvml: &Nvml, id: &str) -> Result<(), NvmlError> {
    nvml.device_by_pci_bus_id(id)?.set_cpu_affinity()
}

/// NVRTC's option for PTX of the device's virtual architecture (`compute_90` for an H100).
/// PTX, not a cubin (`sm_90`): cudarc's compile returns PTX only, and the driver compiles it
/// for the device's own `sm_XY` when the module loads.
pub fn arch_option(major: i32, minor: i32) -> String {
    format!("--gpu-architecture=compute_{major}{minor}")
}

/// The kernels for the device's architecture. An NVRTC older than the device does not know
/// that architecture: the kernels are then compiled for NVRTC's default, whose PTX the
/// driver still compiles forward for the device.
fn compile_kernels(major: i32, minor: i32, say: &dyn Fn(String)) -> Result<Ptx, CompileError> {
    let arch = arch_option(major, minor);
    let opts = CompileOptions {
        options: vec![arch.clone()],
        ..CompileOptions::default()
    };
    match compile_ptx_with_opts(KERNELS, opts) {
        Err(CompileError::CompileError {
            nvrtc: NvrtcError(nvrtcResult::NVRTC_ERROR_INVALID_OPTION),
            ..
        }) => {
            say(format!(
                "NVRTC does not take {arch}: kernels compiled for its default architecture"
            ));
            compile_ptx(KERNELS)
        }
        compiled => compiled,
    }
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
    fn open(ordinal: usize, say: &dyn Fn(String)) -> Result<Gpu, GpuError> {
        let ctx = CudaContext::new(ordinal)?;
        let stream = ctx.default_stream();
        let (major, minor) = ctx.compute_capability()?;
        let module = ctx.load_module(compile_kernels(major, minor, say)?)?;
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
        // H100/H200 and B200: the PTX names the target it was compiled for. An architecture
        // NVRTC does not know (99.9) falls back to its default.
        // (major, minor, whether NVRTC must fall back: `None` where it depends on its version)
        for (major, minor, falls_back) in [(9, 0, Some(false)), (10, 0, None), (99, 9, Some(true))]
        {
            let fell_back = std::cell::Cell::new(false);
            let ptx = compile_kernels(major, minor, &|_| fell_back.set(true))
                .unwrap_or_else(|e| panic!("{e}"));
            let text = ptx.to_src();
            for name in KERNEL_NAMES {
                assert!(text.contains(&format!(".entry {name}(")), "{name}");
            }
            let target = format!(".target sm_{major}{minor}");
            assert_eq!(text.contains(&target), !fell_back.get(), "{major}.{minor}");
            if let Some(falls_back) = falls_back {
                assert_eq!(fell_back.get(), falls_back, "{major}.{minor}");
            }
        }
    }

    #[test]
    fn the_architecture_option_names_the_virtual_architecture() {
        assert_eq!(arch_option(9, 0), "--gpu-architecture=compute_90");
        assert_eq!(arch_option(10, 0), "--gpu-architecture=compute_100");
        assert_eq!(arch_option(8, 6), "--gpu-architecture=compute_86");
    }
}
