//! Per relay statistics of the local day: time on, switch count, last on, last off.
//! Rebuilt from the history at start, so they survive restarts with no file of
//! their own; published on each switch and at midnight, never on a timer.

use jiff::tz::TimeZone;
use jiff::{Timestamp, civil};
use serde::Serialize;

use crate::store::HistoryEvent;

#[derive(Debug, Clone, PartialEq)]
pub struct DayStats {
    day: civil::Date,
    day_start_ms: u64,
    /// On-time of intervals that ended today.
    closed_on_ms: u64,
    on_since_ms: Option<u64>,
    switches: u32,
    last_on_ms: Option<u64>,
    last_off_ms: Option<u64>,
}

/// The retained `stats` payload.
#[derive(Debug, Serialize)]
pub struct StatsPayload {
    pub ts: u64,
    pub day: String,
    /// Seconds on since local midnight.
    pub on_time_today: u64,
    pub switch_count_today: u32,
    pub last_on: Option<u64>,
    pub last_off: Option<u64>,
    /// When the current on-period started (null when off), so that a viewer can
    /// count on-time live without waking this process.
    pub on_since: Option<u64>,
}

fn day_of(ms: u64, tz: &TimeZone) -> (civil::Date, u64) {
    let zoned = Timestamp::from_millisecond(ms as i64)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_zoned(tz.clone());
    let start = zoned
        .start_of_day()
        .map(|z| z.timestamp().as_millisecond().max(0) as u64)
        .unwrap_or(ms);
    (zoned.date(), start)
}

/// The next local midnight after `ms`.
pub fn next_midnight_ms(ms: u64, tz: &TimeZone) -> u64 {
    let (day, start) = day_of(ms, tz);
    day.tomorrow()
        .ok()
        .and_then(|d| d.to_zoned(tz.clone()).ok())
        .and_then(|z| z.start_of_day().ok())
        .map(|z| z.timestamp().as_millisecond().max(0) as u64)
        .unwrap_or(start + 86_400_000)
}

impl DayStats {
    pub fn new(now_ms: u64, on: bool, tz: &TimeZone) -> DayStats {
        let (day, day_start_ms) = day_of(now_ms, tz);
        DayStats {
            day,
            day_start_ms,
            closed_on_ms: 0,
            on_since_ms: on.then_some(now_ms),
            switches: 0,
            last_on_ms: None,
            last_off_ms: None,
        }
    }

    /// Replays a relay's history (oldest first) up to now.
    pub fn from_history<'a>(
        events: impl IntoIterator<Item = &'a HistoryEvent>,
        now_ms: u64,
        tz: &TimeZone,
    ) -> DayStats {
        let mut stats: Option<DayStats> = None;
        for event in events {
            let at = (event.ts * 1000.0) as u64;
            let stats = stats.get_or_insert_with(|| DayStats::new(at, event.prev_on, tz));
            if event.on != event.prev_on {
                stats.switch(event.on, at, tz);
            }
        }
        let mut stats = stats.unwrap_or_else(|| DayStats::new(now_ms, false, tz));
        stats.roll(now_ms, tz);
        stats
    }

    /// Starts a new day if `now_ms` is past midnight.
    pub fn roll(&mut self, now_ms: u64, tz: &TimeZone) {
        let (day, start) = day_of(now_ms, tz);
        if day != self.day {
            self.day = day;
            self.day_start_ms = start;
            self.closed_on_ms = 0;
            self.switches = 0;
        }
    }

    /// Makes the running period agree with the output as found at start (the
    /// history may miss the last change if the process was killed in between),
    /// without counting a switch.
    pub fn align(&mut self, on: bool, now_ms: u64) {
        match (on, self.on_since_ms) {
            (true, None) => self.on_since_ms = Some(now_ms),
            (false, Some(since)) => {
                self.closed_on_ms += now_ms.saturating_sub(since.max(self.day_start_ms));
                self.on_since_ms = None;
            }
            _ => {}
        }
    }

    pub fn switch(&mut self, on: bool, at_ms: u64, tz: &TimeZone) {
        self.roll(at_ms, tz);
        if on {
            if self.on_since_ms.is_none() {
                self.on_since_ms = Some(at_ms);
            }
            self.last_on_ms = Some(at_ms);
        } else {
            if let Some(since) = self.on_since_ms.take() {
                self.closed_on_ms += at_ms.saturating_sub(since.max(self.day_start_ms));
            }
            self.last_off_ms = Some(at_ms);
        }
        self.switches += 1;
    }

    pub fn payload(&self, now_ms: u64) -> StatsPayload {
        let open = self
            .on_since_ms
            .map(|since| now_ms.saturating_sub(since.max(self.day_start_ms)))
            .unwrap_or(0);
        StatsPayload {
            ts: now_ms / 1000,
            day: self.day.to_string(),
            on_time_today: (self.closed_on_ms + open) / 1000,
            switch_count_today: self.switches,
            last_on: self.last_on_ms.map(|ms| ms / 1000),
            last_off: self.last_off_ms.map(|ms| ms / 1000),
            on_since: self.on_since_ms.map(|ms| ms / 1000),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvbus_bus::{ReasonSource, RelayMode};

    // 2025-11-25 00:00:00 UTC
    const MIDNIGHT: u64 = 1_764_028_800_000;
    const HOUR: u64 = 3_600_000;

    fn event(at_ms: u64, prev_on: bool, on: bool) -> HistoryEvent {
        HistoryEvent {
            ts: at_ms as f64 / 1000.0,
            relay: "pump".into(),
            prev_mode: RelayMode::AutoOff,
            mode: RelayMode::AutoOn,
            prev_on,
            on,
            by: ReasonSource::Rules,
            text: String::new(),
        }
    }

    #[test]
    fn on_time_counts_only_today_and_the_running_period() {
        let tz = TimeZone::UTC;
        let events = [
            event(MIDNIGHT - 2 * HOUR, false, true), // on since 22:00 yesterday
            event(MIDNIGHT + HOUR, true, false),     // off at 01:00: 1 h today
            event(MIDNIGHT + 10 * HOUR, false, true), // on at 10:00
            event(MIDNIGHT + 10 * HOUR, true, true), // a mode change, same output
        ];
        let stats = DayStats::from_history(&events, MIDNIGHT + 12 * HOUR, &tz);
        let payload = stats.payload(MIDNIGHT + 12 * HOUR);
        assert_eq!(payload.on_time_today, 3 * 3600);
        assert_eq!(payload.switch_count_today, 2);
        assert_eq!(payload.last_off, Some((MIDNIGHT + HOUR) / 1000));
        assert_eq!(payload.on_since, Some((MIDNIGHT + 10 * HOUR) / 1000));
        assert_eq!(payload.day, "2025-11-25");
    }

    #[test]
    fn an_output_found_on_without_its_history_line_counts_from_now() {
        let tz = TimeZone::UTC;
        let events = [
            event(MIDNIGHT + HOUR, false, true),
            event(MIDNIGHT + 2 * HOUR, true, false),
        ];
        let mut stats = DayStats::from_history(&events, MIDNIGHT + 3 * HOUR, &tz);
        stats.align(true, MIDNIGHT + 3 * HOUR);
        let payload = stats.payload(MIDNIGHT + 4 * HOUR);
        assert_eq!(payload.on_time_today, 2 * 3600);
        assert_eq!(payload.switch_count_today, 2, "aligning is no switch");
    }

    #[test]
    fn midnight_starts_a_new_day_and_is_found_in_the_local_zone() {
        let tz = TimeZone::UTC;
        let mut stats = DayStats::new(MIDNIGHT - HOUR, true, &tz);
        assert_eq!(next_midnight_ms(MIDNIGHT - HOUR, &tz), MIDNIGHT);
        stats.roll(MIDNIGHT + 1000, &tz);
        assert_eq!(stats.payload(MIDNIGHT + HOUR).on_time_today, 3600);
        let paris = TimeZone::get("Europe/Paris").unwrap();
        assert_eq!(next_midnight_ms(MIDNIGHT, &paris), MIDNIGHT + 23 * HOUR);
    }
}
