//! Compute and silent data corruption: cuBLAS bf16 GEMM 8192³ on seeded inputs (the same on
//! every GPU), repeated for the plan's time. Each product is compared on the GPU, bit for bit,
//! with the first; the first's hash goes back to be compared across the node's GPUs; each
//! product is timed with events for its TFLOP/s.

use std::time::{Duration, Instant};

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{CudaEvent, CudaSlice, DriverError, LaunchConfig, PushKernelArg};
use half::bf16;
use provisioner_protocol::burnin::checks;

use super::cuda::{Gpu, GpuError, GpuOutput};
use super::measure::{GEMM_SEED_A, GEMM_SEED_B, gemm_input, percentile, tflops, words_hash};

/// 8192³, as the fixtures and the vendors' figures use.
const GEMM_N: usize = 8192;
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
const ONE_THREAD: LaunchConfig = LaunchConfig {
    grid_dim: (1, 1, 1),
    block_dim: (1, 1, 1),
    shared_mem_bytes: 0,
};

/// The inputs, the first product, and the buffer each later product lands in.
struct Operands {
    a: CudaSlice<bf16>,
    b: CudaSlice<bf16>,
    c: CudaSlice<bf16>,
    first: CudaSlice<bf16>,
    blas: CudaBlas,
    cfg: GemmConfig<bf16>,
}

impl Operands {
    /// The result's size in the 32-bit words the compare and hash kernels read.
    fn words(&self) -> u64 {
        (self.first.len() / 2) as u64
    }
}

/// Counters on the GPU: words differing in the current product, products that differed,
/// and differing words in all.
struct Mismatches {
    differ: CudaSlice<u64>,
    products: CudaSlice<u64>,
    words: CudaSlice<u64>,
}

impl Gpu {
    pub(super) fn gemm(
        &self,
        seconds: u32,
        say: &dyn Fn(String),
        out: &mut GpuOutput,
    ) -> Result<(), GpuError> {
        let mut ops = self.operands()?;
        let hash = self.first_product(&mut ops)?;
        let mut mismatches = Mismatches {
            differ: self.stream.alloc_zeros::<u64>(1)?,
            products: self.stream.alloc_zeros::<u64>(1)?,
            words: self.stream.alloc_zeros::<u64>(1)?,
        };
        let rates = self.sustain(&mut ops, &mut mismatches, seconds, say)?;
        self.stream.synchronize()?;
        let mismatched = self.stream.clone_dtoh(&mismatches.products)?[0];
        let wrong = self.stream.clone_dtoh(&mismatches.words)?[0];
        out.gemm_hash = Some(hash);
        out.counters.insert(checks::GEMM_MISMATCHES, mismatched);
        let p50 = percentile(&rates, 50.0);
        let p05 = percentile(&rates, 5.0);
        say(format!(
            "gemm: {} products, p50 {:.0} p05 {:.0} TFLOP/s, {mismatched} differ from the first \
             ({wrong} words)",
            rates.len() + 1,
            p50.unwrap_or(0.0),
            p05.unwrap_or(0.0),
        ));
        if let (Some(p50), Some(p05)) = (p50, p05) {
            out.measurements
                .push((checks::GEMM_BF16_P50, p50, "TFLOP/s"));
            out.measurements
                .push((checks::GEMM_BF16_P05, p05, "TFLOP/s"));
        }
        Ok(())
    }

    /// The seeded inputs, checked against their host-side twin (`gemm_input`).
    fn operands(&self) -> Result<Operands, GpuError> {
        let elems = GEMM_N * GEMM_N;
        let mut a = self.stream.alloc_zeros::<bf16>(elems)?;
        let mut b = self.stream.alloc_zeros::<bf16>(elems)?;
        self.fill_bf16(&mut a, GEMM_SEED_A)?;
        self.fill_bf16(&mut b, GEMM_SEED_B)?;
        let head = self.stream.clone_dtoh(&a.slice(0..4096))?;
        let want = |i: usize| gemm_input(GEMM_SEED_A, i as u64);
        if let Some(i) = (0..head.len()).find(|&i| head[i].to_bits() != want(i)) {
            return Err(GpuError::SelfCheck(format!(
                "fill_bf16 element {i}: {:#06x}, host says {:#06x}",
                head[i].to_bits(),
                want(i)
            )));
        }
        let n = GEMM_N as i32;
        Ok(Operands {
            a,
            b,
            c: self.stream.alloc_zeros::<bf16>(elems)?,
            first: self.stream.alloc_zeros::<bf16>(elems)?,
            blas: CudaBlas::new(self.stream.clone())?,
            cfg: GemmConfig {
                transa: cublasOperation_t::CUBLAS_OP_N,
                transb: cublasOperation_t::CUBLAS_OP_N,
                m: n,
                n,
                k: n,
                alpha: bf16::ONE,
                lda: n,
                ldb: n,
                beta: bf16::ZERO,
                ldc: n,
            },
        })
    }

    fn fill_bf16(&self, buf: &mut CudaSlice<bf16>, seed: u64) -> Result<(), DriverError> {
        let n = buf.len() as u64;
        let mut launch = self.stream.launch_builder(&self.kernels.fill_bf16);
        launch.arg(buf).arg(&n).arg(&seed);
        // SAFETY: `fill_bf16` writes n 16-bit words to buf.
        unsafe { launch.launch(self.grid) }?;
        Ok(())
    }

    /// The first product and its hash, computed on the GPU and checked on the host.
    fn first_product(&self, ops: &mut Operands) -> Result<u64, GpuError> {
        // SAFETY: a, b and first are n×n, column-major with leading dimension n.
        unsafe { ops.blas.gemm(ops.cfg, &ops.a, &ops.b, &mut ops.first) }?;
        let words = ops.words();
        let mut hash = self.stream.alloc_zeros::<u64>(1)?;
        let mut launch = self.stream.launch_builder(&self.kernels.words_hash);
        launch.arg(&ops.first).arg(&words).arg(&mut hash);
        // SAFETY: first holds `words` 32-bit words; hash one counter.
        unsafe { launch.launch(self.grid) }?;
        let on_gpu = self.stream.clone_dtoh(&hash)?[0];
        let on_host = words_hash(&as_words(&self.stream.clone_dtoh(&ops.first)?));
        if on_gpu != on_host {
            return Err(GpuError::SelfCheck(format!(
                "words_hash {on_gpu:#x}, host says {on_host:#x}"
            )));
        }
        Ok(on_gpu)
    }

    /// Products for `seconds`, each followed by its comparison with the first; the
    /// per-product TFLOP/s. Two pairs of events: product i is queued before product i-1's
    /// time is read, so the GPU never waits for the host.
    fn sustain(
        &self,
        ops: &mut Operands,
        mismatches: &mut Mismatches,
        seconds: u32,
        say: &dyn Fn(String),
    ) -> Result<Vec<f64>, GpuError> {
        let events = [(self.mark()?, self.mark()?), (self.mark()?, self.mark()?)];
        let rate = |(start, end): &(CudaEvent, CudaEvent)| -> Result<f64, DriverError> {
            Ok(tflops(
                GEMM_N as u64,
                f64::from(start.elapsed_ms(end)?) / 1e3,
            ))
        };
        let mut rates = Vec::new();
        let started = Instant::now();
        let limit = Duration::from_secs(u64::from(seconds));
        let mut said = (started, 0usize);
        let mut i = 0usize;
        while started.elapsed() < limit {
            let (start, end) = &events[i % 2];
            start.record(&self.stream)?;
            // SAFETY: as for the first product.
            unsafe { ops.blas.gemm(ops.cfg, &ops.a, &ops.b, &mut ops.c) }?;
            end.record(&self.stream)?;
            self.compare(ops, mismatches)?;
            if i > 0 {
                rates.push(rate(&events[(i - 1) % 2])?);
            }
            i += 1;
            if said.0.elapsed() >= PROGRESS_EVERY {
                let p50 = percentile(&rates[said.1..], 50.0).unwrap_or(0.0);
                say(format!(
                    "gemm {}/{seconds} s, {p50:.0} TFLOP/s",
                    started.elapsed().as_secs()
                ));
                said = (Instant::now(), rates.len());
            }
        }
        if i > 0 {
            rates.push(rate(&events[(i - 1) % 2])?);
        }
        Ok(rates)
    }

    /// Queues the comparison of the latest product with the first, and its tally.
    fn compare(&self, ops: &Operands, m: &mut Mismatches) -> Result<(), DriverError> {
        let words = ops.words();
        let mut launch = self.stream.launch_builder(&self.kernels.words_differ);
        launch
            .arg(&ops.c)
            .arg(&ops.first)
            .arg(&words)
            .arg(&mut m.differ);
        // SAFETY: c and first hold `words` 32-bit words; differ is one counter.
        unsafe { launch.launch(self.grid) }?;
        let mut launch = self.stream.launch_builder(&self.kernels.tally);
        launch
            .arg(&mut m.differ)
            .arg(&mut m.products)
            .arg(&mut m.words);
        // SAFETY: three single counters, one thread.
        unsafe { launch.launch(ONE_THREAD) }?;
        Ok(())
    }
}

/// bf16 elements as the 32-bit words the compare and hash kernels read (little-endian pairs).
fn as_words(elems: &[bf16]) -> Vec<u32> {
    elems
        .chunks_exact(2)
        .map(|pair| u32::from(pair[0].to_bits()) | (u32::from(pair[1].to_bits()) << 16))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_pairs_are_little_endian_words() {
        let elems = [
            bf16::from_bits(0x3F80),
            bf16::from_bits(0xBF00),
            bf16::from_bits(1),
        ];
        assert_eq!(as_words(&elems), vec![0xBF00_3F80]);
    }
}
