//! When the panel reads its buttons: a [`Pace`] (fast while someone uses the panel,
//! slower when nobody has pressed anything for a while) and a [`ScanTicker`] that
//! wakes the process once per scan.
//!
//! Why a timerfd and not `tokio::time::interval`: tokio's timer wheel keeps a timer
//! more than 64 ms away in a coarse level, wakes the thread when that coarse slot
//! starts only to move the timer to the fine level, then wakes again at the deadline:
//! two wake-ups per scan for any period above 64 ms (measured with strace: an empty
//! `epoll_wait` between ticks). A kernel timer read through the reactor is one wake-up
//! per period, on the same thread, with no task hop.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// How often to scan: `fast` for `active_for` after the last press, `idle` otherwise.
///
/// The TM1638 answers a key scan with the keys held at that instant, so at the idle
/// period a press shorter than that period can fall between two scans; choose `idle`
/// no longer than the shortest press that must be seen. (The LCD plate latches the
/// first change in the expander, so there the period only sets the delay.)
#[derive(Debug, Clone)]
pub struct Pace {
    fast: Duration,
    idle: Duration,
    active_for: Duration,
    last_press: Option<Instant>,
}

impl Pace {
    /// Starts idle.
    pub fn new(fast: Duration, idle: Duration, active_for: Duration) -> Pace {
        Pace {
            fast,
            idle,
            active_for,
            last_press: None,
        }
    }

    /// Someone pressed a button at `at`: scan fast for a while.
    pub fn pressed(&mut self, at: Instant) {
        self.last_press = Some(at);
    }

    /// The scan period to use from `now` on.
    pub fn period(&self, now: Instant) -> Duration {
        match self.last_press {
            Some(at) if now.saturating_duration_since(at) < self.active_for => self.fast,
            _ => self.idle,
        }
    }
}

/// A timerfd, so that the reactor can wait on it.
struct TimerHandle(TimerFd);

impl AsRawFd for TimerHandle {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// A periodic kernel timer read through tokio's reactor: one wake-up per period.
/// Ticks missed while the process was busy are merged into one (like
/// `MissedTickBehavior::Delay`, but keeping the phase).
pub struct ScanTicker {
    timer: AsyncFd<TimerHandle>,
    period: Duration,
}

impl ScanTicker {
    /// A ticker whose first tick is one `period` from now. Needs a tokio runtime with
    /// I/O enabled.
    pub fn new(period: Duration) -> io::Result<ScanTicker> {
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        arm(&timer, period)?;
        // tokio deprecates `AsyncFd::with_interest` in favour of the unsafe `register`,
        // whose contract is that the fd stays open and the same while registered: it
        // does, `TimerHandle` owns it and is moved into the AsyncFd. Calling the safe,
        // deprecated form keeps this crate free of `unsafe`.
        #[allow(deprecated)]
        let timer = AsyncFd::with_interest(TimerHandle(timer), Interest::READABLE)?;
        Ok(ScanTicker { timer, period })
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    /// Changes the period; the next tick is one new `period` from now. Nothing is done
    /// when the period is already this one (the phase is kept).
    pub fn set_period(&mut self, period: Duration) -> io::Result<()> {
        if period != self.period {
            arm(&self.timer.get_ref().0, period)?;
            self.period = period;
        }
        Ok(())
    }

    /// Waits for the next tick. Cancel-safe: a tick not yet read stays pending.
    pub async fn tick(&mut self) -> io::Result<()> {
        loop {
            let mut guard = self.timer.readable().await?;
            // The read returns the number of expirations (ignored: missed ticks merge)
            // and clears readiness; EAGAIN means another read got it first.
            match guard.try_io(|timer| timer.get_ref().0.wait().map_err(io::Error::from)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

fn arm(timer: &TimerFd, period: Duration) -> io::Result<()> {
    // A zero value would disarm the timer for good.
    let period = period.max(Duration::from_millis(1));
    timer.set(
        Expiration::Interval(TimeSpec::from_duration(period)),
        TimerSetTimeFlags::empty(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_after_a_press_then_idle_again() {
        let fast = Duration::from_millis(100);
        let idle = Duration::from_millis(150);
        let mut pace = Pace::new(fast, idle, Duration::from_secs(30));
        let t0 = Instant::now();
        assert_eq!(pace.period(t0), idle, "starts idle");
        pace.pressed(t0);
        assert_eq!(pace.period(t0 + Duration::from_secs(29)), fast);
        assert_eq!(pace.period(t0 + Duration::from_secs(30)), idle);
        pace.pressed(t0 + Duration::from_secs(40));
        assert_eq!(pace.period(t0 + Duration::from_secs(41)), fast);
    }

    #[tokio::test]
    async fn the_ticker_ticks_and_changes_period() {
        let mut ticker = ScanTicker::new(Duration::from_millis(5)).unwrap();
        ticker.tick().await.unwrap();
        ticker.tick().await.unwrap();
        ticker.set_period(Duration::from_millis(7)).unwrap();
        assert_eq!(ticker.period(), Duration::from_millis(7));
        ticker.tick().await.unwrap();
    }
}
