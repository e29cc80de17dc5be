//! Host memory pattern test: most of the free RAM taken at once (all of it held, so the
//! kernel cannot hand the same pages back twice), written and read back with walking ones,
//! walking zeros, each word's own address, and a seeded random stream and its inverse, on
//! every CPU. Each wrong word is counted; the first few are reported with their address.
//!
//! It never takes so much that the node runs out: MemAvailable is read again before every
//! chunk, and the test stops taking memory while a reserve is still free.

use std::fs;
use std::path::Path;
use std::thread;
use std::time::Instant;

/// Memory is taken in chunks of this many 64-bit words (256 MiB).
const CHUNK_WORDS: usize = 32 << 20;
/// And tested in pieces of this many (8 MiB), each a unit of work and of the deadline check.
const PIECE_WORDS: usize = 1 << 20;
/// Never more than this fraction of MemAvailable, whatever the plan says.
pub const MAX_FRACTION: f64 = 0.95;
/// Always left free: the kernel, the agent and its threads need room to run.
pub const RESERVE_BYTES: u64 = 256 << 20;
/// Wrong words reported with their address; all are counted.
const REPORTED: usize = 32;
const WORD: u64 = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    WalkingOnes,
    WalkingZeros,
    OwnAddress,
    Random { seed: u64 },
    RandomInverted { seed: u64 },
}

impl Pattern {
    pub fn all(seed: u64) -> [Pattern; 5] {
        [
            Pattern::WalkingOnes,
            Pattern::WalkingZeros,
            Pattern::OwnAddress,
            Pattern::Random { seed },
            Pattern::RandomInverted { seed },
        ]
    }

    /// The word that belongs at word `index` of the test, at virtual address `addr`: a pure
    /// function of both, so any piece is written and checked on its own.
    pub fn expected(self, index: u64, addr: u64) -> u64 {
        match self {
            Pattern::WalkingOnes => 1u64 << (index % 64),
            Pattern::WalkingZeros => !(1u64 << (index % 64)),
            Pattern::OwnAddress => addr,
            Pattern::Random { seed } => splitmix64(seed.wrapping_add(index)),
            Pattern::RandomInverted { seed } => !splitmix64(seed.wrapping_add(index)),
        }
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a random stream that can be entered at any index.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadWord {
    pub addr: u64,
    pub expected: u64,
    pub found: u64,
}

/// Writes `pattern` into `words`, the test's words from index `first` on.
pub fn fill(words: &mut [u64], first: u64, pattern: Pattern) {
    let base = words.as_ptr() as u64;
    for (i, w) in words.iter_mut().enumerate() {
        let i = i as u64;
        *w = pattern.expected(first + i, base + i * WORD);
    }
}

/// Counts the words of `words` that do not hold `pattern`, noting the first few in `bad`.
pub fn verify(words: &[u64], first: u64, pattern: Pattern, bad: &mut Vec<BadWord>) -> u64 {
    let base = words.as_ptr() as u64;
    let mut wrong = 0;
    for (i, &found) in words.iter().enumerate() {
        let i = i as u64;
        let addr = base + i * WORD;
        let expected = pattern.expected(first + i, addr);
        if found != expected {
            wrong += 1;
            if bad.len() < REPORTED {
                bad.push(BadWord {
                    addr,
                    expected,
                    found,
                });
            }
        }
    }
    wrong
}

/// `MemAvailable` of /proc/meminfo, in bytes.
pub fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut words = line["MemAvailable:".len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// How much to test of `available` bytes: the plan's fraction, at most `MAX_FRACTION`, and
/// never into the reserve.
pub fn target_bytes(available: u64, fraction: f64) -> u64 {
    let fraction = if fraction.is_finite() {
        fraction.clamp(0.0, MAX_FRACTION)
    } else {
        0.0
    };
    let wanted = (available as f64 * fraction) as u64;
    wanted.min(available.saturating_sub(RESERVE_BYTES))
}

/// What the test covered and found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemoryTest {
    /// What the plan asked for, in bytes (`target_bytes`).
    pub target: u64,
    /// What could be taken and tested.
    pub tested: u64,
    pub bad_words: u64,
    pub bad: Vec<BadWord>,
    /// Patterns written and read back over all of `tested`.
    pub patterns_done: usize,
    /// The deadline came before every pattern was done.
    pub timed_out: bool,
}

/// Tests `target` bytes of RAM (fewer if the reserve would be touched), re-reading
/// MemAvailable from `meminfo` before each chunk, until `deadline`.
pub fn test(target: u64, meminfo: &Path, seed: u64, deadline: Instant) -> MemoryTest {
    let mut result = MemoryTest {
        target,
        ..Default::default()
    };
    let chunks = take(target, meminfo);
    result.tested = chunks.iter().map(|c| c.len() as u64 * WORD).sum();
    if chunks.is_empty() {
        return result;
    }
    let mut chunks = chunks;
    let threads = thread::available_parallelism().map_or(1, |n| n.get());
    for pattern in Pattern::all(seed) {
        let filled = pass(&mut chunks, threads, deadline, |words, first, _| {
            fill(words, first, pattern);
            0
        });
        // Pieces left unwritten would read back wrong: stop before checking them.
        if filled.timed_out {
            result.timed_out = true;
            break;
        }
        let checked = pass(&mut chunks, threads, deadline, |words, first, bad| {
            verify(words, first, pattern, bad)
        });
        result.bad_words += checked.wrong;
        let room = REPORTED.saturating_sub(result.bad.len());
        result.bad.extend(checked.bad.into_iter().take(room));
        if checked.timed_out {
            result.timed_out = true;
            break;
        }
        result.patterns_done += 1;
    }
    result
}

/// Takes up to `target` bytes in chunks, stopping before MemAvailable would fall under the
/// reserve or when the allocator says no.
fn take(target: u64, meminfo: &Path) -> Vec<Vec<u64>> {
    let mut chunks = Vec::new();
    let mut taken = 0u64;
    while taken + WORD <= target {
        let words = ((target - taken) / WORD).min(CHUNK_WORDS as u64) as usize;
        let bytes = words as u64 * WORD;
        let available = fs::read_to_string(meminfo)
            .ok()
            .and_then(|m| mem_available(&m))
            .unwrap_or(0);
        if available < bytes + RESERVE_BYTES {
            break;
        }
        let Some(chunk) = zeroed(words) else {
            break;
        };
        taken += bytes;
        chunks.push(chunk);
    }
    chunks
}

/// A chunk of `words` zeros, or `None` when the allocator refuses. The pages are touched by
/// every CPU at once: on a node with terabytes, one thread zeroing would take minutes, and
/// MemAvailable, read before the next chunk, only counts pages touched.
fn zeroed(words: usize) -> Option<Vec<u64>> {
    let mut chunk: Vec<u64> = Vec::new();
    chunk.try_reserve_exact(words).ok()?;
    let threads = thread::available_parallelism().map_or(1, |n| n.get());
    let spare = &mut chunk.spare_capacity_mut()[..words];
    let per_thread = words.div_ceil(threads).max(1);
    thread::scope(|s| {
        for part in spare.chunks_mut(per_thread) {
            s.spawn(move || {
                for word in part {
                    word.write(0);
                }
            });
        }
    });
    // SAFETY: the capacity is at least `words` (reserved above), and every one of the first
    // `words` elements was written by the scoped threads, which have all finished.
    unsafe { chunk.set_len(words) };
    Some(chunk)
}

struct Outcome {
    wrong: u64,
    bad: Vec<BadWord>,
    timed_out: bool,
}

/// Runs `work` over every piece of `chunks` on `threads` threads, each piece with the test's
/// index of its first word; pieces not started by `deadline` are left.
fn pass(
    chunks: &mut [Vec<u64>],
    threads: usize,
    deadline: Instant,
    work: impl Fn(&mut [u64], u64, &mut Vec<BadWord>) -> u64 + Sync,
) -> Outcome {
    let mut pieces: Vec<(u64, &mut [u64])> = Vec::new();
    let mut first = 0u64;
    for chunk in chunks.iter_mut() {
        for piece in chunk.chunks_mut(PIECE_WORDS) {
            let len = piece.len() as u64;
            pieces.push((first, piece));
            first += len;
        }
    }
    let per_thread = pieces.len().div_ceil(threads.max(1)).max(1);
    let work = &work;
    let outcomes: Vec<Outcome> = thread::scope(|s| {
        let handles: Vec<_> = pieces
            .chunks_mut(per_thread)
            .map(|group| {
                s.spawn(move || {
                    let mut outcome = Outcome {
                        wrong: 0,
                        bad: Vec::new(),
                        timed_out: false,
                    };
                    for (first, words) in group.iter_mut() {
                        if Instant::now() >= deadline {
                            outcome.timed_out = true;
                            break;
                        }
                        outcome.wrong += work(words, *first, &mut outcome.bad);
                    }
                    outcome
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut total = Outcome {
        wrong: 0,
        bad: Vec::new(),
        timed_out: false,
    };
    for outcome in outcomes {
        total.wrong += outcome.wrong;
        total.bad.extend(outcome.bad);
        total.timed_out |= outcome.timed_out;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_verifies_what_it_wrote() {
        let mut words = vec![0u64; 1000];
        for pattern in Pattern::all(42) {
            fill(&mut words, 77, pattern);
            let mut bad = Vec::new();
            assert_eq!(verify(&words, 77, pattern, &mut bad), 0, "{pattern:?}");
            assert!(bad.is_empty());
        }
    }

    #[test]
    fn one_flipped_bit_is_one_bad_word_at_its_address() {
        let mut words = vec![0u64; 4096];
        for pattern in Pattern::all(7) {
            fill(&mut words, 0, pattern);
            words[1234] ^= 1 << 17;
            let mut bad = Vec::new();
            assert_eq!(verify(&words, 0, pattern, &mut bad), 1, "{pattern:?}");
            let addr = words.as_ptr() as u64 + 1234 * 8;
            assert_eq!(bad[0].addr, addr);
            assert_eq!(bad[0].found ^ bad[0].expected, 1 << 17);
        }
    }

    #[test]
    fn a_stuck_bit_shows_in_some_pattern() {
        // Bit 3 stuck at 0 in word 10: walking ones misses it (word 10 has bit 10 set), but
        // walking zeros, the random stream or its inverse wants a 1 there.
        let mut caught = 0;
        let mut words = vec![0u64; 64];
        for pattern in Pattern::all(1) {
            fill(&mut words, 0, pattern);
            words[10] &= !(1 << 3);
            caught += verify(&words, 0, pattern, &mut Vec::new());
        }
        assert!(caught >= 2);
    }

    #[test]
    fn only_the_first_bad_words_are_listed() {
        let words = vec![0u64; 100];
        let mut bad = Vec::new();
        assert_eq!(verify(&words, 0, Pattern::WalkingOnes, &mut bad), 100);
        assert_eq!(bad.len(), REPORTED);
    }

    #[test]
    fn available_memory_and_the_target() {
        let meminfo = "MemTotal:       24731708 kB\nMemAvailable:    4000000 kB\n";
        assert_eq!(mem_available(meminfo), Some(4_000_000 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
        let gib = 1u64 << 30;
        assert_eq!(target_bytes(10 * gib, 0.5), 5 * gib);
        // The plan cannot ask for all of it, nor for the reserve.
        assert_eq!(
            target_bytes(10 * gib, 1.0),
            (10.0 * gib as f64 * MAX_FRACTION) as u64
        );
        assert_eq!(target_bytes(RESERVE_BYTES, 0.9), 0);
        assert_eq!(target_bytes(10 * gib, f64::NAN), 0);
    }
}
