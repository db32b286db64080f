//! Sunrise, sunset and the sun's elevation, computed offline (NOAA's solar equations, as in
//! its "solar calculator" spreadsheet: about a minute of error away from the poles).

use std::f64::consts::PI;

fn rad(d: f64) -> f64 {
    d * PI / 180.0
}

fn deg(r: f64) -> f64 {
    r * 180.0 / PI
}

/// Declination (radians) and equation of time (minutes) at a Julian day.
fn declination_and_eot(jd: f64) -> (f64, f64) {
    let t = (jd - 2_451_545.0) / 36_525.0;
    let l0 = (280.46646 + t * (36000.76983 + t * 0.0003032)).rem_euclid(360.0);
    let m = 357.52911 + t * (35999.05029 - 0.0001537 * t);
    let e = 0.016_708_634 - t * (0.000_042_037 + 0.000_000_126_7 * t);
    let c = rad(m).sin() * (1.914_602 - t * (0.004_817 + 0.000_014 * t))
        + rad(2.0 * m).sin() * (0.019_993 - 0.000_101 * t)
        + rad(3.0 * m).sin() * 0.000_289;
    let omega = 125.04 - 1934.136 * t;
    let lambda = l0 + c - 0.005_69 - 0.004_78 * rad(omega).sin();
    let eps0 =
        23.0 + (26.0 + (21.448 - t * (46.815 + t * (0.000_59 - t * 0.001_813))) / 60.0) / 60.0;
    let eps = eps0 + 0.002_56 * rad(omega).cos();
    let decl = (rad(eps).sin() * rad(lambda).sin()).asin();
    let y = (rad(eps) / 2.0).tan().powi(2);
    let (l0r, mr) = (rad(l0), rad(m));
    let eot = 4.0
        * deg(y * (2.0 * l0r).sin() - 2.0 * e * mr.sin()
            + 4.0 * e * y * mr.sin() * (2.0 * l0r).cos()
            - 0.5 * y * y * (4.0 * l0r).sin()
            - 1.25 * e * e * (2.0 * mr).sin());
    (decl, eot)
}

/// Sunrise and sunset (unix seconds) of the UTC calendar day that starts at
/// `utc_midnight`, for a place; `None` during polar day or night.
pub fn sunrise_sunset(utc_midnight: i64, latitude: f64, longitude: f64) -> Option<(i64, i64)> {
    let jd_midnight = utc_midnight as f64 / 86400.0 + 2_440_587.5;
    // Evaluate the sun's position near the local solar noon of that day.
    let (decl, eot) = declination_and_eot(jd_midnight + 0.5 - longitude / 360.0);
    let lat = rad(latitude);
    let cos_ha = rad(90.833).cos() / (lat.cos() * decl.cos()) - lat.tan() * decl.tan();
    if !(-1.0..=1.0).contains(&cos_ha) {
        return None;
    }
    let ha = deg(cos_ha.acos());
    let noon_min = 720.0 - 4.0 * longitude - eot;
    let rise = utc_midnight + ((noon_min - 4.0 * ha) * 60.0).round() as i64;
    let set = utc_midnight + ((noon_min + 4.0 * ha) * 60.0).round() as i64;
    Some((rise, set))
}

/// The sun's elevation above the horizon in degrees at a moment (negative at night).
pub fn elevation(ts: i64, latitude: f64, longitude: f64) -> f64 {
    let jd = ts as f64 / 86400.0 + 2_440_587.5;
    let (decl, eot) = declination_and_eot(jd);
    let utc_min = (ts.rem_euclid(86400)) as f64 / 60.0;
    let solar_min = (utc_min + eot + 4.0 * longitude).rem_euclid(1440.0);
    let ha = rad(solar_min / 4.0 - 180.0);
    let lat = rad(latitude);
    let cos_zenith = lat.sin() * decl.sin() + lat.cos() * decl.cos() * ha.cos();
    90.0 - deg(cos_zenith.clamp(-1.0, 1.0).acos())
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2024-06-21 and 2024-12-21 at 00:00 UTC.
    const JUNE_21: i64 = 1_718_928_000;
    const DEC_21: i64 = 1_734_739_200;

    fn hm_utc(ts: i64, midnight: i64) -> i64 {
        (ts - midnight) / 60
    }

    #[test]
    fn paris_matches_published_times() {
        // Published (timeanddate.com): 2024-06-21 sunrise 05:47, sunset 21:58 CEST (UTC+2);
        // 2024-12-21 sunrise 08:42, sunset 16:56 CET (UTC+1).
        let (rise, set) = sunrise_sunset(JUNE_21, 48.8566, 2.3522).unwrap();
        assert!(
            (hm_utc(rise, JUNE_21) - (3 * 60 + 47)).abs() <= 2,
            "{}",
            hm_utc(rise, JUNE_21)
        );
        assert!(
            (hm_utc(set, JUNE_21) - (19 * 60 + 58)).abs() <= 2,
            "{}",
            hm_utc(set, JUNE_21)
        );
        let (rise, set) = sunrise_sunset(DEC_21, 48.8566, 2.3522).unwrap();
        assert!(
            (hm_utc(rise, DEC_21) - (7 * 60 + 42)).abs() <= 2,
            "{}",
            hm_utc(rise, DEC_21)
        );
        assert!(
            (hm_utc(set, DEC_21) - (15 * 60 + 56)).abs() <= 2,
            "{}",
            hm_utc(set, DEC_21)
        );
    }

    #[test]
    fn polar_night_has_no_sunrise_and_noon_is_highest() {
        assert!(sunrise_sunset(DEC_21, 78.22, 15.65).is_none()); // Longyearbyen
        // Paris, June: about 64.6° at solar noon (~11:51 UTC), below 0 at midnight.
        let noon = elevation(JUNE_21 + 11 * 3600 + 51 * 60, 48.8566, 2.3522);
        assert!((noon - 64.6).abs() < 0.5, "{noon}");
        assert!(elevation(JUNE_21, 48.8566, 2.3522) < 0.0);
    }
}
