//! Console lines of a long step, forwarded to the appliance as they come (batched, at most one
//! call every few seconds), so an operator sees where a burn-in is before its report. Best
//! effort: a line that cannot be delivered is dropped after a while, never waited for.

use std::time::{Duration, Instant};

use provisioner_protocol::{MacAddr, ProgressReport};

use crate::appliance::Answer;

/// Where progress goes: the appliance, or a test's recorder.
pub trait Sink {
    fn progress(&self, report: &ProgressReport) -> Answer<()>;
}

/// Lines held while the appliance cannot be reached; older ones are dropped first.
const HELD: usize = 200;

pub struct Progress<S: Sink> {
    sink: S,
    mac: MacAddr,
    every: Duration,
    pending: Vec<String>,
    last_sent: Option<Instant>,
    /// Whether a failed delivery has been said on the console (said once, not per line).
    said_failure: bool,
}

impl<S: Sink> Progress<S> {
    pub fn new(sink: S, mac: MacAddr, every: Duration) -> Self {
        Progress {
            sink,
            mac,
            every,
            pending: Vec::new(),
            last_sent: None,
            said_failure: false,
        }
    }

    /// Queues `line`, and sends the queue if the last call was long enough ago. Returns a
    /// line for the console when delivery first fails.
    pub fn line(&mut self, line: &str, now: Instant) -> Option<String> {
        self.pending.push(line.to_string());
        if self.pending.len() > HELD {
            let extra = self.pending.len() - HELD;
            self.pending.drain(..extra);
        }
        match self.last_sent {
            Some(t) if now.duration_since(t) < self.every => None,
            _ => self.flush(now),
        }
    }

    /// Sends what is queued.
    pub fn flush(&mut self, now: Instant) -> Option<String> {
        if self.pending.is_empty() {
            return None;
        }
        self.last_sent = Some(now);
        let report = ProgressReport {
            mac: self.mac,
            lines: std::mem::take(&mut self.pending),
        };
        match self.sink.progress(&report) {
            Answer::Done(()) => {
                self.said_failure = false;
                None
            }
            Answer::Refused(why) => {
                // The appliance will not take them: keep nothing.
                (!std::mem::replace(&mut self.said_failure, true))
                    .then(|| format!("progress not taken: {why}"))
            }
            Answer::Retry(why) => {
                self.pending = report.lines;
                (!std::mem::replace(&mut self.said_failure, true))
                    .then(|| format!("progress not delivered, holding it: {why}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    #[derive(Default)]
    struct Recorder {
        sent: RefCell<Vec<Vec<String>>>,
        down: RefCell<bool>,
    }

    impl Sink for &Recorder {
        fn progress(&self, report: &ProgressReport) -> Answer<()> {
            if *self.down.borrow() {
                return Answer::Retry("appliance unreachable".into());
            }
            self.sent.borrow_mut().push(report.lines.clone());
            Answer::Done(())
        }
    }

    #[test]
    fn lines_are_batched_and_held_while_the_appliance_is_away() {
        let rec = Recorder::default();
        let mut p = Progress::new(
            &rec,
            "52:54:00:00:00:01".parse().unwrap(),
            Duration::from_secs(5),
        );
        let t0 = Instant::now();
        assert_eq!(p.line("a", t0), None); // the first line goes at once
        p.line("b", t0 + Duration::from_secs(1));
        p.line("c", t0 + Duration::from_secs(2));
        p.line("d", t0 + Duration::from_secs(6));
        assert_eq!(*rec.sent.borrow(), [vec!["a"], vec!["b", "c", "d"]]);

        *rec.down.borrow_mut() = true;
        let said = p.line("e", t0 + Duration::from_secs(12));
        assert_eq!(
            said.as_deref(),
            Some("progress not delivered, holding it: appliance unreachable")
        );
        assert_eq!(p.line("f", t0 + Duration::from_secs(18)), None, "said once");
        *rec.down.borrow_mut() = false;
        p.line("g", t0 + Duration::from_secs(24));
        assert_eq!(rec.sent.borrow().last().unwrap(), &["e", "f", "g"]);
    }

    #[test]
    fn an_appliance_away_for_long_costs_only_the_oldest_lines() {
        let rec = Recorder::default();
        *rec.down.borrow_mut() = true;
        let mut p = Progress::new(
            &rec,
            "52:54:00:00:00:02".parse().unwrap(),
            Duration::from_secs(5),
        );
        let t0 = Instant::now();
        for i in 0..500 {
            p.line(&format!("{i}"), t0 + Duration::from_secs(i));
        }
        *rec.down.borrow_mut() = false;
        p.flush(t0 + Duration::from_secs(600));
        let sent = rec.sent.borrow();
        assert_eq!(sent[0].len(), HELD);
        assert_eq!(sent[0][0], "300");
    }
}
