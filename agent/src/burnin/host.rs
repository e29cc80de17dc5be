//! Burn-in of the host: every logical CPU under a checked floating-point load, a pattern test
//! over most of the free RAM, a sequential read of every disk (and a write-read-verify where
//! the plan lets the disk be wiped), and each NIC's link against the rack plan's speed.
//! Every step is bounded by the plan's tool timeout: one that overruns is reported as timed
//! out, and the burn-in goes on.

pub mod cpu;
pub mod disk;
pub mod memory;
pub mod nic;

use std::fs;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use provisioner_protocol::burnin::{BurnInPlan, DeviceKind, DeviceResult, Measurement, checks};
use provisioner_protocol::{Disk, Facts, Nic};

use disk::WritableDisk;

/// Rounds of the CPU chain that disagreed with the others: zero is good.
pub const CPU_MISMATCHES: &str = "cpu_mismatches";
/// How much RAM the pattern test covered, GiB: what "most of RAM" came to on this node.
pub const MEMORY_TESTED: &str = "memory_tested";

/// How long past its deadline a step that does not answer is waited for: one stuck in the
/// kernel (a read from a dying disk) is then left behind and reported as timed out.
const GRACE: Duration = Duration::from_secs(5);

const GIB: f64 = (1u64 << 30) as f64;

/// Where the host's devices are: `/dev`, `/sys/class/net` and `/proc/meminfo` on a node;
/// temporary files and trees in tests.
pub struct Env {
    pub dev: PathBuf,
    pub net: PathBuf,
    pub meminfo: PathBuf,
}

impl Env {
    pub fn node() -> Env {
        Env {
            dev: PathBuf::from("/dev"),
            net: PathBuf::from("/sys/class/net"),
            meminfo: PathBuf::from("/proc/meminfo"),
        }
    }
}

pub fn run(plan: &BurnInPlan, facts: &Facts, say: &mut dyn FnMut(&str)) -> Vec<DeviceResult> {
    run_in(plan, facts, &Env::node(), say)
}

/// The host burn-in of `facts`, on the devices `env` points at.
pub fn run_in(
    plan: &BurnInPlan,
    facts: &Facts,
    env: &Env,
    say: &mut dyn FnMut(&str),
) -> Vec<DeviceResult> {
    let step = Step::new(plan);
    let mut results = Vec::new();
    if step.wants("cpu", &[checks::CPU_GFLOPS, CPU_MISMATCHES]) {
        results.push(cpu_step(plan, facts, &step, say));
    }
    if step.wants("memory", &[checks::MEMORY_BAD_WORDS, MEMORY_TESTED]) {
        results.push(memory_step(plan, env, &step, say));
    }
    for d in &facts.disks {
        let read = step.wants(&d.name, &[checks::SEQUENTIAL_READ]);
        let verify = step.wants(&d.name, &[checks::DISK_VERIFY_ERRORS]);
        if read || verify {
            results.push(disk_step(plan, env, d, read, verify, &step, say));
        }
    }
    for n in &facts.nics {
        if step.wants(&n.name, &[checks::LINK_SPEED]) {
            results.push(nic_step(plan, env, n, &step, say));
        }
    }
    results
}

/// What this run covers (all, or the retry's pairs) and how each step is bounded.
struct Step {
    only: Vec<(String, String)>,
    attempt: u32,
    limit: Duration,
    seed: u64,
}

impl Step {
    fn new(plan: &BurnInPlan) -> Step {
        Step {
            only: plan.only.clone(),
            attempt: if plan.only.is_empty() { 1 } else { 2 },
            limit: Duration::from_secs(plan.tool_timeout_seconds.into()),
            seed: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0x5eed, |d| d.as_nanos() as u64),
        }
    }

    /// Whether device `id` is to run any of `checks`: always, unless this is a retry.
    fn wants(&self, id: &str, checks: &[&str]) -> bool {
        self.only.is_empty()
            || self
                .only
                .iter()
                .any(|(d, c)| d == id && checks.contains(&c.as_str()))
    }

    fn measure(&self, value: f64, unit: &str) -> Measurement {
        Measurement {
            value,
            unit: unit.into(),
            attempt: self.attempt,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error("timed out after {0} s")]
    TimedOut(u64),
    #[error("could not start: {0}")]
    Spawn(std::io::Error),
    #[error("failed (its thread panicked)")]
    Panicked,
}

/// Runs `work` on a thread of its own with a deadline `limit` from now, which it is to keep;
/// if it has not answered `GRACE` after that, it is left behind.
fn bounded<T: Send + 'static>(
    name: &str,
    limit: Duration,
    work: impl FnOnce(Instant) -> T + Send + 'static,
) -> Result<T, StepError> {
    let deadline = Instant::now() + limit;
    let (send, answer) = mpsc::channel();
    thread::Builder::new()
        .name(format!("burnin-{name}"))
        .spawn(move || {
            let _ = send.send(work(deadline));
        })
        .map_err(StepError::Spawn)?;
    match answer.recv_timeout(limit + GRACE) {
        Ok(done) => Ok(done),
        Err(RecvTimeoutError::Timeout) => Err(StepError::TimedOut(limit.as_secs())),
        Err(RecvTimeoutError::Disconnected) => Err(StepError::Panicked),
    }
}

fn device(id: &str, kind: DeviceKind) -> DeviceResult {
    DeviceResult {
        id: id.into(),
        kind: Some(kind),
        ..Default::default()
    }
}

fn cannot(result: &mut DeviceResult, why: String) {
    result.cannot_validate = Some(match result.cannot_validate.take() {
        Some(before) => format!("{before}; {why}"),
        None => why,
    });
}

fn cpu_step(
    plan: &BurnInPlan,
    facts: &Facts,
    step: &Step,
    say: &mut dyn FnMut(&str),
) -> DeviceResult {
    let mut result = device("cpu", DeviceKind::Cpu);
    result.model = facts.cpu.model.clone();
    let duration = Duration::from_secs(plan.cpu_seconds.into());
    say(&format!("cpu: {} s on every logical CPU", plan.cpu_seconds));
    match bounded("cpu", duration + step.limit, move |deadline| {
        cpu::stress(duration, deadline)
    }) {
        Ok(stress) => {
            say(&format!(
                "cpu: {} threads, {:.1} GFLOP/s, {} rounds, {} wrong",
                stress.threads,
                stress.gflops(),
                stress.rounds,
                stress.mismatches
            ));
            for (cpu, wrong) in &stress.faulty {
                say(&format!("cpu: CPU {cpu} computed {wrong} rounds wrong"));
            }
            result.measurements.insert(
                checks::CPU_GFLOPS.into(),
                step.measure(stress.gflops(), "GFLOP/s"),
            );
            result
                .counters
                .insert(CPU_MISMATCHES.into(), stress.mismatches);
        }
        Err(e) => cannot(&mut result, format!("CPU stress {e}")),
    }
    result
}

fn memory_step(
    plan: &BurnInPlan,
    env: &Env,
    step: &Step,
    say: &mut dyn FnMut(&str),
) -> DeviceResult {
    let mut result = device("memory", DeviceKind::Memory);
    let Some(available) = fs::read_to_string(&env.meminfo)
        .ok()
        .and_then(|m| memory::mem_available(&m))
    else {
        cannot(
            &mut result,
            format!("MemAvailable not readable in {}", env.meminfo.display()),
        );
        return result;
    };
    let target = memory::target_bytes(available, plan.memory_fraction);
    say(&format!(
        "memory: testing {:.2} GiB of {:.2} GiB available",
        target as f64 / GIB,
        available as f64 / GIB
    ));
    let meminfo = env.meminfo.clone();
    let seed = step.seed;
    let test = match bounded("memory", step.limit, move |deadline| {
        memory::test(target, &meminfo, seed, deadline)
    }) {
        Ok(test) => test,
        Err(e) => {
            cannot(&mut result, format!("memory pattern test {e}"));
            return result;
        }
    };
    let tested = test.tested as f64 / GIB;
    say(&format!(
        "memory: {tested:.2} GiB tested with {} patterns, {} bad words",
        test.patterns_done, test.bad_words
    ));
    for bad in &test.bad {
        say(&format!(
            "memory: bad word at {:#x}: wrote {:#018x}, read {:#018x}",
            bad.addr, bad.expected, bad.found
        ));
    }
    result
        .measurements
        .insert(MEMORY_TESTED.into(), step.measure(tested, "GiB"));
    result
        .counters
        .insert(checks::MEMORY_BAD_WORDS.into(), test.bad_words);
    if test.timed_out {
        cannot(
            &mut result,
            format!(
                "memory pattern test timed out after {} s ({} of {} patterns over {tested:.2} GiB)",
                step.limit.as_secs(),
                test.patterns_done,
                memory::Pattern::all(0).len()
            ),
        );
    } else if test.tested == 0 && plan.memory_fraction > 0.0 {
        cannot(
            &mut result,
            format!(
                "no memory could be taken for the pattern test ({:.2} GiB available, {:.2} GiB kept free)",
                available as f64 / GIB,
                memory::RESERVE_BYTES as f64 / GIB
            ),
        );
    }
    result
}

fn disk_step(
    plan: &BurnInPlan,
    env: &Env,
    d: &Disk,
    read: bool,
    verify: bool,
    step: &Step,
    say: &mut dyn FnMut(&str),
) -> DeviceResult {
    let mut result = device(&d.name, DeviceKind::Disk);
    result.model = d.model.clone();
    if read {
        read_step(plan, env, d, step, &mut result, say);
    }
    // Only a disk the plan names can be written: without a WritableDisk there is no write.
    if verify && let Some(scratch) = WritableDisk::from_plan(plan, &d.name, &env.dev) {
        verify_step(plan, d, scratch, step, &mut result, say);
    }
    result
}

fn read_step(
    plan: &BurnInPlan,
    env: &Env,
    d: &Disk,
    step: &Step,
    result: &mut DeviceResult,
    say: &mut dyn FnMut(&str),
) {
    let bytes = match d.size_bytes {
        0 => plan.disk_read_bytes,
        size => plan.disk_read_bytes.min(size),
    };
    let path = env.dev.join(&d.name);
    let run = match bounded(&d.name, step.limit, move |deadline| {
        disk::sequential_read(&path, bytes, deadline)
    }) {
        Ok(Ok(run)) => run,
        Ok(Err(e)) => return cannot(result, format!("sequential read: {e}")),
        Err(e) => return cannot(result, format!("sequential read {e}")),
    };
    let how = match run.mode {
        disk::Mode::Direct => "O_DIRECT",
        disk::Mode::Cached => "page cache, O_DIRECT refused: not the disk's own figure",
    };
    say(&format!(
        "{}: read {} MB in {:.1} s, {:.0} MB/s ({how})",
        d.name,
        run.bytes / 1_000_000,
        run.elapsed.as_secs_f64(),
        run.mb_per_s()
    ));
    if run.timed_out {
        cannot(
            result,
            format!(
                "sequential read timed out after {} s ({} of {bytes} bytes read)",
                step.limit.as_secs(),
                run.bytes
            ),
        );
    } else if run.bytes == 0 && bytes > 0 {
        cannot(result, "sequential read returned nothing".into());
    } else {
        result.measurements.insert(
            checks::SEQUENTIAL_READ.into(),
            step.measure(run.mb_per_s(), "MB/s"),
        );
    }
}

fn verify_step(
    plan: &BurnInPlan,
    d: &Disk,
    scratch: WritableDisk,
    step: &Step,
    result: &mut DeviceResult,
    say: &mut dyn FnMut(&str),
) {
    let regions = disk::scratch_regions(d.size_bytes, plan.disk_read_bytes);
    let at: Vec<String> = regions
        .iter()
        .map(|r| format!("{}+{}", r.offset, r.len))
        .collect();
    say(&format!(
        "{}: writable by the plan: write-read-verify at byte offsets {}",
        d.name,
        at.join(", ")
    ));
    let seed = step.seed;
    let v = match bounded(&d.name, step.limit, move |deadline| {
        disk::write_read_verify(&scratch, &regions, seed, deadline)
    }) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return cannot(result, format!("write-read-verify: {e}")),
        Err(e) => return cannot(result, format!("write-read-verify {e}")),
    };
    let first = match v.bad_offsets.first() {
        Some(first) => format!(" (first at byte {first})"),
        None => String::new(),
    };
    say(&format!(
        "{}: {} blocks verified, {} bad{first}",
        d.name, v.blocks, v.bad_blocks
    ));
    result
        .counters
        .insert(checks::DISK_VERIFY_ERRORS.into(), v.bad_blocks);
    if v.timed_out {
        cannot(
            result,
            format!(
                "write-read-verify timed out after {} s ({} blocks verified)",
                step.limit.as_secs(),
                v.blocks
            ),
        );
    }
}

fn nic_step(
    plan: &BurnInPlan,
    env: &Env,
    n: &Nic,
    step: &Step,
    say: &mut dyn FnMut(&str),
) -> DeviceResult {
    let mut result = device(&n.name, DeviceKind::Nic);
    let net = env.net.clone();
    let name = n.name.clone();
    let link = match bounded(&n.name, step.limit, move |_| nic::read(&net, &name)) {
        Ok(link) => link,
        Err(e) => {
            cannot(&mut result, format!("link state {e}"));
            return result;
        }
    };
    let (speed, why) = nic::verdict(&link, plan.nic_speed_mbps);
    match (speed, plan.nic_speed_mbps) {
        (Some(s), Some(p)) if s < p => {
            say(&format!(
                "{}: {s} Mb/s, the plan cabled for {p} Mb/s",
                n.name
            ));
        }
        (Some(s), _) => say(&format!("{}: {s} Mb/s", n.name)),
        (None, _) => {
            let state = match link.up {
                Some(true) => "up, the driver reports no speed",
                Some(false) => "down",
                None => "state unknown",
            };
            say(&format!("{}: link {state}", n.name));
        }
    }
    if let Some(s) = speed {
        result
            .measurements
            .insert(checks::LINK_SPEED.into(), step.measure(s.into(), "Mb/s"));
    }
    if let Some(why) = why {
        cannot(&mut result, why);
    }
    result
}
