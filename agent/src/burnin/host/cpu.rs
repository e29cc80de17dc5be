//! CPU stress: one thread per logical CPU, pinned to it, each computing the same
//! deterministic multiply-add chain again and again for the plan's time. Every round's
//! result must be bit for bit the same on every CPU: a core that computes wrong is found by
//! number, not just a slow one.

use std::collections::HashMap;
use std::hint::black_box;
use std::thread;
use std::time::{Duration, Instant};

/// Independent chains per thread, so the FPU pipelines stay full.
const LANES: usize = 32;
/// Multiply-adds per lane in one round: a round is well under a millisecond when optimized.
const ROUND: usize = 1 << 12;
/// x ← x·A + B converges to B / (1 − A) = 1: the values stay normal, never overflow.
const A: f64 = 0.999_999_9;
const B: f64 = 1.0e-7;
/// Distinct results one thread keeps count of; more means the core is far gone anyway.
const KEPT: usize = 16;

/// One thread's rounds: how many gave each result.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    /// The logical CPU the thread ran on, where it could be pinned.
    pub cpu: Option<usize>,
    pub rounds: u64,
    pub results: HashMap<u64, u64>,
    /// Rounds whose result was not among the `KEPT` counted.
    pub others: u64,
}

impl Tally {
    pub fn add(&mut self, result: u64) {
        self.rounds += 1;
        if let Some(n) = self.results.get_mut(&result) {
            *n += 1;
        } else if self.results.len() < KEPT {
            self.results.insert(result, 1);
        } else {
            self.others += 1;
        }
    }
}

/// What all the threads computed.
#[derive(Clone, Debug, PartialEq)]
pub struct Stress {
    pub threads: usize,
    pub rounds: u64,
    pub elapsed: Duration,
    /// Rounds, over all threads, whose result differed from the one most rounds gave.
    pub mismatches: u64,
    /// CPUs (or thread numbers where unpinned) that gave a different result, with how often.
    pub faulty: Vec<(usize, u64)>,
}

impl Stress {
    pub fn gflops(&self) -> f64 {
        let flops = self.rounds as f64 * (ROUND * LANES * 2) as f64;
        flops / self.elapsed.as_secs_f64().max(1e-9) / 1e9
    }
}

/// The result most rounds agree on, the rounds that differ from it, and where they ran.
pub fn agreement(tallies: &[Tally]) -> (Option<u64>, u64, Vec<(usize, u64)>) {
    let mut votes: HashMap<u64, u64> = HashMap::new();
    for tally in tallies {
        for (result, n) in &tally.results {
            *votes.entry(*result).or_default() += n;
        }
    }
    let reference = votes
        .iter()
        .max_by_key(|(result, n)| (**n, std::cmp::Reverse(**result)))
        .map(|(result, _)| *result);
    let mut total = 0;
    let mut faulty = Vec::new();
    for (i, tally) in tallies.iter().enumerate() {
        let good = reference
            .and_then(|r| tally.results.get(&r))
            .copied()
            .unwrap_or(0);
        let wrong = tally.rounds - good;
        if wrong > 0 {
            faulty.push((tally.cpu.unwrap_or(i), wrong));
            total += wrong;
        }
    }
    (reference, total, faulty)
}

/// Stresses every logical CPU this process may run on for `duration` (at least one round
/// each), stopping early at `deadline`.
pub fn stress(duration: Duration, deadline: Instant) -> Stress {
    let cpus = allowed_cpus();
    let threads = cpus.len().max(1);
    let start = Instant::now();
    let end = (start + duration).min(deadline);
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let cpu = cpus.get(i).copied();
            thread::spawn(move || {
                let pinned = cpu.filter(|&c| pin(c));
                let mut tally = Tally {
                    cpu: pinned,
                    ..Default::default()
                };
                let kernel = kernel();
                loop {
                    tally.add(kernel(black_box(seeds())));
                    if Instant::now() >= end {
                        break;
                    }
                }
                tally
            })
        })
        .collect();
    let tallies: Vec<Tally> = handles.into_iter().filter_map(|h| h.join().ok()).collect();
    let elapsed = start.elapsed();
    let (_, mismatches, faulty) = agreement(&tallies);
    Stress {
        threads,
        rounds: tallies.iter().map(|t| t.rounds).sum(),
        elapsed,
        mismatches,
        faulty,
    }
}

fn seeds() -> [f64; LANES] {
    std::array::from_fn(|i| 1.0 + i as f64 / LANES as f64)
}

/// One round of the chain, as bits: `round(x)` with plain multiply and add.
pub fn round(seed: [f64; LANES]) -> u64 {
    chain(seed, |x| x * A + B)
}

#[inline(always)]
fn chain(mut x: [f64; LANES], step: impl Fn(f64) -> f64) -> u64 {
    for _ in 0..ROUND {
        for v in &mut x {
            *v = step(*v);
        }
    }
    x.iter().fold(0u64, |h, v| h.rotate_left(5) ^ v.to_bits())
}

/// The fastest chain this CPU runs: fused multiply-adds in 256-bit vectors where it has them
/// (every thread takes the same one, so the results still agree), plain arithmetic else.
fn kernel() -> fn([f64; LANES]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        return round_fma;
    }
    round
}

#[cfg(target_arch = "x86_64")]
fn round_fma(seed: [f64; LANES]) -> u64 {
    #[target_feature(enable = "avx2,fma")]
    fn fused(seed: [f64; LANES]) -> u64 {
        chain(seed, |x| x.mul_add(A, B))
    }
    // SAFETY: `kernel` hands out this function only where AVX2 and FMA were detected.
    unsafe { fused(seed) }
}

/// The logical CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size into it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let ok =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if ok != 0 {
        let n = thread::available_parallelism().map_or(1, |n| n.get());
        return (0..n).collect();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `set` was filled by sched_getaffinity and `c` is below CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Pins the calling thread to `cpu`, so a wrong result names the core that gave it.
fn pin(cpu: usize) -> bool {
    // SAFETY: as above; sched_setaffinity(0) applies to the calling thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(cpu: usize, results: &[(u64, u64)]) -> Tally {
        let mut t = Tally {
            cpu: Some(cpu),
            ..Default::default()
        };
        for &(result, n) in results {
            for _ in 0..n {
                t.add(result);
            }
        }
        t
    }

    #[test]
    fn all_agree() {
        let (reference, wrong, faulty) = agreement(&[tally(0, &[(7, 10)]), tally(1, &[(7, 12)])]);
        assert_eq!((reference, wrong, faulty), (Some(7), 0, vec![]));
    }

    #[test]
    fn one_core_computes_wrong_sometimes() {
        let tallies = [
            tally(0, &[(7, 10)]),
            tally(1, &[(7, 8), (9, 2)]),
            tally(2, &[(7, 11)]),
        ];
        assert_eq!(agreement(&tallies), (Some(7), 2, vec![(1, 2)]));
    }

    #[test]
    fn a_core_that_is_always_wrong_is_outvoted() {
        let tallies = [
            tally(0, &[(7, 10)]),
            tally(3, &[(5, 10)]),
            tally(4, &[(7, 10)]),
        ];
        assert_eq!(agreement(&tallies), (Some(7), 10, vec![(3, 10)]));
    }

    #[test]
    fn the_chain_is_deterministic_and_stays_finite() {
        assert_eq!(round(seeds()), round(seeds()));
        assert_ne!(round(seeds()), round([2.0; LANES]));
    }

    #[test]
    fn distinct_results_are_bounded() {
        let mut t = Tally::default();
        for r in 0..100 {
            t.add(r);
        }
        assert_eq!((t.rounds, t.results.len() as u64, t.others), (100, 16, 84));
    }
}
