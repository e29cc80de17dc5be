//! Progress of an install for the console and the appliance: which phase, how many bytes came
//! in and went out, and how fast. Reported when a phase starts and ends, and in between at
//! most once a second, so a 16 GiB write makes a few hundred calls, not millions.

use std::fmt;
use std::time::{Duration, Instant};

/// How often progress is reported within a phase, at most.
pub const EVERY: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Receiving the compressed image and writing its mapped ranges.
    DownloadWrite,
    /// Reading every mapped range back and checking its sha256.
    ReadBack,
    /// Writing the held-back first MiB (protective MBR and primary GPT).
    FirstMib,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::DownloadWrite => "download+write",
            Phase::ReadBack => "read-back",
            Phase::FirstMib => "first MiB",
        })
    }
}

/// One progress report.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    pub phase: Phase,
    /// Compressed bytes received from the network (bytes sent twice counted twice).
    pub received_bytes: u64,
    /// Bytes written to the disk.
    pub written_bytes: u64,
    /// Bytes read back and found as the block map says.
    pub verified_bytes: u64,
    /// Where the phase ends: the compressed size, the mapped bytes, the first MiB; `None` when
    /// the server did not say.
    pub phase_total_bytes: Option<u64>,
    /// The phase's bytes so far (received, verified, written) per second of the phase.
    pub bytes_per_second: f64,
    /// Since the install started.
    pub elapsed: Duration,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MIB: f64 = (1u64 << 20) as f64;
        write!(
            f,
            "{}: received {:.0} MiB, written {:.0} MiB, verified {:.0} MiB, {:.1} MiB/s",
            self.phase,
            self.received_bytes as f64 / MIB,
            self.written_bytes as f64 / MIB,
            self.verified_bytes as f64 / MIB,
            self.bytes_per_second / MIB
        )
    }
}

/// Keeps the counters and decides when a report is due.
pub(super) struct Meter<'a> {
    sink: &'a mut dyn FnMut(Progress),
    started: Instant,
    phase: Phase,
    phase_started: Instant,
    last: Option<Instant>,
    pub received: u64,
    pub written: u64,
    pub verified: u64,
    pub phase_total: Option<u64>,
}

impl<'a> Meter<'a> {
    pub fn new(sink: &'a mut dyn FnMut(Progress), now: Instant) -> Self {
        Meter {
            sink,
            started: now,
            phase: Phase::DownloadWrite,
            phase_started: now,
            last: None,
            received: 0,
            written: 0,
            verified: 0,
            phase_total: None,
        }
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// Starts `phase` and reports it.
    pub fn phase(&mut self, phase: Phase, total: Option<u64>, now: Instant) {
        self.phase = phase;
        self.phase_total = total;
        self.phase_started = now;
        self.report(now);
    }

    /// Reports if the last report is [`EVERY`] old.
    pub fn tick(&mut self, now: Instant) {
        if due(self.last, now) {
            self.report(now);
        }
    }

    /// Reports now (a phase's end).
    pub fn report(&mut self, now: Instant) {
        self.last = Some(now);
        let done = match self.phase {
            Phase::DownloadWrite => self.received,
            Phase::ReadBack => self.verified,
            Phase::FirstMib => self.written,
        };
        let secs = now.duration_since(self.phase_started).as_secs_f64();
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        (self.sink)(Progress {
            phase: self.phase,
            received_bytes: self.received,
            written_bytes: self.written,
            verified_bytes: self.verified,
            phase_total_bytes: self.phase_total,
            bytes_per_second: if self.phase == Phase::FirstMib {
                0.0
            } else {
                rate
            },
            elapsed: now.duration_since(self.started),
        });
    }
}

/// Whether a report is due at `now`, the last one having been at `last`.
fn due(last: Option<Instant>, now: Instant) -> bool {
    last.is_none_or(|last| now.duration_since(last) >= EVERY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_at_phase_starts_and_then_once_a_second() {
        let mut seen = Vec::new();
        let mut sink = |p: Progress| seen.push(p);
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        {
            let mut meter = Meter::new(&mut sink, t0);
            meter.phase(Phase::DownloadWrite, Some(4000), t0);
            for n in 1..=25 {
                meter.received = n * 100;
                meter.tick(ms(n * 100));
            }
            meter.verified = 1000;
            meter.phase(Phase::ReadBack, Some(2000), ms(2600));
            meter.tick(ms(2700));
        }
        let phases: Vec<(Phase, u64)> = seen.iter().map(|p| (p.phase, p.received_bytes)).collect();
        assert_eq!(
            phases,
            [
                (Phase::DownloadWrite, 0),
                (Phase::DownloadWrite, 1000),
                (Phase::DownloadWrite, 2000),
                (Phase::ReadBack, 2500)
            ]
        );
        // 1000 bytes received in the first second.
        assert_eq!(seen[1].bytes_per_second, 1000.0);
        assert_eq!(seen[3].elapsed, Duration::from_millis(2600));
        assert_eq!(
            seen[1].to_string(),
            "download+write: received 0 MiB, written 0 MiB, verified 0 MiB, 0.0 MiB/s"
        );
    }
}
