//! What each relay did: its mode, its state, and when it was on, as the history helpers
//! (`on_for`, `run_today`, `cycle_done_today`...) need it.

use std::fmt;

/// A relay's mode (the topic contract's `forced_off`, `auto_off`, `auto_on`, `forced_on`).
/// Rules only move a relay between the two automatic modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    ForcedOff,
    AutoOff,
    AutoOn,
    ForcedOn,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        Some(match s.trim() {
            "forced_off" => Mode::ForcedOff,
            "auto_off" => Mode::AutoOff,
            "auto_on" => Mode::AutoOn,
            "forced_on" => Mode::ForcedOn,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::ForcedOff => "forced_off",
            Mode::AutoOff => "auto_off",
            Mode::AutoOn => "auto_on",
            Mode::ForcedOn => "forced_on",
        }
    }

    pub fn is_auto(self) -> bool {
        matches!(self, Mode::AutoOff | Mode::AutoOn)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One relay as last seen, with its on-intervals since the start of yesterday.
#[derive(Debug, Clone, Default)]
pub struct RelayHistory {
    pub on: Option<bool>,
    pub mode: Option<Mode>,
    /// When the relay last changed state, or when we first saw it (history before that is
    /// not known).
    pub since: Option<i64>,
    /// `(start, end)` of on-periods, newest last; the last is open while the relay is on.
    intervals: Vec<(i64, Option<i64>)>,
    /// Changes seen by this process (0: everything before is hearsay, see `seed`).
    changes_seen: u32,
}

/// Today's figures as the relay bridge keeps them (its retained `stats` topic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayFigures {
    /// When the figures were made (unix s).
    pub ts: i64,
    pub on_time_today: i64,
    pub last_off: Option<i64>,
    /// When it came on, while it is on.
    pub on_since: Option<i64>,
}

impl RelayHistory {
    /// Records the relay's state; returns true if it changed.
    pub fn set_on(&mut self, on: bool, now: i64) -> bool {
        if self.on == Some(on) {
            return false;
        }
        let first = self.on.is_none();
        if !first {
            self.changes_seen += 1;
        }
        self.on = Some(on);
        self.since = Some(now);
        if on {
            self.intervals.push((now, None));
        } else if let Some(last) = self.intervals.last_mut()
            && last.1.is_none()
        {
            last.1 = Some(now);
        }
        !first
    }

    /// Rebuilds today's history from the relay bridge's figures, so that a restart of the
    /// rules does not forget that the backup already ran. Only before this process has
    /// seen a change of its own (what it saw itself is better than a summary), and only
    /// with figures of the current day.
    pub fn seed(&mut self, f: DayFigures, day_start: i64) {
        if self.changes_seen > 0 || f.ts < day_start {
            return;
        }
        let now_on = self.on.unwrap_or(f.on_since.is_some());
        let open = f.on_since.filter(|_| now_on);
        let open_today = open.map_or(0, |s| (f.ts - s.max(day_start)).max(0));
        let closed = (f.on_time_today - open_today).max(0);
        self.intervals.clear();
        if closed > 0 {
            let end = f
                .last_off
                .filter(|e| *e >= day_start + closed)
                .unwrap_or(day_start + closed);
            self.intervals.push((end - closed, Some(end)));
        } else if let Some(off) = f.last_off.filter(|e| *e >= day_start) {
            // Switched today for less than a second: still a cycle done.
            self.intervals.push((off, Some(off)));
        }
        if let Some(start) = open {
            self.intervals.push((start, None));
            self.since = Some(start);
        } else if let Some(off) = f.last_off {
            self.since = Some(off);
        }
        self.on = Some(now_on);
    }

    /// Forgets on-periods that ended before `keep_from`.
    pub fn prune(&mut self, keep_from: i64) {
        self.intervals
            .retain(|(_, end)| end.is_none_or(|e| e >= keep_from));
    }

    /// Seconds on since the relay came on (0 when off).
    pub fn on_for(&self, now: i64) -> Option<i64> {
        match self.on? {
            true => Some(now - self.since?),
            false => Some(0),
        }
    }

    pub fn off_for(&self, now: i64) -> Option<i64> {
        match self.on? {
            false => Some(now - self.since?),
            true => Some(0),
        }
    }

    /// Seconds on between `day_start` and `now`.
    pub fn run_since(&self, day_start: i64, now: i64) -> i64 {
        self.intervals
            .iter()
            .map(|(s, e)| (e.unwrap_or(now).min(now) - (*s).max(day_start)).max(0))
            .sum()
    }

    /// Came on at some point since `day_start` (or is on now).
    pub fn ran_since(&self, day_start: i64) -> bool {
        self.intervals
            .iter()
            .any(|(s, e)| *s >= day_start || e.is_none_or(|e| e >= day_start))
    }

    /// Was on and then went off since `day_start`.
    pub fn cycle_done_since(&self, day_start: i64) -> bool {
        self.intervals
            .iter()
            .any(|(_, e)| e.is_some_and(|e| e >= day_start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_time_counts_only_today() {
        let mut h = RelayHistory::default();
        h.set_on(false, 0);
        h.set_on(true, 100);
        h.set_on(false, 300);
        assert!(h.cycle_done_since(200));
        assert!(!h.cycle_done_since(301));
        h.set_on(true, 400);
        assert_eq!(h.run_since(200, 500), 100 + 100);
        assert_eq!(h.on_for(500), Some(100));
        assert!(h.ran_since(450));
        h.prune(350);
        assert_eq!(h.run_since(0, 500), 100);
    }

    #[test]
    fn seeded_from_the_bridge_figures() {
        // Day starts at 1000. The bridge says: 600 s on today, last off at 2000, off now.
        let mut h = RelayHistory::default();
        h.set_on(false, 5000);
        h.seed(
            DayFigures {
                ts: 4990,
                on_time_today: 600,
                last_off: Some(2000),
                on_since: None,
            },
            1000,
        );
        assert!(h.ran_since(1000) && h.cycle_done_since(1000));
        assert_eq!(h.run_since(1000, 5000), 600);
        assert_eq!(h.off_for(5000), Some(3000));
        // On since 4000, 900 s today in all: 100 s before, 800 s in this period.
        let mut h = RelayHistory::default();
        h.seed(
            DayFigures {
                ts: 4800,
                on_time_today: 900,
                last_off: Some(3000),
                on_since: Some(4000),
            },
            1000,
        );
        assert_eq!(h.on, Some(true));
        assert_eq!(h.run_since(1000, 5000), 100 + 1000);
        assert_eq!(h.on_for(5000), Some(1000));
        // Yesterday's figures, or after a change seen here: ignored.
        let mut h = RelayHistory::default();
        h.seed(
            DayFigures {
                ts: 900,
                on_time_today: 900,
                last_off: Some(800),
                on_since: None,
            },
            1000,
        );
        assert!(!h.ran_since(1000));
        h.set_on(true, 1100);
        h.set_on(false, 1200);
        h.seed(
            DayFigures {
                ts: 1300,
                on_time_today: 5,
                last_off: None,
                on_since: None,
            },
            1000,
        );
        assert_eq!(h.run_since(1000, 1300), 100);
    }
}
