//! Reconnection delays: doubling from a first delay up to a ceiling, with up to 25 %
//! jitter, so that processes (or sites) that lost the same broker do not all come back
//! in the same millisecond.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// After a success: the next failure waits the first delay again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        // Cheap jitter without a RNG dependency: the clock's nanoseconds and our pid.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
            ^ std::process::id().wrapping_mul(2_654_435_761);
        base + base.mul_f64(f64::from(seed % 1000) / 4000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_resets() {
        let (first, max) = (Duration::from_millis(200), Duration::from_secs(10));
        let mut b = Backoff::new(first, max);
        let d = b.next_delay();
        assert!(d >= first && d <= first.mul_f64(1.25), "{d:?}");
        for _ in 0..20 {
            b.next_delay();
        }
        let capped = b.next_delay();
        assert!(capped >= max && capped <= max.mul_f64(1.25), "{capped:?}");
        b.reset();
        assert!(b.next_delay() <= first.mul_f64(1.25));
    }
}
