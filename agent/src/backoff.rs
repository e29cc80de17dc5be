//! Exponential backoff for calls to the appliance: 1 s, doubling, at most 30 s. Many nodes
//! power on together and find the appliance busy or not up yet; they should neither hammer it
//! nor wait minutes once it is back.

use std::time::Duration;

pub const FIRST: Duration = Duration::from_secs(1);
pub const MAX: Duration = Duration::from_secs(30);

/// The delays before each retry of one call; starts over for the next call.
#[derive(Debug)]
pub struct Backoff {
    retries: u32,
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            retries: 0,
            next: FIRST,
        }
    }
}

impl Backoff {
    /// The next retry: its number (from 1) and how long to wait before it.
    pub fn next_retry(&mut self) -> (u32, Duration) {
        let delay = self.next;
        self.retries += 1;
        self.next = (self.next * 2).min(MAX);
        (self.retries, delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_one_second_to_thirty() {
        let mut backoff = Backoff::default();
        let delays: Vec<(u32, u64)> = (0..8)
            .map(|_| backoff.next_retry())
            .map(|(n, d)| (n, d.as_secs()))
            .collect();
        assert_eq!(
            delays,
            [
                (1, 1),
                (2, 2),
                (3, 4),
                (4, 8),
                (5, 16),
                (6, 30),
                (7, 30),
                (8, 30)
            ]
        );
    }
}
