//! The arithmetic of the GPU burn-in, kept apart from the GPU so it can be tested here: the
//! patterns and inputs the kernels write (each formula has a twin in `kernels.cu`), rates from
//! bytes and times, percentiles, and the comparison of GEMM results across a node's GPUs.

/// Weyl increment of splitmix64 (Steele, Lea, Flood 2014): the seeded stream behind the random
/// pattern and the GEMM inputs.
pub const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The splitmix64 finalizer.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Element `index` of the splitmix64 stream seeded with `seed`: any element can be computed on
/// its own, so every GPU thread (and the host, to check) gets the same word for the same index.
pub fn splitmix(seed: u64, index: u64) -> u64 {
    mix64(seed.wrapping_add(index.wrapping_add(1).wrapping_mul(GOLDEN)))
}

/// One pass of the HBM pattern test over all the memory it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// One set bit, at position `(index + shift) % 64`: 64 shifts put every bit of every word
    /// through a one, with neighbouring words different.
    WalkingOnes(u32),
    /// The complement: one clear bit in a word of ones.
    WalkingZeros(u32),
    /// The splitmix64 stream with this seed.
    Random(u64),
    /// Each word holds its own device address: catches aliased or swapped addresses.
    OwnAddress,
}

impl Pattern {
    /// The `(kind, param)` pair the kernels take (`pattern_word` in `kernels.cu`).
    pub fn kernel_args(self) -> (u32, u64) {
        match self {
            Pattern::WalkingOnes(shift) => (0, u64::from(shift)),
            Pattern::WalkingZeros(shift) => (1, u64::from(shift)),
            Pattern::Random(seed) => (2, seed),
            Pattern::OwnAddress => (3, 0),
        }
    }

    /// The word the kernel writes at global word `index`, whose device address is `address`.
    pub fn word(self, index: u64, address: u64) -> u64 {
        match self {
            Pattern::WalkingOnes(shift) => 1u64 << (index.wrapping_add(u64::from(shift)) & 63),
            Pattern::WalkingZeros(shift) => !(1u64 << (index.wrapping_add(u64::from(shift)) & 63)),
            Pattern::Random(seed) => splitmix(seed, index),
            Pattern::OwnAddress => address,
        }
    }

    /// Every pass of the test, in order: 64 shifts of walking ones, 64 of walking zeros, two
    /// random streams and the address pass. At HBM speed that is a few seconds per GPU.
    pub fn all() -> Vec<Pattern> {
        let mut passes: Vec<Pattern> = (0..64).map(Pattern::WalkingOnes).collect();
        passes.extend((0..64).map(Pattern::WalkingZeros));
        passes.extend([Pattern::Random(0x5EED_0001), Pattern::Random(0x5EED_0002)]);
        passes.push(Pattern::OwnAddress);
        passes
    }
}

/// The 64-bit words the pattern test asks for: `fraction` of `free_bytes`.
pub fn pattern_words(free_bytes: usize, fraction: f64) -> usize {
    (free_bytes as f64 * fraction.clamp(0.0, 1.0)) as usize / 8
}

/// What the pattern test covered: the fraction of free memory it held, and whether it held
/// less than it asked for (`pattern_words`), as when allocations kept failing.
pub fn pattern_coverage(free_bytes: usize, wanted_words: usize, held_words: usize) -> (f64, bool) {
    let fraction = if free_bytes == 0 {
        0.0
    } else {
        (held_words as f64 * 8.0 / free_bytes as f64).min(1.0)
    };
    (fraction, held_words < wanted_words || held_words == 0)
}

/// The GEMM inputs' seeds: the same on every GPU, so every GPU must compute the same product.
pub const GEMM_SEED_A: u64 = 0xA;
pub const GEMM_SEED_B: u64 = 0xB;

/// The bf16 bit pattern `fill_bf16` writes at `index`: a random sign and a magnitude in
/// [0.5, 1), built from integers so no rounding mode can make two GPUs disagree.
pub fn gemm_input(seed: u64, index: u64) -> u16 {
    let r = splitmix(seed, index);
    (((r >> 63) << 15) | 0x3F00 | (r & 0x7F)) as u16
}

/// The order-independent hash `words_hash` computes over a result: the wrapping sum of the
/// mixed (index, word) pairs, so the order of the atomic adds cannot change it.
pub fn words_hash(words: &[u32]) -> u64 {
    words.iter().enumerate().fold(0u64, |sum, (i, &w)| {
        sum.wrapping_add(mix64(((i as u64) << 32) ^ u64::from(w)))
    })
}

/// Floating-point operations of one n×n by n×n product: n³ multiply-adds.
pub fn gemm_flops(n: u64) -> f64 {
    2.0 * (n as f64).powi(3)
}

/// TFLOP/s of one n³ product that took `seconds`.
pub fn tflops(n: u64, seconds: f64) -> f64 {
    gemm_flops(n) / seconds / 1e12
}

/// A device-to-device copy reads and writes every byte: TB/s of `bytes` copied `reps` times.
pub fn copy_tbps(bytes: u64, reps: u32, seconds: f64) -> f64 {
    2.0 * bytes as f64 * f64::from(reps) / seconds / 1e12
}

/// A copy over a link (PCIe, NVLink) counts each byte once, in GB/s.
pub fn link_gbps(bytes: u64, reps: u32, seconds: f64) -> f64 {
    bytes as f64 * f64::from(reps) / seconds / 1e9
}

/// The `p`th percentile (0..=100) by linear interpolation between the closest ranks (numpy's
/// default, which the fixtures' figures used); `None` for no values.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let rank = (p.clamp(0.0, 100.0) / 100.0) * (sorted.len() - 1) as f64;
    let low = rank.floor() as usize;
    let high = rank.ceil() as usize;
    Some(sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64))
}

/// Which GPUs' first GEMM results disagree with their node-mates of the same model: within a
/// model, the hash most GPUs share is taken as right; with no strict majority nobody can tell
/// which is right, and every GPU of the group is flagged. `hashes` is (model, hash) per GPU.
pub fn cross_gpu_disagreements(hashes: &[(String, u64)]) -> Vec<bool> {
    hashes
        .iter()
        .map(|(model, hash)| {
            let group: Vec<u64> = hashes
                .iter()
                .filter(|(m, _)| m == model)
                .map(|(_, h)| *h)
                .collect();
            let agree = group.iter().filter(|h| *h == hash).count();
            let best_other = group
                .iter()
                .filter(|h| *h != hash)
                .map(|h| group.iter().filter(|g| *g == h).count())
                .max()
                .unwrap_or(0);
            group.len() > 1 && agree <= best_other
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_the_reference_stream() {
        // splitmix64 seeded with 0: its first outputs, as published with the algorithm.
        assert_eq!(splitmix(0, 0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix(0, 1), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(splitmix(0, 2), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn walking_patterns_put_every_bit_through_every_word() {
        let mut seen = 0u64;
        for shift in 0..64 {
            let w = Pattern::WalkingOnes(shift).word(5, 0);
            assert_eq!(w.count_ones(), 1);
            assert_eq!(Pattern::WalkingZeros(shift).word(5, 0), !w);
            seen |= w;
        }
        assert_eq!(seen, u64::MAX);
        // Neighbours differ within one pass.
        let p = Pattern::WalkingOnes(0);
        assert_eq!(p.word(0, 0), 1);
        assert_eq!(p.word(1, 0), 2);
        assert_eq!(p.word(64, 0), 1);
        assert_eq!(Pattern::WalkingOnes(3).word(62, 0), 1 << 1);
    }

    #[test]
    fn random_and_address_patterns() {
        assert_eq!(Pattern::Random(7).word(9, 0), splitmix(7, 9));
        assert_ne!(Pattern::Random(7).word(9, 0), Pattern::Random(8).word(9, 0));
        assert_eq!(
            Pattern::OwnAddress.word(3, 0x7f00_0000_0018),
            0x7f00_0000_0018
        );
    }

    #[test]
    fn kernel_args_name_the_kernel_cases() {
        assert_eq!(Pattern::WalkingOnes(5).kernel_args(), (0, 5));
        assert_eq!(Pattern::WalkingZeros(6).kernel_args(), (1, 6));
        assert_eq!(Pattern::Random(42).kernel_args(), (2, 42));
        assert_eq!(Pattern::OwnAddress.kernel_args().0, 3);
        let all = Pattern::all();
        assert_eq!(all.len(), 131);
        assert_eq!(all.last(), Some(&Pattern::OwnAddress));
    }

    #[test]
    fn gemm_inputs_are_bf16_in_half_to_one() {
        let mut negative = 0;
        for i in 0..10_000 {
            let v = half::bf16::from_bits(gemm_input(GEMM_SEED_A, i)).to_f32();
            assert!((0.5..1.0).contains(&v.abs()), "{v}");
            negative += usize::from(v < 0.0);
        }
        assert!((4_000..6_000).contains(&negative), "{negative}");
        assert_ne!(gemm_input(GEMM_SEED_A, 1), gemm_input(GEMM_SEED_B, 1));
    }

    #[test]
    fn words_hash_sees_one_flipped_bit_and_not_the_order() {
        let words: Vec<u32> = (0..4096).map(|i| splitmix(1, i) as u32).collect();
        let mut flipped = words.clone();
        flipped[1234] ^= 1 << 7;
        assert_ne!(words_hash(&words), words_hash(&flipped));
        // Swapping two words changes the hash (position is part of it)...
        let mut swapped = words.clone();
        swapped.swap(1, 2);
        assert_ne!(words_hash(&words), words_hash(&swapped));
        // ...but the sum's order does not: the same terms added backwards.
        let backwards = words.iter().enumerate().rev().fold(0u64, |s, (i, &w)| {
            s.wrapping_add(mix64(((i as u64) << 32) ^ u64::from(w)))
        });
        assert_eq!(words_hash(&words), backwards);
    }

    #[test]
    fn rates_from_bytes_and_times() {
        // 8192³ in 1.64 ms is the fixtures' H100 p50 (670 TFLOP/s).
        assert_eq!(gemm_flops(8192), 2.0 * 8192f64 * 8192.0 * 8192.0);
        let t = tflops(8192, 1.641e-3);
        assert!((t - 670.0).abs() < 1.0, "{t}");
        // 4 GiB copied 10 times in 28.3 ms: 3.03 TB/s read + written.
        let c = copy_tbps(4 << 30, 10, 28.35e-3);
        assert!((c - 3.03).abs() < 0.01, "{c}");
        // 256 MiB ten times in 50 ms: 53.7 GB/s one way.
        let l = link_gbps(256 << 20, 10, 0.05);
        assert!((l - 53.687).abs() < 0.01, "{l}");
    }

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.5));
        assert!((percentile(&v, 5.0).unwrap() - 5.95).abs() < 1e-9);
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[7.0], 5.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[f64::NAN, 4.0], 50.0), Some(4.0));
    }

    #[test]
    fn pattern_coverage_against_the_plan() {
        let free = 80 << 30;
        let wanted = pattern_words(free, 0.9);
        assert_eq!(wanted, (80usize << 30) / 10 * 9 / 8);
        // Everything asked for was held: not short, even where 0.9 × free is not whole words.
        let (fraction, short) = pattern_coverage(free, wanted, wanted);
        assert!((fraction - 0.9).abs() < 1e-9, "{fraction}");
        assert!(!short);
        let odd = 80_000_000_007;
        let odd_wanted = pattern_words(odd, 0.9);
        assert!(!pattern_coverage(odd, odd_wanted, odd_wanted).1);
        // Allocations gave out at half.
        let (fraction, short) = pattern_coverage(free, wanted, wanted / 2);
        assert!(fraction < 0.5, "{fraction}");
        assert!(short);
        // Nothing held, nothing free.
        assert_eq!(pattern_coverage(free, wanted, 0), (0.0, true));
        assert_eq!(pattern_coverage(0, 0, 0), (0.0, true));
        assert_eq!(pattern_words(free, 7.0), free / 8);
    }

    fn hashes(list: &[(&str, u64)]) -> Vec<(String, u64)> {
        list.iter().map(|(m, h)| (m.to_string(), *h)).collect()
    }

    #[test]
    fn cross_gpu_comparison_flags_the_odd_one_out() {
        let h100 = "NVIDIA H100 80GB HBM3";
        let all_same = hashes(&[(h100, 1), (h100, 1), (h100, 1), (h100, 1)]);
        assert_eq!(cross_gpu_disagreements(&all_same), vec![false; 4]);
        let one_flipped = hashes(&[(h100, 1), (h100, 1), (h100, 9), (h100, 1)]);
        assert_eq!(
            cross_gpu_disagreements(&one_flipped),
            vec![false, false, true, false]
        );
        // Two GPUs that disagree: neither can be trusted.
        let pair = hashes(&[(h100, 1), (h100, 2)]);
        assert_eq!(cross_gpu_disagreements(&pair), vec![true, true]);
        // A GPU alone has nobody to disagree with; other models are not compared.
        let mixed = hashes(&[(h100, 1), ("NVIDIA H200", 2)]);
        assert_eq!(cross_gpu_disagreements(&mixed), vec![false, false]);
        // A 2-2 split has no majority.
        let split = hashes(&[(h100, 1), (h100, 1), (h100, 2), (h100, 2)]);
        assert_eq!(cross_gpu_disagreements(&split), vec![true; 4]);
    }
}
