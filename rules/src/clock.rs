//! Time as rules see it: a real or virtual clock, and the local civil time of the site
//! (hour, weekday, sunrise...) in its configured time zone.

use jiff::{Timestamp, tz::TimeZone};

use crate::sun;

/// Where "now" comes from: the system clock for the running process, a settable one for
/// simulations (so a simulated day runs in milliseconds and always the same way).
#[derive(Debug, Clone)]
pub enum Clock {
    Real,
    Virtual(i64),
}

impl Clock {
    /// Unix seconds.
    pub fn now(&self) -> i64 {
        match self {
            Clock::Real => Timestamp::now().as_second(),
            Clock::Virtual(t) => *t,
        }
    }

    pub fn advance_to(&mut self, t: i64) {
        if let Clock::Virtual(now) = self {
            *now = (*now).max(t);
        }
    }
}

/// The site: its time zone and position.
#[derive(Debug, Clone)]
pub struct Site {
    pub tz: TimeZone,
    pub tz_name: String,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
}

/// Local civil time at one moment, computed once per pass.
#[derive(Debug, Clone)]
pub struct LocalTime {
    pub ts: i64,
    pub hour: i64,
    pub minute: i64,
    /// Seconds since local midnight.
    pub second_of_day: f64,
    /// `mon` .. `sun`.
    pub weekday: &'static str,
    pub month: i64,
    pub day: i64,
    pub day_start: i64,
    pub next_day_start: i64,
    /// Seconds since local midnight; `None` without coordinates or in polar day/night.
    pub sunrise: Option<f64>,
    pub sunset: Option<f64>,
}

impl LocalTime {
    /// The same day at a later moment, without asking the time zone database again:
    /// only on days of 24 hours (a DST change day is computed in full).
    pub fn advance(&self, ts: i64) -> Option<LocalTime> {
        if ts < self.day_start
            || ts >= self.next_day_start
            || self.next_day_start - self.day_start != 86400
        {
            return None;
        }
        let second = ts - self.day_start;
        Some(LocalTime {
            ts,
            hour: second / 3600,
            minute: (second % 3600) / 60,
            second_of_day: second as f64,
            ..self.clone()
        })
    }
}

impl Site {
    pub fn new(
        tz_name: &str,
        latitude: Option<f64>,
        longitude: Option<f64>,
    ) -> Result<Site, jiff::Error> {
        let tz = if tz_name == "UTC" {
            TimeZone::UTC
        } else {
            TimeZone::get(tz_name)?
        };
        Ok(Site {
            tz,
            tz_name: tz_name.to_string(),
            latitude,
            longitude,
        })
    }

    /// Local date and time with offset, ISO 8601 (`2026-06-21T12:30:00+02:00`).
    pub fn iso(&self, ts: i64) -> String {
        Timestamp::from_second(ts)
            .unwrap_or(Timestamp::UNIX_EPOCH)
            .to_zoned(self.tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
    }

    pub fn local(&self, ts: i64) -> LocalTime {
        let z = Timestamp::from_second(ts)
            .unwrap_or(Timestamp::UNIX_EPOCH)
            .to_zoned(self.tz.clone());
        let day_start = z.start_of_day().map_or(ts, |s| s.timestamp().as_second());
        let next_day_start = z
            .date()
            .tomorrow()
            .ok()
            .and_then(|d| d.to_zoned(self.tz.clone()).ok())
            .map_or(day_start + 86400, |s| s.timestamp().as_second());
        let weekday = match z.weekday() {
            jiff::civil::Weekday::Monday => "mon",
            jiff::civil::Weekday::Tuesday => "tue",
            jiff::civil::Weekday::Wednesday => "wed",
            jiff::civil::Weekday::Thursday => "thu",
            jiff::civil::Weekday::Friday => "fri",
            jiff::civil::Weekday::Saturday => "sat",
            jiff::civil::Weekday::Sunday => "sun",
        };
        let (mut sunrise, mut sunset) = (None, None);
        if let (Some(lat), Some(lon)) = (self.latitude, self.longitude) {
            let utc_midnight = z
                .date()
                .to_zoned(TimeZone::UTC)
                .map_or(day_start, |m| m.timestamp().as_second());
            if let Some((rise, set)) = sun::sunrise_sunset(utc_midnight, lat, lon) {
                sunrise = Some((rise - day_start) as f64);
                sunset = Some((set - day_start) as f64);
            }
        }
        LocalTime {
            ts,
            hour: i64::from(z.hour()),
            minute: i64::from(z.minute()),
            second_of_day: f64::from(z.hour()) * 3600.0
                + f64::from(z.minute()) * 60.0
                + f64::from(z.second()),
            weekday,
            month: i64::from(z.month()),
            day: i64::from(z.day()),
            day_start,
            next_day_start,
            sunrise,
            sunset,
        }
    }

    /// The unix time of a local date and time (`2026-06-21`, `06:00:00`).
    pub fn at(&self, date: jiff::civil::Date, second_of_day: i64) -> Result<i64, jiff::Error> {
        let t = jiff::civil::Time::new(
            (second_of_day / 3600) as i8,
            ((second_of_day % 3600) / 60) as i8,
            (second_of_day % 60) as i8,
            0,
        )?;
        Ok(date
            .to_datetime(t)
            .to_zoned(self.tz.clone())?
            .timestamp()
            .as_second())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paris_local_time_and_sun() {
        let site = Site::new("Europe/Paris", Some(48.8566), Some(2.3522)).unwrap();
        // 2024-06-21 10:30:00 UTC = 12:30 CEST, a Friday.
        let l = site.local(1_718_965_800);
        assert_eq!(
            (l.hour, l.minute, l.weekday, l.month, l.day),
            (12, 30, "fri", 6, 21)
        );
        assert_eq!(l.next_day_start - l.day_start, 86400);
        let rise = l.sunrise.unwrap();
        assert!(
            (rise - (5.0 * 3600.0 + 47.0 * 60.0)).abs() <= 120.0,
            "{rise}"
        );
        assert_eq!(site.iso(l.ts), "2024-06-21T12:30:00+02:00");
        let later = l.advance(l.ts + 3600 + 61).unwrap();
        let full = site.local(l.ts + 3600 + 61);
        assert_eq!(
            (later.hour, later.minute, later.second_of_day),
            (full.hour, full.minute, full.second_of_day)
        );
        assert!(l.advance(l.next_day_start).is_none());
        // 2024-03-31 is 23 hours long in Paris: never advanced.
        assert!(
            site.local(1_711_843_200)
                .advance(1_711_843_200 + 3600)
                .is_none()
        );
    }
}
