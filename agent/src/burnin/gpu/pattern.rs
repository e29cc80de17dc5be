//! HBM integrity: walking ones and zeros, seeded random streams and each word's own address,
//! written and verified by NVRTC kernels over most of a GPU's free memory, every wrong word
//! counted and the first few kept with their addresses. Before any of it, the kernels are
//! checked against their host-side twins on a small buffer.

use cudarc::driver::sys::CUresult;
use cudarc::driver::{CudaSlice, DevicePtr, DriverError, PushKernelArg};
use provisioner_protocol::burnin::checks;

use super::cuda::{Gpu, GpuError, GpuOutput};
use super::measure::{Pattern, pattern_coverage, pattern_words};

/// Bad words whose address (and flipped bits) the test keeps.
const BAD_AT_LEN: u32 = 8;
/// Chunks of 2 GiB down to 64 MiB, halved whenever an allocation fails.
const CHUNK_MAX_WORDS: usize = 1 << 28;
const CHUNK_MIN_WORDS: usize = 1 << 23;

/// Where the test counts bad words and keeps the first ones' (address, flipped bits).
struct Tally {
    bad: CudaSlice<u64>,
    bad_at: CudaSlice<u64>,
    bad_at_len: u32,
}

impl Tally {
    fn new(gpu: &Gpu, bad_at_len: u32) -> Result<Tally, DriverError> {
        Ok(Tally {
            bad: gpu.stream.alloc_zeros::<u64>(1)?,
            bad_at: gpu.stream.alloc_zeros::<u64>(2 * bad_at_len as usize)?,
            bad_at_len,
        })
    }

    /// (bad words, the kept (address, flipped bits) pairs flattened).
    fn read(&self, gpu: &Gpu) -> Result<(u64, Vec<u64>), DriverError> {
        Ok((
            gpu.stream.clone_dtoh(&self.bad)?[0],
            gpu.stream.clone_dtoh(&self.bad_at)?,
        ))
    }
}

impl Gpu {
    /// Every pass writes all the memory held, then verifies all of it, so a word is read back
    /// only after every other chunk was written (aliased addresses show).
    pub(super) fn pattern(
        &self,
        fraction: f64,
        say: &dyn Fn(String),
        out: &mut GpuOutput,
    ) -> Result<(), GpuError> {
        let (free, _) = self.ctx.mem_get_info()?;
        let words = pattern_words(free, fraction);
        let mut chunks = self.alloc_chunks(words)?;
        let held: usize = chunks.iter().map(|c| c.len()).sum();
        let (coverage, short) = pattern_coverage(free, words, held);
        out.measurements
            .push((checks::HBM_PATTERN_COVERAGE, coverage, "fraction"));
        out.counters
            .insert(checks::HBM_COVERAGE_SHORT, u64::from(short));
        if held == 0 {
            return Err(GpuError::NoMemory);
        }
        if short {
            say(format!(
                "hbm pattern: could hold only {:.1} GB of the {:.1} GB asked for",
                (held * 8) as f64 / 1e9,
                (words * 8) as f64 / 1e9
            ));
        }
        let passes = Pattern::all();
        say(format!(
            "hbm pattern: {} passes over {:.1} GB ({:.1}% of {:.1} GB free)",
            passes.len(),
            (held * 8) as f64 / 1e9,
            (held * 8) as f64 * 100.0 / free as f64,
            free as f64 / 1e9
        ));
        let mut tally = Tally::new(self, BAD_AT_LEN)?;
        for (done, pattern) in passes.iter().enumerate() {
            let mut first = 0u64;
            for chunk in &mut chunks {
                self.write_pattern(chunk, first, *pattern)?;
                first += chunk.len() as u64;
            }
            let mut first = 0u64;
            for chunk in &chunks {
                self.verify_pattern(chunk, first, *pattern, &mut tally)?;
                first += chunk.len() as u64;
            }
            if (done + 1) % 32 == 0 {
                let so_far = tally.read(self)?.0;
                say(format!(
                    "hbm pattern {}/{} passes, {so_far} bad words",
                    done + 1,
                    passes.len()
                ));
            }
        }
        // Hand the memory back before the next step asks how much is free: freed memory
        // returns from the stream's pool to the device at the next synchronization.
        drop(chunks);
        self.stream.synchronize()?;
        let (count, at) = tally.read(self)?;
        out.counters.insert(checks::PATTERN_BAD_WORDS, count);
        if count > 0 {
            say(format!(
                "hbm pattern: {count} bad words; first at {}",
                bad_words(&at, count)
            ));
        } else {
            say("hbm pattern: no bad words".to_string());
        }
        Ok(())
    }

    /// `chunk` holds words `first..` of the whole test.
    fn write_pattern(
        &self,
        chunk: &mut CudaSlice<u64>,
        first: u64,
        pattern: Pattern,
    ) -> Result<(), DriverError> {
        let n = chunk.len() as u64;
        let (kind, param) = pattern.kernel_args();
        let mut launch = self.stream.launch_builder(&self.kernels.pattern_write);
        launch.arg(chunk).arg(&n).arg(&first).arg(&kind).arg(&param);
        // SAFETY: the arguments match `pattern_write`, and n is the chunk's length.
        unsafe { launch.launch(self.grid) }?;
        Ok(())
    }

    fn verify_pattern(
        &self,
        chunk: &CudaSlice<u64>,
        first: u64,
        pattern: Pattern,
        tally: &mut Tally,
    ) -> Result<(), DriverError> {
        let n = chunk.len() as u64;
        let (kind, param) = pattern.kernel_args();
        let mut launch = self.stream.launch_builder(&self.kernels.pattern_verify);
        launch
            .arg(chunk)
            .arg(&n)
            .arg(&first)
            .arg(&kind)
            .arg(&param)
            .arg(&mut tally.bad)
            .arg(&mut tally.bad_at)
            .arg(&tally.bad_at_len);
        // SAFETY: as above; bad_at holds bad_at_len (address, bits) pairs.
        unsafe { launch.launch(self.grid) }?;
        Ok(())
    }

    /// As much of `words` as can be had, in chunks; a failed allocation halves the chunk.
    fn alloc_chunks(&self, words: usize) -> Result<Vec<CudaSlice<u64>>, GpuError> {
        let mut chunks = Vec::new();
        let mut left = words;
        let mut size = CHUNK_MAX_WORDS;
        while left > 0 && size >= CHUNK_MIN_WORDS.min(left) {
            let want = size.min(left);
            // SAFETY: the pattern test writes every word before it reads any.
            match unsafe { self.stream.alloc::<u64>(want) } {
                Ok(chunk) => {
                    chunks.push(chunk);
                    left -= want;
                }
                Err(DriverError(CUresult::CUDA_ERROR_OUT_OF_MEMORY)) => size /= 2,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(chunks)
    }

    /// The pattern kernels against `Pattern::word` on a small buffer: what they write, that
    /// verify finds nothing wrong in it, and that it finds one word corrupted from the host,
    /// at its address, with the flipped bits.
    pub(super) fn check_pattern_kernels(&self) -> Result<(), GpuError> {
        const N: usize = 4096;
        const FIRST: u64 = 1_000_003;
        const CORRUPT_AT: usize = 7;
        const FLIP: u64 = 0x10;
        let mut buf = self.stream.alloc_zeros::<u64>(N)?;
        let base = buf.device_ptr(&self.stream).0;
        for pattern in [
            Pattern::WalkingOnes(5),
            Pattern::WalkingZeros(9),
            Pattern::Random(0x5EED_0001),
            Pattern::OwnAddress,
        ] {
            self.write_pattern(&mut buf, FIRST, pattern)?;
            let got = self.stream.clone_dtoh(&buf)?;
            let want = |j: usize| pattern.word(FIRST + j as u64, base + 8 * j as u64);
            if let Some(j) = (0..N).find(|&j| got[j] != want(j)) {
                return Err(GpuError::SelfCheck(format!(
                    "pattern_write {pattern:?} word {j}: {:#x}, host says {:#x}",
                    got[j],
                    want(j)
                )));
            }
            for corrupt in [false, true] {
                if corrupt {
                    let mut word = buf.slice_mut(CORRUPT_AT..CORRUPT_AT + 1);
                    self.stream
                        .memcpy_htod(&[want(CORRUPT_AT) ^ FLIP], &mut word)?;
                }
                let mut tally = Tally::new(self, 1)?;
                self.verify_pattern(&buf, FIRST, pattern, &mut tally)?;
                let found = tally.read(self)?;
                let expected = match corrupt {
                    true => (1, vec![base + 8 * CORRUPT_AT as u64, FLIP]),
                    false => (0, vec![0, 0]),
                };
                if found != expected {
                    return Err(GpuError::SelfCheck(format!(
                        "pattern_verify {pattern:?} (corrupted: {corrupt}) found {found:x?}, \
                         expected {expected:x?}"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// `0x…: bits 0x… flipped` for the bad words the verify kernel kept.
fn bad_words(at: &[u64], count: u64) -> String {
    at.chunks_exact(2)
        .take(count.min(u64::from(BAD_AT_LEN)) as usize)
        .map(|pair| format!("{:#x} (bits {:#018x} flipped)", pair[0], pair[1]))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_words_name_address_and_flipped_bits() {
        let at = [0x7f00_0000_1000, 1 << 8, 0x7f00_0000_2000, 3, 0, 0];
        assert_eq!(
            bad_words(&at, 2),
            "0x7f0000001000 (bits 0x0000000000000100 flipped), \
             0x7f0000002000 (bits 0x0000000000000003 flipped)"
        );
        // More bad words than kept: only the kept ones are named.
        assert_eq!(bad_words(&at[..2], 1000).matches("flipped").count(), 1);
    }
}
