//! GPU work runs on worker threads, one per job, and this module waits for them with a time
//! limit per step. A CUDA call that hangs (a GPU fallen off the bus, a wedged driver) cannot
//! be cancelled: its worker is left behind and its device is reported as timed out, while the
//! other workers go on. Workers' progress lines come back here, so `say` stays on the caller's
//! thread; `tick` runs about every `tick_every`, for the NVML samples taken alongside.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
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
pub enum Outcome<R> {
    Done(R),
    TimedOut { step: Step, limit: Duration },
    Panicked(String),
}

enum Report<R> {
    Say(String),
    Begin(Step, Duration),
    Done(R),
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
}

pub type Job<R> = Box<dyn FnOnce(&Reporter<R>) -> R + Send>;

enum Slot<R> {
    Running {
        step: Step,
        since: Instant,
        limit: Duration,
    },
    Ended(Outcome<R>),
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
    while slots.iter().any(|s| matches!(s, Slot::Running { .. })) {
        let wake = slots
            .iter()
            .filter_map(|s| match s {
                Slot::Running { since, limit, .. } => Some(*since + *limit),
                Slot::Ended(_) => None,
            })
            .fold(next_tick, Instant::min);
        match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok((worker, report)) => receive(&mut slots[worker], report, say),
            Err(RecvTimeoutError::Timeout) => {}
            // Every worker sends its end before it lets go of its sender: none is left.
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        for slot in &mut slots {
            if let Slot::Running { step, since, limit } = *slot
                && now >= since + limit
            {
                *slot = Slot::Ended(Outcome::TimedOut { step, limit });
            }
        }
        if now >= next_tick {
            let running: Vec<Option<Running>> = slots
                .iter()
                .map(|s| match s {
                    Slot::Running { step, since, .. } => Some(Running {
                        step: *step,
                        since: *since,
                    }),
                    Slot::Ended(_) => None,
                })
                .collect();
            tick(&running);
            next_tick = now + tick_every;
        }
    }
    slots
        .into_iter()
        .map(|s| match s {
            Slot::Ended(outcome) => outcome,
            Slot::Running { .. } => Outcome::Panicked("worker vanished without a result".into()),
        })
        .collect()
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
                Ok(result) => Report::Done(result),
                Err(payload) => Report::Panicked(panic_text(payload.as_ref())),
            };
            let _ = reporter.tx.send((worker, end));
        });
    match spawned {
        Ok(_) => Slot::Running {
            step: Step::Setup,
            since: now,
            limit: setup_limit,
        },
        Err(e) => Slot::Ended(Outcome::Panicked(format!("cannot start a thread: {e}"))),
    }
}

fn receive<R>(slot: &mut Slot<R>, report: Report<R>, say: &mut dyn FnMut(&str)) {
    match report {
        // A worker given up on may still talk; its late lines are still true.
        Report::Say(line) => say(&line),
        Report::Begin(step, limit) => {
            if let Slot::Running { .. } = slot {
                *slot = Slot::Running {
                    step,
                    since: Instant::now(),
                    limit,
                };
            }
        }
        Report::Done(result) => {
            if let Slot::Running { .. } = slot {
                *slot = Slot::Ended(Outcome::Done(result));
            }
        }
        Report::Panicked(why) => {
            if let Slot::Running { .. } = slot {
                *slot = Slot::Ended(Outcome::Panicked(why));
            }
        }
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
    let job: Job<T> = Box::new(move |_| f());
    match supervise(vec![job], limit, limit, &mut |_| {}, &mut |_| {}).pop() {
        Some(Outcome::Done(value)) => Ok(value),
        Some(Outcome::TimedOut { limit, .. }) => {
            Err(format!("timed out after {} s", limit.as_secs_f64()))
        }
        Some(Outcome::Panicked(why)) => Err(format!("panicked: {why}")),
        None => Err("no result".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Duration = Duration::from_millis(200);

    #[test]
    fn a_hung_step_times_out_and_the_others_finish() {
        let quick: Job<u32> = Box::new(|r| {
            r.begin(Step::Copy, Duration::from_secs(10));
            r.say("copy done".into());
            7
        });
        let hung: Job<u32> = Box::new(|r| {
            r.begin(Step::Gemm, SHORT);
            thread::sleep(Duration::from_secs(30));
            0
        });
        let broken: Job<u32> = Box::new(|_| panic!("Missing symbol cuFoo"));
        let mut lines = Vec::new();
        let started = Instant::now();
        let outcomes = supervise(
            vec![quick, hung, broken],
            Duration::from_secs(10),
            Duration::from_secs(1),
            &mut |l| lines.push(l.to_string()),
            &mut |_| {},
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(outcomes[0], Outcome::Done(7));
        assert_eq!(
            outcomes[1],
            Outcome::TimedOut {
                step: Step::Gemm,
                limit: SHORT
            }
        );
        assert_eq!(
            outcomes[2],
            Outcome::Panicked("Missing symbol cuFoo".into())
        );
        assert_eq!(lines, vec!["copy done".to_string()]);
    }

    #[test]
    fn a_job_that_never_begins_a_step_is_bounded_by_setup() {
        let stuck: Job<()> = Box::new(|_| thread::sleep(Duration::from_secs(30)));
        let outcomes = supervise(vec![stuck], SHORT, SHORT, &mut |_| {}, &mut |_| {});
        assert_eq!(
            outcomes,
            vec![Outcome::TimedOut {
                step: Step::Setup,
                limit: SHORT
            }]
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
        let panicked: Result<(), String> = bounded(SHORT, || panic!("no libcuda"));
        assert_eq!(panicked, Err("panicked: no libcuda".into()));
    }
}
