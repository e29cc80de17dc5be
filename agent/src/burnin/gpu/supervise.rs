//! GPU work runs on worker threads, one per job, and this module waits for them with a time
//! limit per step. A CUDA call that hangs (a GPU fallen off the bus, a wedged driver) cannot
//! be cancelled: its worker is left behind and its device is reported as timed out, while the
//! other workers go on. A worker delivers each step's result as soon as it has it, so a step
//! that hangs later costs only itself. Workers' progress lines come back here, so `say` stays
//! on the caller's thread; `tick` runs about every `tick_every`, for the NVML samples taken
//! alongside.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use super::steps::Step;

/// What one worker is doing now, as `tick` sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Running {
    pub step: Step,
    pub since: Instant,
}

/// How a job ended.
#[derive(Debug, PartialEq)]
pub enum End {
    Done,
    TimedOut { step: Step, limit: Duration },
    Panicked(String),
}

/// What a job delivered, in order, and how it ended: a step that hangs or panics does not
/// take the results of the steps before it along.
#[derive(Debug, PartialEq)]
pub struct Outcome<R> {
    pub results: Vec<R>,
    pub end: End,
}

enum Report<R> {
    Say(String),
    Begin(Step, Duration),
    Deliver(R),
    Done,
    Panicked(String),
}

/// A worker's line back to the supervisor.
pub struct Reporter<R> {
    worker: usize,
    tx: Sender<(usize, Report<R>)>,
}

impl<R> Reporter<R> {
    /// A progress line for the caller's `say`.
    pub fn say(&self, line: String) {
        // The supervisor may have given up on this worker; nobody is listening then.
        let _ = self.tx.send((self.worker, Report::Say(line)));
    }

    /// The worker starts `step`, which may take up to `limit`.
    pub fn begin(&self, step: Step, limit: Duration) {
        let _ = self.tx.send((self.worker, Report::Begin(step, limit)));
    }

    /// A finished step's result, kept whatever happens to the steps after it.
    pub fn deliver(&self, result: R) {
        let _ = self.tx.send((self.worker, Report::Deliver(result)));
    }
}

pub type Job<R> = Box<dyn FnOnce(&Reporter<R>) + Send>;

enum State {
    Running {
        step: Step,
        since: Instant,
        limit: Duration,
    },
    Ended(End),
}

struct Slot<R> {
    results: Vec<R>,
    state: State,
}

impl<R> Slot<R> {
    fn running(&self) -> Option<Running> {
        match self.state {
            State::Running { step, since, .. } => Some(Running { step, since }),
            State::Ended(_) => None,
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Running { since, limit, .. } => Some(since + limit),
            State::Ended(_) => None,
        }
    }
}

/// Runs every job on its own thread and waits until each is done, has panicked, or has
/// overrun the limit of the step it is in. A job starts in `Step::Setup` with `setup_limit`.
pub fn supervise<R: Send + 'static>(
    jobs: Vec<Job<R>>,
    setup_limit: Duration,
    tick_every: Duration,
    say: &mut dyn FnMut(&str),
    tick: &mut dyn FnMut(&[Option<Running>]),
) -> Vec<Outcome<R>> {
    let (tx, rx) = mpsc::channel();
    let started = Instant::now();
    let mut slots: Vec<Slot<R>> = jobs
        .into_iter()
        .enumerate()
        .map(|(worker, job)| spawn(worker, job, tx.clone(), started, setup_limit))
        .collect();
    drop(tx);
    let mut next_tick = started + tick_every;
    while slots.iter().any(|s| s.running().is_some()) {
        let wake = slots
            .iter()
            .filter_map(Slot::deadline)
            .fold(next_tick, Instant::min);
        match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok((worker, report)) => {
                receive(&mut slots[worker], report, say);
                // Whatever else is already queued was sent before now: a step that ended
                // in time is not judged by its deadline before its end is read.
                drain(&rx, &mut slots, say);
            }
            Err(RecvTimeoutError::Timeout) => {}
            // Every worker sends its end before it lets go of its sender: none is left.
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        for slot in &mut slots {
            if let State::Running { step, since, limit } = slot.state
                && now >= since + limit
            {
                slot.state = State::Ended(End::TimedOut { step, limit });
            }
        }
        if now >= next_tick {
            let running: Vec<Option<Running>> = slots.iter().map(Slot::running).collect();
            tick(&running);
            next_tick = now + tick_every;
        }
    }
    slots
        .into_iter()
        .map(|slot| Outcome {
            results: slot.results,
            end: match slot.state {
                State::Ended(end) => end,
                State::Running { .. } => End::Panicked("worker vanished without a result".into()),
            },
        })
        .collect()
}

fn drain<R>(rx: &Receiver<(usize, Report<R>)>, slots: &mut [Slot<R>], say: &mut dyn FnMut(&str)) {
    while let Ok((worker, report)) = rx.try_recv() {
        receive(&mut slots[worker], report, say);
    }
}

fn spawn<R: Send + 'static>(
    worker: usize,
    job: Job<R>,
    tx: Sender<(usize, Report<R>)>,
    now: Instant,
    setup_limit: Duration,
) -> Slot<R> {
    let spawned = thread::Builder::new()
        .name(format!("gpu-burnin-{worker}"))
        .spawn(move || {
            let reporter = Reporter { worker, tx };
            let end = match catch_unwind(AssertUnwindSafe(|| job(&reporter))) {
                Ok(()) => Report::Done,
                Err(payload) => Report::Panicked(panic_text(payload.as_ref())),
            };
            let _ = reporter.tx.send((worker, end));
        });
    let state = match spawned {
        Ok(_) => State::Running {
            step: Step::Setup,
            since: now,
            limit: setup_limit,
        },
        Err(e) => State::Ended(End::Panicked(format!("cannot start a thread: {e}"))),
    };
    Slot {
        results: Vec::new(),
        state,
    }
}

fn receive<R>(slot: &mut Slot<R>, report: Report<R>, say: &mut dyn FnMut(&str)) {
    // A worker given up on may still talk; its late lines are still true. Its late results
    // are dropped: what a report holds must not depend on how long the other workers took.
    if let Report::Say(line) = &report {
        say(line);
        return;
    }
    if let State::Ended(_) = slot.state {
        return;
    }
    match report {
        Report::Say(_) => {}
        Report::Begin(step, limit) => {
            slot.state = State::Running {
                step,
                since: Instant::now(),
                limit,
            };
        }
        Report::Deliver(result) => slot.results.push(result),
        Report::Done => slot.state = State::Ended(End::Done),
        Report::Panicked(why) => slot.state = State::Ended(End::Panicked(why)),
    }
}

fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panicked".to_string()
    }
}

/// Runs one call on a worker thread, bounded by `limit`: for calls into a driver that may hang.
pub fn bounded<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let job: Job<T> = Box::new(move |r| r.deliver(f()));
    let Some(Outcome { results, end }) =
        supervise(vec![job], limit, limit, &mut |_| {}, &mut |_| {}).pop()
    else {
        return Err("no result".into());
    };
    match end {
        End::Done => results.into_iter().next().ok_or_else(|| "no result".into()),
        End::TimedOut { limit, .. } => Err(format!("timed out after {} s", limit.as_secs_f64())),
        End::Panicked(why) => Err(format!("panicked: {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Duration = Duration::from_millis(200);

    fn ended<R>(results: Vec<R>, end: End) -> Outcome<R> {
        Outcome { results, end }
    }

    #[test]
    fn a_hung_step_times_out_and_the_others_finish() {
        let quick: Job<u32> = Box::new(|r| {
            r.begin(Step::Copy, Duration::from_secs(10));
            r.say("copy done".into());
            r.deliver(7);
        });
        let hung: Job<u32> = Box::new(|r| {
            r.begin(Step::Gemm, SHORT);
            thread::sleep(Duration::from_secs(30));
            r.deliver(0);
        });
        let broken: Job<u32> = Box::new(|_| panic!("Missing symbol cuFoo"));
        let mut lines = Vec::new();
        let started = Instant::now();
        // The setup bound is generous: the panic's report can wait on its backtrace being
        // printed. Finishing well before the hung step's 30 s sleep shows it was not awaited.
        let outcomes = supervise(
            vec![quick, hung, broken],
            Duration::from_secs(10),
            Duration::from_secs(10),
            &mut |l| lines.push(l.to_string()),
            &mut |_| {},
        );
        assert!(started.elapsed() < Duration::from_secs(25));
        assert_eq!(outcomes[0], ended(vec![7], End::Done));
        assert_eq!(
            outcomes[1],
            ended(
                vec![],
                End::TimedOut {
                    step: Step::Gemm,
                    limit: SHORT
                }
            )
        );
        assert_eq!(
            outcomes[2],
            ended(vec![], End::Panicked("Missing symbol cuFoo".into()))
        );
        assert_eq!(lines, vec!["copy done".to_string()]);
    }

    #[test]
    fn the_steps_before_a_hung_one_keep_their_results() {
        // Three quick steps, each delivered as it ends; the fourth hangs.
        let job: Job<&str> = Box::new(|r| {
            for (step, result) in [
                (Step::Pattern, "pattern"),
                (Step::Copy, "copy"),
                (Step::Gemm, "gemm"),
            ] {
                r.begin(step, Duration::from_secs(10));
                r.deliver(result);
            }
            r.begin(Step::Pcie, SHORT);
            thread::sleep(Duration::from_secs(30));
            r.deliver("too late");
        });
        // The same, but the third step panics instead.
        let broken: Job<&str> = Box::new(|r| {
            r.begin(Step::Pattern, Duration::from_secs(10));
            r.deliver("pattern");
            r.begin(Step::Gemm, Duration::from_secs(10));
            panic!("cuBLAS went away");
        });
        let outcomes = supervise(
            vec![job, broken],
            Duration::from_secs(10),
            Duration::from_secs(1),
            &mut |_| {},
            &mut |_| {},
        );
        assert_eq!(
            outcomes[0],
            ended(
                vec!["pattern", "copy", "gemm"],
                End::TimedOut {
                    step: Step::Pcie,
                    limit: SHORT
                }
            )
        );
        assert_eq!(
            outcomes[1],
            ended(vec!["pattern"], End::Panicked("cuBLAS went away".into()))
        );
    }

    #[test]
    fn results_after_a_time_out_are_dropped() {
        // The first worker's hung step ends while the second still runs: too late to count.
        let late: Job<u32> = Box::new(|r| {
            r.begin(Step::Copy, SHORT);
            thread::sleep(SHORT * 2);
            r.deliver(1);
        });
        let slow: Job<u32> = Box::new(|r| {
            r.begin(Step::Gemm, Duration::from_secs(10));
            thread::sleep(SHORT * 4);
            r.deliver(2);
        });
        let outcomes = supervise(
            vec![late, slow],
            Duration::from_secs(10),
            Duration::from_secs(1),
            &mut |_| {},
            &mut |_| {},
        );
        assert_eq!(
            outcomes[0],
            ended(
                vec![],
                End::TimedOut {
                    step: Step::Copy,
                    limit: SHORT
                }
            )
        );
        assert_eq!(outcomes[1], ended(vec![2], End::Done));
    }

    #[test]
    fn a_job_that_never_begins_a_step_is_bounded_by_setup() {
        let stuck: Job<()> = Box::new(|_| thread::sleep(Duration::from_secs(30)));
        let outcomes = supervise(vec![stuck], SHORT, SHORT, &mut |_| {}, &mut |_| {});
        assert_eq!(
            outcomes,
            vec![ended(
                vec![],
                End::TimedOut {
                    step: Step::Setup,
                    limit: SHORT
                }
            )]
        );
    }

    #[test]
    fn ticks_see_which_step_each_worker_is_in() {
        let job: Job<()> = Box::new(|r| {
            r.begin(Step::Gemm, Duration::from_secs(10));
            thread::sleep(Duration::from_millis(350));
        });
        let mut seen = Vec::new();
        supervise(
            vec![job],
            Duration::from_secs(10),
            Duration::from_millis(100),
            &mut |_| {},
            &mut |running| seen.push(running[0].map(|r| r.step)),
        );
        assert!(seen.len() >= 2, "{seen:?}");
        assert!(seen.contains(&Some(Step::Gemm)), "{seen:?}");
    }

    #[test]
    fn bounded_calls_return_time_out_or_say_why_they_panicked() {
        assert_eq!(bounded(Duration::from_secs(5), || 42), Ok(42));
        assert_eq!(
            bounded(SHORT, || thread::sleep(Duration::from_secs(30))),
            Err("timed out after 0.2 s".into())
        );
        // The panic comes back at once; the bound is generous because printing its backtrace
        // (RUST_BACKTRACE set) can outlast SHORT on a busy machine.
        let panicked: Result<(), String> =
            bounded(Duration::from_secs(30), || panic!("no libcuda"));
        assert_eq!(panicked, Err("panicked: no libcuda".into()));
    }
}
