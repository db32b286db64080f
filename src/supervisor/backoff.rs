//! When to restart a child that exited: at once would turn a child that cannot start into
//! a busy loop on a Pi Zero, so the delay doubles with each crash in a row, up to a cap,
//! and starts over once the child has run well for a while.

use std::time::Duration;

/// Crashes in a row from which a child is reported as `crash_loop`.
pub const CRASH_LOOP_AFTER: u32 = 3;

#[derive(Debug, Clone)]
pub struct RestartBackoff {
    first: Duration,
    max: Duration,
    healthy_after: Duration,
    next: Duration,
    failures_in_a_row: u32,
}

impl RestartBackoff {
    pub fn new(first: Duration, max: Duration, healthy_after: Duration) -> RestartBackoff {
        RestartBackoff {
            first,
            max,
            healthy_after,
            next: first,
            failures_in_a_row: 0,
        }
    }

    /// The child exited after running `ran`: how long to wait before starting it again.
    pub fn after_exit(&mut self, ran: Duration) -> Duration {
        if ran >= self.healthy_after {
            self.next = self.first;
            self.failures_in_a_row = 0;
        }
        self.failures_in_a_row += 1;
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Exits in a row, each sooner than `healthy_after` after its start (the first one may
    /// have come after a long good run).
    pub fn failures_in_a_row(&self) -> u32 {
        self.failures_in_a_row
    }

    pub fn is_crash_loop(&self) -> bool {
        self.failures_in_a_row >= CRASH_LOOP_AFTER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn doubles_up_to_the_cap_and_resets_after_a_good_run() {
        let mut b = RestartBackoff::new(S(1), S(60), S(60));
        let delays: Vec<u64> = (0..8).map(|_| b.after_exit(S(2)).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert!(b.is_crash_loop());
        assert_eq!(b.failures_in_a_row(), 8);

        assert_eq!(b.after_exit(S(61)), S(1));
        assert_eq!(b.failures_in_a_row(), 1);
        assert!(!b.is_crash_loop());
        assert_eq!(b.after_exit(S(1)), S(2));
    }
}
