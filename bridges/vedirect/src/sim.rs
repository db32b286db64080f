//! Device simulator: real VE.Direct bytes from a model of an off-grid site, driven by a
//! virtual time the caller passes in (no clock, no I/O of its own).
//!
//! One [`Site`] model gives, for every minute of the day, the PV power, the loads, the
//! battery current, state of charge and voltage. It is a pure function of the site
//! parameters, so an MPPT and a BMV simulated for the same site (in two processes, on two
//! pseudo-terminals) report the same battery: the BMV current is the MPPT's charge current
//! minus the loads. The day: night discharge, bulk in the morning, absorption, float with
//! unused PV surplus in the afternoon, evening discharge.
//!
//! Closed loop: once given switched loads ([`Simulator::set_switched_load`], e.g. a water
//! heater behind a relay), a simulator integrates the site step by step from the profile
//! ([`LiveSite`]) instead of reading it: the load comes out of the battery, a floating
//! charger raises its harvest to cover it while the sun allows and re-bulks when it
//! cannot, and the state of charge follows. Two simulators given the same loads at the
//! same virtual times still report the same battery.
//!
//! HEX requests are answered like a device would: ping, application version, product id,
//! get and set of the registers of [`crate::registers`] that the kind has, including the
//! volatile charge current limit (0x2015), which reverts to the default
//! [`VOLATILE_TIMEOUT_S`] seconds after the last set. Overrides set over HEX (load output,
//! current limit, device mode) change only that simulator's output, not the shared site.

use crate::hex::{FRAME_ERROR_CODE, Flags, Frame, RegisterFrame, Request, Response, Version};
use crate::registers::{self, LoadOutputControl, RegisterValue};
use crate::text::encode_block;
use std::fmt;
use std::str::FromStr;

/// The volatile charge current limit is forgotten this long after the last set.
pub const VOLATILE_TIMEOUT_S: f64 = 60.0;

const MINUTES_PER_DAY: usize = 1440;
const SECONDS_PER_DAY: f64 = 86_400.0;

/// Which device to simulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Mppt,
    Bmv,
    SmartShunt,
    Phoenix,
}

impl FromStr for DeviceKind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<Self, UnknownKind> {
        match s {
            "mppt" => Ok(Self::Mppt),
            "bmv" => Ok(Self::Bmv),
            "smartshunt" => Ok(Self::SmartShunt),
            "phoenix" => Ok(Self::Phoenix),
            _ => Err(UnknownKind(s.to_string())),
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Mppt => "mppt",
            Self::Bmv => "bmv",
            Self::SmartShunt => "smartshunt",
            Self::Phoenix => "phoenix",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown device kind {0:?}: expected mppt, bmv, smartshunt or phoenix")]
pub struct UnknownKind(pub String);

/// The simulated site. Two simulators with equal `Site`s describe the same battery.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    pub battery_capacity_ah: f64,
    /// Clear-sky peak of the PV array, W.
    pub pv_peak_w: f64,
    pub sunrise_hour: f64,
    pub sunset_hour: f64,
    /// Always-on consumption, W.
    pub base_load_w: f64,
    /// Extra consumption from 18:00 to 23:00, W.
    pub evening_load_w: f64,
    /// Charger output limit, A.
    pub charger_max_current_a: f64,
    /// Added to the virtual time before taking the time of day (local time), s.
    pub utc_offset_s: f64,
}

impl Default for Site {
    fn default() -> Self {
        Site {
            battery_capacity_ah: 200.0,
            pv_peak_w: 600.0,
            sunrise_hour: 7.0,
            sunset_hour: 19.0,
            base_load_w: 30.0,
            evening_load_w: 120.0,
            charger_max_current_a: 30.0,
            utc_offset_s: 0.0,
        }
    }
}

/// Options of one simulated device.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SimOptions {
    pub site: Site,
    /// Firmware version word reported by ping / app version (`0x4401` = 4.01); default
    /// per kind.
    pub firmware: Option<u16>,
    /// How long (in the simulator's virtual seconds) a volatile setting is kept after its
    /// last write; `None` is the device's [`VOLATILE_TIMEOUT_S`]. The device's timer runs
    /// in real time, so a simulator running N times faster than real time sets N x 60 s.
    pub volatile_timeout_s: Option<f64>,
}

/// Charger state in the site model (a subset of the `CS` codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteCharge {
    Off,
    Bulk,
    Absorption,
    Float,
}

impl SiteCharge {
    fn code(self) -> u8 {
        match self {
            SiteCharge::Off => 0,
            SiteCharge::Bulk => 3,
            SiteCharge::Absorption => 4,
            SiteCharge::Float => 5,
        }
    }
}

/// The site at one minute of the day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SiteState {
    /// 0..=1.
    pub soc: f64,
    pub battery_voltage: f64,
    /// Into the battery (>0 charging), A.
    pub battery_current: f64,
    /// Charger output current, A.
    pub charger_current: f64,
    /// PV power harvested, W.
    pub pv_power: f64,
    /// PV power the panels could give, W (surplus = available − harvested).
    pub pv_available: f64,
    pub load_w: f64,
    pub charge: SiteCharge,
    /// Energy harvested since midnight, kWh.
    pub yield_today_kwh: f64,
    pub max_power_today_w: f64,
}

const ABSORPTION_V: f64 = 14.4;
const FLOAT_V: f64 = 13.5;
const EFFICIENCY: f64 = 0.96;
const INTERNAL_RESISTANCE: f64 = 0.01;

fn open_circuit_voltage(soc: f64) -> f64 {
    11.9 + 1.0 * soc
}

impl Site {
    fn pv_available(&self, hour: f64) -> f64 {
        let span = self.sunset_hour - self.sunrise_hour;
        let x = (hour - self.sunrise_hour) / span;
        if (0.0..=1.0).contains(&x) {
            self.pv_peak_w * (std::f64::consts::PI * x).sin()
        } else {
            0.0
        }
    }

    fn load(&self, hour: f64) -> f64 {
        self.base_load_w
            + if (18.0..23.0).contains(&hour) {
                self.evening_load_w
            } else {
                0.0
            }
    }

    /// The site during one step, the charger being in `charge`, with `extra_load_w` of
    /// switched loads on top of the day's loads. Yield fields are left at 0 (they are
    /// integrals, kept by the caller).
    fn step_state(&self, hour: f64, soc: f64, charge: SiteCharge, extra_load_w: f64) -> SiteState {
        let pv_available = self.pv_available(hour);
        let load_w = self.load(hour) + extra_load_w;
        let ocv = open_circuit_voltage(soc);
        let load_a = load_w / ocv;
        let pv_current = pv_available * EFFICIENCY / ocv;
        let charger_current = match charge {
            SiteCharge::Off => 0.0,
            SiteCharge::Bulk => pv_current.min(self.charger_max_current_a),
            SiteCharge::Absorption => {
                // The battery accepts less and less as it fills.
                let acceptance = self.battery_capacity_ah * 0.2 * (1.0 - soc) / 0.1;
                pv_current
                    .min(acceptance + load_a)
                    .min(self.charger_max_current_a)
            }
            // Float: cover the loads and top the battery up; the rest is surplus.
            SiteCharge::Float => {
                let top_up = if soc >= 1.0 {
                    0.0
                } else {
                    self.battery_capacity_ah * 0.005
                };
                pv_current
                    .min(load_a + top_up)
                    .min(self.charger_max_current_a)
            }
        };
        let mut battery_current = charger_current - load_a;
        let mut battery_voltage = match charge {
            SiteCharge::Absorption => ABSORPTION_V,
            SiteCharge::Float if battery_current >= 0.0 => FLOAT_V,
            _ => (ocv + battery_current * INTERNAL_RESISTANCE).min(ABSORPTION_V),
        };
        // The harvest can never exceed what the panels give at this battery voltage.
        let mut charger_current = charger_current;
        if charger_current * battery_voltage / EFFICIENCY > pv_available {
            charger_current = pv_available * EFFICIENCY / battery_voltage;
            battery_current = charger_current - load_a;
            if charge != SiteCharge::Absorption {
                battery_voltage =
                    (ocv + battery_current * INTERNAL_RESISTANCE).min(battery_voltage);
            }
        }
        SiteState {
            soc,
            battery_voltage,
            battery_current,
            charger_current,
            pv_power: charger_current * battery_voltage / EFFICIENCY,
            pv_available,
            load_w,
            charge,
            yield_today_kwh: 0.0,
            max_power_today_w: 0.0,
        }
    }

    /// Simulate one day minute by minute from `soc0`, with the day's loads only.
    fn run_day(&self, soc0: f64) -> Vec<SiteState> {
        let mut out = Vec::with_capacity(MINUTES_PER_DAY);
        let mut soc = soc0;
        let mut reached_float = false;
        let (mut yield_kwh, mut max_power) = (0.0f64, 0.0f64);
        for minute in 0..MINUTES_PER_DAY {
            let hour = (minute as f64 + 0.5) / 60.0;
            let charge = if self.pv_available(hour) < 2.0 {
                reached_float = false;
                SiteCharge::Off
            } else if reached_float || soc >= 0.995 {
                reached_float = true;
                SiteCharge::Float
            } else if soc >= 0.9 {
                SiteCharge::Absorption
            } else {
                SiteCharge::Bulk
            };
            let mut state = self.step_state(hour, soc, charge, 0.0);
            yield_kwh += state.pv_power / 60_000.0;
            max_power = max_power.max(state.pv_power);
            state.yield_today_kwh = yield_kwh;
            state.max_power_today_w = max_power;
            out.push(state);
            soc = (soc + state.battery_current / 60.0 / self.battery_capacity_ah).clamp(0.0, 1.0);
        }
        out
    }

    /// The day profile, started from the state of charge the previous (identical) day ends
    /// with, so that days follow each other without a jump at midnight.
    pub fn day_profile(&self) -> Vec<SiteState> {
        let mut soc0 = 0.6;
        for _ in 0..4 {
            let day = self.run_day(soc0);
            let last = day[MINUTES_PER_DAY - 1];
            soc0 =
                (last.soc + last.battery_current / 60.0 / self.battery_capacity_ah).clamp(0.0, 1.0);
        }
        self.run_day(soc0)
    }

    /// The site at `hour` in the closed loop: like the day profile, except that the
    /// charger's state follows from what it can do. It floats once latched (see
    /// [`LiveSite`] for how it unlatches); otherwise it absorbs when the battery is nearly
    /// full and the panels can hold the absorption voltage over the loads, floats when the
    /// battery is full as well, and is in bulk (every watt the sun gives) when it cannot.
    fn live_state(&self, hour: f64, soc: f64, float_latched: bool, extra_load_w: f64) -> SiteState {
        if self.pv_available(hour) < 2.0 {
            return self.step_state(hour, soc, SiteCharge::Off, extra_load_w);
        }
        if float_latched {
            return self.step_state(hour, soc, SiteCharge::Float, extra_load_w);
        }
        if soc < 0.9 {
            return self.step_state(hour, soc, SiteCharge::Bulk, extra_load_w);
        }
        let absorption = self.step_state(hour, soc, SiteCharge::Absorption, extra_load_w);
        if absorption.battery_current < 0.0 {
            // The loads take more than the panels give: the voltage sags under the
            // absorption voltage and the charger tracks the panels' maximum power.
            self.step_state(hour, soc, SiteCharge::Bulk, extra_load_w)
        } else if soc >= 0.995 {
            self.step_state(hour, soc, SiteCharge::Float, extra_load_w)
        } else {
            absorption
        }
    }
}

/// A charger in float that cannot hold the float voltage this long (the loads take more
/// than the panels give) goes back to bulk: Victron's re-bulk, when the battery voltage
/// stays under the float voltage minus the re-bulk offset for a minute. Virtual seconds.
pub const REBULK_AFTER_S: f64 = 60.0;

/// Longest step of the closed-loop integration, virtual seconds: the day profile's step,
/// so that a fast time scale integrates as finely as the profile.
const LIVE_STEP_S: f64 = 60.0;

/// The closed-loop site: the battery integrated step by step under the switched loads
/// (relay-driven, e.g. a water heater) instead of read from the day profile. It starts
/// from the profile at the first switched-load update, so a simulator whose loads stay
/// off follows the day profile closely (the same equations, integrated on its own steps),
/// and an MPPT and a BMV fed the same loads report the same battery.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveSite {
    /// Virtual time integrated up to.
    pub t: f64,
    /// 0..=1.
    pub soc: f64,
    /// The charger reached float and stays there until it re-bulks or the sun sets.
    pub float_latched: bool,
    /// How long the charger in float has been unable to hold the float voltage, s.
    pub under_float_s: f64,
    /// Local day number of `yield_today_kwh` and `max_power_today_w`.
    pub day: i64,
    pub yield_today_kwh: f64,
    pub max_power_today_w: f64,
    /// Switched loads now on, W.
    pub switched_load_w: f64,
}

impl Site {
    /// Local day number and hour (0..24) of virtual time `t`.
    fn local_day_hour(&self, t: f64) -> (i64, f64) {
        let local = t + self.utc_offset_s;
        let day = (local / SECONDS_PER_DAY).floor();
        (day as i64, (local - day * SECONDS_PER_DAY) / 3600.0)
    }

    /// The closed-loop site at `t`, taken from `profile` (this site's day profile).
    fn live_from_profile(&self, profile: &[SiteState], t: f64) -> LiveSite {
        let (day, hour) = self.local_day_hour(t);
        let now = profile[((hour * 60.0) as usize).min(MINUTES_PER_DAY - 1)];
        LiveSite {
            t,
            soc: now.soc,
            float_latched: now.charge == SiteCharge::Float,
            under_float_s: 0.0,
            day,
            yield_today_kwh: now.yield_today_kwh,
            max_power_today_w: now.max_power_today_w,
            switched_load_w: 0.0,
        }
    }

    /// Integrates `live` up to virtual time `t` (steps of at most a minute). Time going
    /// backwards changes nothing.
    fn advance(&self, live: &mut LiveSite, t: f64) {
        while live.t < t {
            let dt = (t - live.t).min(LIVE_STEP_S);
            let (day, hour) = self.local_day_hour(live.t + dt / 2.0);
            if day != live.day {
                live.day = day;
                live.yield_today_kwh = 0.0;
                live.max_power_today_w = 0.0;
            }
            let state = self.live_state(hour, live.soc, live.float_latched, live.switched_load_w);
            match state.charge {
                SiteCharge::Off => live.float_latched = false,
                SiteCharge::Float => live.float_latched = true,
                SiteCharge::Bulk | SiteCharge::Absorption => {}
            }
            if state.charge == SiteCharge::Float && state.battery_current < 0.0 {
                live.under_float_s += dt;
                if live.under_float_s >= REBULK_AFTER_S {
                    live.float_latched = false;
                    live.under_float_s = 0.0;
                }
            } else {
                live.under_float_s = 0.0;
            }
            live.soc = (live.soc + state.battery_current * dt / 3600.0 / self.battery_capacity_ah)
                .clamp(0.0, 1.0);
            live.yield_today_kwh += state.pv_power * dt / 3_600_000.0;
            live.max_power_today_w = live.max_power_today_w.max(state.pv_power);
            live.t += dt;
        }
    }

    /// What the closed-loop site shows at `t` (integrated up to `live.t`).
    fn live_snapshot(&self, live: &LiveSite, t: f64) -> SiteState {
        let (_, hour) = self.local_day_hour(t);
        let mut state = self.live_state(hour, live.soc, live.float_latched, live.switched_load_w);
        state.yield_today_kwh = live.yield_today_kwh;
        state.max_power_today_w = live.max_power_today_w.max(state.pv_power);
        state
    }
}

/// A simulated VE.Direct device.
#[derive(Debug, Clone)]
pub struct Simulator {
    kind: DeviceKind,
    serial: String,
    site: Site,
    profile: Vec<SiteState>,
    load_output: LoadOutputControl,
    /// Raw 0.1 A value and the virtual time of the last set.
    charge_limit: Option<(u16, f64)>,
    device_on: bool,
    relay_closed: bool,
    battery_capacity_ah: u16,
    firmware: Option<u16>,
    /// Battery monitors alternate their two blocks by count, not by the parity of the
    /// virtual second: a demo running 10x faster steps time by 10 and would otherwise
    /// never send the history block.
    next_is_history: bool,
    volatile_timeout_s: f64,
    /// The closed-loop site, once switched loads have been given
    /// ([`Simulator::set_switched_load`]); the day profile until then.
    live: Option<LiveSite>,
}

/// The state a simulator reports at time `t` (after its HEX overrides).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    pub site: SiteState,
    pub charger_current: f64,
    pub pv_power: f64,
    pub charge_state: u8,
    pub load_output_on: bool,
    pub load_output_current: f64,
    pub day: i64,
    /// Minute of the (local) day, 0..1440.
    pub minute: usize,
}

const LOAD_OUTPUT_CURRENT_A: f64 = 1.5;

impl Simulator {
    pub fn new(kind: DeviceKind, serial: &str, options: SimOptions) -> Self {
        let profile = options.site.day_profile();
        Simulator {
            kind,
            serial: serial
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(32)
                .collect(),
            battery_capacity_ah: options.site.battery_capacity_ah.round() as u16,
            site: options.site,
            profile,
            load_output: LoadOutputControl::Automatic,
            charge_limit: None,
            device_on: true,
            relay_closed: false,
            firmware: options.firmware,
            next_is_history: false,
            volatile_timeout_s: options.volatile_timeout_s.unwrap_or(VOLATILE_TIMEOUT_S),
            live: None,
        }
    }

    pub fn kind(&self) -> DeviceKind {
        self.kind
    }

    pub fn product_id(&self) -> u16 {
        match self.kind {
            DeviceKind::Mppt => 0xA053,
            DeviceKind::Bmv => 0xA381,
            DeviceKind::SmartShunt => 0xA389,
            DeviceKind::Phoenix => 0xA271,
        }
    }

    fn firmware(&self) -> Version {
        if let Some(word) = self.firmware {
            return Version(word);
        }
        match self.kind {
            DeviceKind::Mppt => Version(0x4163),
            DeviceKind::Bmv | DeviceKind::SmartShunt => Version(0x4414),
            DeviceKind::Phoenix => Version(0x4124),
        }
    }

    /// The charge current limit in force at `t`, raw 0.1 A.
    fn charge_limit_raw(&self, t: f64) -> u16 {
        let default = (self.site.charger_max_current_a * 10.0).round() as u16;
        match self.charge_limit {
            Some((raw, set_at)) if t - set_at < self.volatile_timeout_s => raw,
            _ => default,
        }
    }

    /// Closes the loop: from now on the site is integrated step by step (see
    /// [`LiveSite`]) and `watts` of switched loads (relay-driven, on top of the day's
    /// loads) are drawn from virtual time `t` on. The first call starts the integration
    /// from the day profile at `t`; call it whenever the loads change (calling it with
    /// unchanged loads is harmless). Negative or non-finite watts count as 0.
    pub fn set_switched_load(&mut self, watts: f64, t: f64) {
        let watts = if watts.is_finite() {
            watts.max(0.0)
        } else {
            0.0
        };
        let live = self
            .live
            .get_or_insert_with(|| self.site.live_from_profile(&self.profile, t));
        self.site.advance(live, t);
        live.switched_load_w = watts;
    }

    /// The closed-loop site, `None` while the simulator follows the day profile.
    pub fn live_site(&self) -> Option<&LiveSite> {
        self.live.as_ref()
    }

    /// What the device reports at virtual time `t`.
    pub fn snapshot(&self, t: f64) -> Snapshot {
        let local = t + self.site.utc_offset_s;
        let day = (local / SECONDS_PER_DAY).floor() as i64;
        let minute =
            (((local - day as f64 * SECONDS_PER_DAY) / 60.0) as usize).min(MINUTES_PER_DAY - 1);
        let site = match &self.live {
            Some(live) => self.site.live_snapshot(live, t),
            None => self.profile[minute],
        };
        let limit = f64::from(self.charge_limit_raw(t)) / 10.0;
        let (charger_current, pv_power, charge_state) = if !self.device_on {
            (0.0, 0.0, 0)
        } else if site.charger_current > limit {
            (
                limit,
                site.pv_power * limit / site.charger_current,
                site.charge.code(),
            )
        } else {
            (site.charger_current, site.pv_power, site.charge.code())
        };
        let load_output_on = match self.load_output {
            LoadOutputControl::Off => false,
            LoadOutputControl::On => true,
            _ => site.soc > 0.5,
        };
        Snapshot {
            site,
            charger_current,
            pv_power,
            charge_state,
            load_output_on,
            load_output_current: if load_output_on {
                LOAD_OUTPUT_CURRENT_A
            } else {
                0.0
            },
            day,
            minute,
        }
    }

    /// One text block as the device sends it at time `t` (call once per second). Battery
    /// monitors alternate their main and history blocks, one per call.
    pub fn text_block(&mut self, t: f64) -> Vec<u8> {
        if let Some(live) = &mut self.live {
            self.site.advance(live, t);
        }
        let history = self.next_is_history;
        if matches!(self.kind, DeviceKind::Bmv | DeviceKind::SmartShunt) {
            self.next_is_history = !history;
        }
        let fields = self.block_fields(t, history);
        encode_block(&fields).expect("simulator fields respect the protocol limits")
    }

    /// The `(label, value)` pairs of the block sent at `t`; battery monitors send their
    /// history block on odd seconds.
    pub fn text_fields(&self, t: f64) -> Vec<(&'static str, String)> {
        self.block_fields(t, (t.floor() as i64).rem_euclid(2) == 1)
    }

    fn block_fields(&self, t: f64, history: bool) -> Vec<(&'static str, String)> {
        let s = self.snapshot(t);
        let site = &s.site;
        let mv = |v: f64| format!("{}", (v * 1000.0).round() as i64);
        let fw = format!("{:X}", self.firmware().0 & 0x0FFF);
        let pid = format!("0x{:04X}", self.product_id());
        match self.kind {
            DeviceKind::Mppt => {
                let daily = self.profile[MINUTES_PER_DAY - 1];
                let total =
                    1234.56 + daily.yield_today_kwh * s.day.max(0) as f64 + site.yield_today_kwh;
                let off_reason = if !self.device_on {
                    0x4
                } else if s.charge_state == 0 {
                    0x1
                } else {
                    0
                };
                let pv_voltage = if site.pv_available > 0.0 {
                    let unused = 1.0 - s.pv_power / site.pv_available.max(1.0);
                    30.0 + 8.0 * unused.clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let tracker = match s.charge_state {
                    0 => 0,
                    3 if s.charger_current < f64::from(self.charge_limit_raw(t)) / 10.0 => 2,
                    _ => 1,
                };
                vec![
                    ("PID", pid),
                    ("FW", fw),
                    ("SER#", self.serial.clone()),
                    ("V", mv(site.battery_voltage)),
                    ("I", mv(s.charger_current)),
                    ("VPV", mv(pv_voltage)),
                    ("PPV", format!("{}", s.pv_power.round() as i64)),
                    ("CS", s.charge_state.to_string()),
                    ("MPPT", tracker.to_string()),
                    ("OR", format!("0x{off_reason:08X}")),
                    ("ERR", "0".into()),
                    ("LOAD", if s.load_output_on { "ON" } else { "OFF" }.into()),
                    ("IL", mv(s.load_output_current)),
                    ("H19", format!("{}", (total * 100.0).round() as i64)),
                    (
                        "H20",
                        format!("{}", (site.yield_today_kwh * 100.0).round() as i64),
                    ),
                    ("H21", format!("{}", site.max_power_today_w.round() as i64)),
                    (
                        "H22",
                        format!("{}", (daily.yield_today_kwh * 100.0).round() as i64),
                    ),
                    ("H23", format!("{}", daily.max_power_today_w.round() as i64)),
                    ("HSDS", format!("{}", s.day.rem_euclid(365))),
                ]
            }
            DeviceKind::Bmv | DeviceKind::SmartShunt => {
                if history {
                    return self.history_fields(s);
                }
                let capacity = f64::from(self.battery_capacity_ah);
                let ttg = if site.battery_current < -0.01 {
                    ((site.soc * capacity / -site.battery_current * 60.0) as i64).min(14_400)
                } else {
                    -1
                };
                let mut fields = vec![
                    ("PID", pid),
                    ("V", mv(site.battery_voltage)),
                    ("VS", mv(12.71)),
                    ("I", mv(site.battery_current)),
                    (
                        "P",
                        format!(
                            "{}",
                            (site.battery_current * site.battery_voltage).round() as i64
                        ),
                    ),
                    ("CE", mv(-(1.0 - site.soc) * capacity)),
                    ("SOC", format!("{}", (site.soc * 1000.0).round() as i64)),
                    ("TTG", ttg.to_string()),
                    ("Alarm", if site.soc < 0.2 { "ON" } else { "OFF" }.into()),
                ];
                if self.kind == DeviceKind::Bmv {
                    fields.push(("Relay", if self.relay_closed { "ON" } else { "OFF" }.into()));
                }
                fields.push(("AR", if site.soc < 0.2 { "4" } else { "0" }.into()));
                fields.push((
                    "BMV",
                    match self.kind {
                        DeviceKind::Bmv => "712 Smart".into(),
                        _ => "SmartShunt 500A/50mV".into(),
                    },
                ));
                fields.push(("FW", format!("0{fw}")));
                if self.kind == DeviceKind::SmartShunt {
                    fields.push(("MON", "0".into()));
                }
                fields
            }
            DeviceKind::Phoenix => {
                let va = site.load_w * 0.9;
                vec![
                    ("PID", pid),
                    ("FW", format!("0{fw}")),
                    ("SER#", self.serial.clone()),
                    ("MODE", if self.device_on { "2" } else { "4" }.into()),
                    ("CS", if self.device_on { "9" } else { "0" }.into()),
                    (
                        "AC_OUT_V",
                        if self.device_on { "23000" } else { "0" }.into(),
                    ),
                    (
                        "AC_OUT_I",
                        format!(
                            "{}",
                            if self.device_on {
                                (va / 230.0 * 10.0).round() as i64
                            } else {
                                0
                            }
                        ),
                    ),
                    (
                        "AC_OUT_S",
                        format!("{}", if self.device_on { va.round() as i64 } else { 0 }),
                    ),
                    ("V", mv(site.battery_voltage)),
                    ("AR", "0".into()),
                    ("WARN", "0".into()),
                    (
                        "OR",
                        if self.device_on {
                            "0x00000000"
                        } else {
                            "0x00000004"
                        }
                        .into(),
                    ),
                ]
            }
        }
    }

    fn history_fields(&self, s: Snapshot) -> Vec<(&'static str, String)> {
        let capacity = f64::from(self.battery_capacity_ah);
        let min_soc = self.profile.iter().map(|m| m.soc).fold(1.0, f64::min);
        let min_v = self
            .profile
            .iter()
            .map(|m| m.battery_voltage)
            .fold(99.0, f64::min);
        let max_v = self
            .profile
            .iter()
            .map(|m| m.battery_voltage)
            .fold(0.0, f64::max);
        let discharged: f64 = self
            .profile
            .iter()
            .map(|m| (-m.battery_current).max(0.0) * m.battery_voltage / 60_000.0)
            .sum();
        let charged: f64 = self
            .profile
            .iter()
            .map(|m| m.battery_current.max(0.0) * m.battery_voltage / 60_000.0)
            .sum();
        let days = s.day.max(0) as f64 + 100.0;
        let mah = |ah: f64| format!("{}", (ah * 1000.0).round() as i64);
        let full_minute = self
            .profile
            .iter()
            .position(|m| m.charge == SiteCharge::Float);
        let minute_now = s.minute;
        let since_full = match full_minute {
            Some(f) if f <= minute_now => (minute_now - f) * 60,
            Some(f) => (MINUTES_PER_DAY - f + minute_now) * 60,
            None => 0,
        };
        vec![
            ("H1", mah(-(1.0 - min_soc) * capacity * 1.3)),
            ("H2", mah(-(1.0 - min_soc) * capacity)),
            ("H3", mah(-(1.0 - min_soc) * capacity * 0.9)),
            ("H4", format!("{}", days as i64)),
            ("H5", "0".into()),
            ("H6", mah(-(1.0 - min_soc) * capacity * days)),
            ("H7", format!("{}", (min_v * 1000.0).round() as i64)),
            ("H8", format!("{}", (max_v * 1000.0).round() as i64)),
            ("H9", since_full.to_string()),
            ("H10", format!("{}", days as i64)),
            ("H11", "0".into()),
            ("H12", "0".into()),
            ("H15", "12100".into()),
            ("H16", "12900".into()),
            (
                "H17",
                format!("{}", (discharged * days * 100.0).round() as i64),
            ),
            (
                "H18",
                format!("{}", (charged * days * 100.0).round() as i64),
            ),
        ]
    }

    /// Answer the HEX request(s) in `request` (one or more `:...\n` frames) at time `t`.
    /// Returns the device's reply bytes (empty for restart, async, or no frame).
    pub fn handle_hex(&mut self, request: &[u8], t: f64) -> Vec<u8> {
        let mut out = Vec::new();
        for line in request.split(|&b| b == b'\n') {
            let Some(start) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let response = match Frame::parse(&line[start..]) {
                Err(_) => Some(Response::Error {
                    code: FRAME_ERROR_CODE,
                }),
                Ok(frame) => match Request::from_frame(&frame) {
                    Err(_) => Some(Response::Error {
                        code: FRAME_ERROR_CODE,
                    }),
                    Ok(request) => self.answer(request, t),
                },
            };
            if let Some(r) = response {
                out.extend(r.encode());
            }
        }
        out
    }

    fn answer(&mut self, request: Request, t: f64) -> Option<Response> {
        Some(match request {
            Request::Ping => Response::Ping {
                version: self.firmware(),
            },
            Request::AppVersion => Response::Done {
                word: self.firmware().0,
            },
            Request::ProductId => Response::Done {
                word: self.product_id(),
            },
            Request::Restart => return None,
            Request::Get { register } => Response::Get(match self.read(register, t) {
                Some(value) => RegisterFrame {
                    register,
                    flags: Flags::OK,
                    value,
                },
                None => RegisterFrame {
                    register,
                    flags: Flags::UNKNOWN_ID,
                    value: vec![],
                },
            }),
            Request::Set { register, value } => Response::Set(self.write(register, &value, t)),
            Request::Other { command: 0xA } => return None,
            Request::Other { command } => Response::Unknown {
                command: u16::from(command),
            },
        })
    }

    fn has_register(&self, id: u16) -> bool {
        use registers::*;
        let common = [PRODUCT_ID, SERIAL_NUMBER, MODEL_NAME];
        let kind_specific: &[u16] = match self.kind {
            DeviceKind::Mppt => &[
                DEVICE_MODE,
                DEVICE_STATE,
                OFF_REASON,
                CHARGER_VOLTAGE,
                CHARGER_CURRENT,
                PANEL_POWER,
                PANEL_VOLTAGE,
                TRACKER_MODE,
                YIELD_TODAY,
                MAX_POWER_TODAY,
                CHARGER_ERROR,
                CHARGER_MAX_CURRENT,
                BATTERY_TEMPERATURE,
                LOAD_OUTPUT_CONTROL,
                LOAD_OUTPUT_STATE,
                LOAD_CURRENT,
                CHARGE_CURRENT_LIMIT,
            ],
            DeviceKind::Bmv | DeviceKind::SmartShunt => &[
                MAIN_VOLTAGE,
                AUX_VOLTAGE,
                CURRENT,
                CURRENT_HIGH_RES,
                POWER,
                CONSUMED_AH,
                STATE_OF_CHARGE,
                TIME_TO_GO,
                BATTERY_CAPACITY,
                RELAY_CONTROL,
                DC_MONITOR_MODE,
                BATTERY_TEMPERATURE,
            ],
            DeviceKind::Phoenix => &[
                DEVICE_MODE,
                DEVICE_STATE,
                OFF_REASON,
                0x2200,
                0x2201,
                0x2205,
            ],
        };
        common.contains(&id) || kind_specific.contains(&id)
    }

    /// Current value bytes of a register, `None` when this kind has no such register.
    fn read(&self, id: u16, t: f64) -> Option<Vec<u8>> {
        use registers::*;
        if !self.has_register(id) {
            return None;
        }
        let s = self.snapshot(t);
        let site = &s.site;
        let enc = |si: f64| lookup(id).map(|r| r.encode(si)).unwrap_or_default();
        Some(match id {
            PRODUCT_ID => {
                let [lo, hi] = self.product_id().to_le_bytes();
                vec![0x00, lo, hi, 0xFF]
            }
            SERIAL_NUMBER => self.serial.as_bytes().to_vec(),
            MODEL_NAME => match self.kind {
                DeviceKind::Mppt => b"SmartSolar Charger MPPT 75/15".to_vec(),
                DeviceKind::Bmv => b"BMV-712 Smart".to_vec(),
                DeviceKind::SmartShunt => b"SmartShunt 500A/50mV".to_vec(),
                DeviceKind::Phoenix => b"Phoenix Inverter 12V 1200VA 230V".to_vec(),
            },
            DEVICE_MODE => vec![match (self.kind, self.device_on) {
                (_, false) => 4,
                (DeviceKind::Phoenix, true) => 2,
                (_, true) => 1,
            }],
            DEVICE_STATE => vec![match self.kind {
                DeviceKind::Phoenix if self.device_on => 9,
                _ => s.charge_state,
            }],
            OFF_REASON => {
                let or: u32 = if !self.device_on {
                    4
                } else if s.charge_state == 0 && self.kind == DeviceKind::Mppt {
                    1
                } else {
                    0
                };
                or.to_le_bytes().to_vec()
            }
            CHARGER_VOLTAGE | MAIN_VOLTAGE => enc(site.battery_voltage),
            CHARGER_CURRENT => enc(s.charger_current),
            PANEL_POWER => enc(s.pv_power),
            PANEL_VOLTAGE => enc(if site.pv_available > 0.0 { 33.0 } else { 0.0 }),
            TRACKER_MODE => vec![if s.charge_state == 0 { 0 } else { 2 }],
            YIELD_TODAY => enc(site.yield_today_kwh),
            MAX_POWER_TODAY => enc(site.max_power_today_w),
            CHARGER_ERROR => vec![0],
            CHARGER_MAX_CURRENT => enc(self.site.charger_max_current_a),
            BATTERY_TEMPERATURE => vec![0xFF, 0xFF],
            LOAD_OUTPUT_CONTROL => vec![self.load_output.raw()],
            LOAD_OUTPUT_STATE => vec![u8::from(s.load_output_on)],
            LOAD_CURRENT => enc(s.load_output_current),
            CHARGE_CURRENT_LIMIT => self.charge_limit_raw(t).to_le_bytes().to_vec(),
            AUX_VOLTAGE => enc(12.71),
            CURRENT => enc(site.battery_current),
            CURRENT_HIGH_RES => enc(site.battery_current),
            POWER => enc(site.battery_current * site.battery_voltage),
            CONSUMED_AH => enc(-(1.0 - site.soc) * f64::from(self.battery_capacity_ah)),
            STATE_OF_CHARGE => enc(site.soc * 100.0),
            TIME_TO_GO => {
                if site.battery_current < -0.01 {
                    let minutes = site.soc * f64::from(self.battery_capacity_ah)
                        / -site.battery_current
                        * 60.0;
                    enc(minutes.min(14_400.0) * 60.0)
                } else {
                    vec![0xFF, 0xFF]
                }
            }
            BATTERY_CAPACITY => self.battery_capacity_ah.to_le_bytes().to_vec(),
            RELAY_CONTROL => vec![u8::from(self.relay_closed)],
            DC_MONITOR_MODE => 0i16.to_le_bytes().to_vec(),
            0x2200 => enc(if self.device_on { 230.0 } else { 0.0 }),
            0x2201 => enc(if self.device_on {
                site.load_w * 0.9 / 230.0
            } else {
                0.0
            }),
            0x2205 => enc(if self.device_on {
                site.load_w * 0.9
            } else {
                0.0
            }),
            _ => return None,
        })
    }

    /// Apply a Set; the reply carries the value actually stored and the flags.
    fn write(&mut self, id: u16, value: &[u8], t: f64) -> RegisterFrame {
        use registers::*;
        let reply = |flags: Flags, value: Vec<u8>| RegisterFrame {
            register: id,
            flags,
            value,
        };
        let Some(current) = self.read(id, t) else {
            return reply(Flags::UNKNOWN_ID, vec![]);
        };
        let writable = lookup(id).is_some_and(|r| r.writable)
            && !(id == RELAY_CONTROL && self.kind == DeviceKind::SmartShunt);
        if !writable {
            return reply(Flags::NOT_SUPPORTED, current);
        }
        if value.len() != current.len() {
            return reply(Flags::PARAMETER_ERROR, current);
        }
        let raw = value
            .iter()
            .rev()
            .fold(0u32, |acc, &b| acc << 8 | u32::from(b));
        match id {
            LOAD_OUTPUT_CONTROL => match LoadOutputControl::from_raw(raw as u8) {
                LoadOutputControl::Other(_) => return reply(Flags::PARAMETER_ERROR, current),
                control => self.load_output = control,
            },
            CHARGE_CURRENT_LIMIT => {
                let max = (self.site.charger_max_current_a * 10.0).round() as u16;
                let raw = raw as u16;
                if raw > max {
                    // Like the devices: nothing stored, the reply names the nearest value.
                    return reply(Flags::PARAMETER_ERROR, max.to_le_bytes().to_vec());
                }
                self.charge_limit = Some((raw, t));
            }
            DEVICE_MODE => match (self.kind, raw) {
                (_, 4) => self.device_on = false,
                (DeviceKind::Mppt, 1) | (DeviceKind::Phoenix, 2 | 3) => self.device_on = true,
                _ => return reply(Flags::PARAMETER_ERROR, current),
            },
            BATTERY_CAPACITY => {
                if raw == 0 {
                    return reply(Flags::PARAMETER_ERROR, 1u16.to_le_bytes().to_vec());
                }
                self.battery_capacity_ah = raw as u16;
            }
            RELAY_CONTROL => match raw {
                0 | 1 => self.relay_closed = raw == 1,
                _ => return reply(Flags::PARAMETER_ERROR, current),
            },
            _ => return reply(Flags::NOT_SUPPORTED, current),
        }
        reply(Flags::OK, self.read(id, t).unwrap_or_default())
    }

    /// Read a register through the table, decoded to SI (for tests and demos).
    pub fn register_value(&self, id: u16, t: f64) -> Option<RegisterValue> {
        let bytes = self.read(id, t)?;
        registers::lookup(id)?.decode(&bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Midnight (UTC, the default site's local time) of some day.
    const DAY0: f64 = 20_000.0 * SECONDS_PER_DAY;

    fn at(hour: f64) -> f64 {
        DAY0 + hour * 3600.0
    }

    fn sim(kind: DeviceKind) -> Simulator {
        Simulator::new(kind, "HQ0000TEST", SimOptions::default())
    }

    /// Sends a block every `step` virtual seconds from `from` to `to`, as the process does.
    fn run(sim: &mut Simulator, from: f64, to: f64, step: f64) {
        let mut t = from;
        while t < to {
            sim.text_block(t);
            t += step;
        }
    }

    fn battery_power(s: &Snapshot) -> f64 {
        s.site.battery_current * s.site.battery_voltage
    }

    #[test]
    fn without_switched_loads_the_closed_loop_follows_the_day_profile() {
        let mut live = sim(DeviceKind::Bmv);
        let open = sim(DeviceKind::Bmv);
        // Off the profile's minute grid, so that the steps do not sample its very instants.
        let start = at(0.0) + 17.0;
        live.set_switched_load(0.0, start);
        let mut t = start;
        let mut worst_soc = 0.0f64;
        let mut same_state = 0;
        while t < start + SECONDS_PER_DAY {
            live.text_block(t);
            let (l, o) = (live.snapshot(t), open.snapshot(t));
            worst_soc = worst_soc.max((l.site.soc - o.site.soc).abs());
            same_state += usize::from(l.charge_state == o.charge_state);
            t += 60.0;
        }
        assert!(worst_soc < 0.01, "state of charge apart by {worst_soc}");
        // Only dusk differs: the closed loop re-bulks when the panels stop covering the
        // loads, the profile stays in float until dark.
        assert!(same_state >= 1440 - 70, "{same_state} minutes alike");
    }

    #[test]
    fn at_night_a_switched_load_comes_out_of_the_battery() {
        let mut bmv = sim(DeviceKind::Bmv);
        let t = at(2.0);
        bmv.set_switched_load(0.0, t);
        let before = bmv.snapshot(t);
        bmv.set_switched_load(1000.0, t);
        let after = bmv.snapshot(t);
        let drop = battery_power(&before) - battery_power(&after);
        // All of it, less what the battery's internal resistance sags the voltage by
        // (80 A through 10 mΩ: 0.8 V of 12.6 V).
        assert!((900.0..=1000.0).contains(&drop), "drop {drop} W");
        let current_drop = before.site.battery_current - after.site.battery_current;
        let ocv = open_circuit_voltage(before.site.soc);
        assert!(
            (current_drop - 1000.0 / ocv).abs() < 0.01,
            "{current_drop} A"
        );
        assert_eq!(after.charge_state, SiteCharge::Off.code());

        // An hour of it empties the battery by ~80 Ah more than the day's loads alone.
        let mut without = sim(DeviceKind::Bmv);
        without.set_switched_load(0.0, t);
        run(&mut bmv, t, t + 3600.0, 10.0);
        run(&mut without, t, t + 3600.0, 10.0);
        let deficit_ah =
            (without.snapshot(t + 3600.0).site.soc - bmv.snapshot(t + 3600.0).site.soc) * 200.0;
        assert!(
            (deficit_ah - 1000.0 / ocv).abs() < 1000.0 / ocv * 0.05,
            "{deficit_ah} Ah"
        );
    }

    #[test]
    fn in_float_the_charger_takes_a_load_the_sun_can_carry() {
        let mut mppt = sim(DeviceKind::Mppt);
        let t = at(13.0);
        mppt.set_switched_load(0.0, t);
        let before = mppt.snapshot(t);
        assert_eq!(before.charge_state, SiteCharge::Float.code());
        mppt.set_switched_load(300.0, t);
        run(&mut mppt, t, t + 600.0, 60.0);
        let after = mppt.snapshot(t + 600.0);
        assert_eq!(after.charge_state, SiteCharge::Float.code(), "still float");
        // The harvest rises by the load (plus the converter's losses), the battery keeps
        // its float voltage and gives nothing.
        let rise = after.pv_power - before.pv_power;
        assert!((300.0..=340.0).contains(&rise), "PV rose by {rise} W");
        assert!(after.site.battery_current >= 0.0);
        assert_eq!(after.site.battery_voltage, FLOAT_V);
        assert!(after.pv_power <= after.site.pv_available);
    }

    #[test]
    fn a_load_beyond_the_sun_rebulks_and_discharges_and_float_comes_back_after() {
        let (mut mppt, mut bmv) = (sim(DeviceKind::Mppt), sim(DeviceKind::Bmv));
        let t = at(13.0);
        for s in [&mut mppt, &mut bmv] {
            s.set_switched_load(2000.0, t);
        }
        let first = bmv.snapshot(t);
        assert_eq!(first.charge_state, SiteCharge::Float.code());
        assert!(battery_power(&first) < -1000.0, "{}", battery_power(&first));

        // A minute under the float voltage: back to bulk, every watt the charger can take.
        let later = t + REBULK_AFTER_S + 60.0;
        run(&mut mppt, t, later, 10.0);
        run(&mut bmv, t, later, 10.0);
        let (m, b) = (mppt.snapshot(later), bmv.snapshot(later));
        assert_eq!(m.charge_state, SiteCharge::Bulk.code());
        assert!(
            (m.charger_current - 30.0).abs() < 1e-9,
            "at its {} A limit",
            m.charger_current
        );
        assert!(b.site.battery_current < -100.0);
        // One battery: the BMV sees the charger's current minus every load.
        assert_eq!(m.site.battery_voltage, b.site.battery_voltage);
        let loads_a = m.charger_current - b.site.battery_current;
        let ocv = open_circuit_voltage(b.site.soc);
        assert!((loads_a - 2030.0 / ocv).abs() < 0.5, "{loads_a} A of loads");
        let soc_on = b.site.soc;

        // Off again: the sun refills the battery and the charger floats again.
        for s in [&mut mppt, &mut bmv] {
            s.set_switched_load(0.0, later);
        }
        assert!(bmv.snapshot(later).site.battery_current > 0.0);
        run(&mut mppt, later, at(16.0), 60.0);
        let m = mppt.snapshot(at(16.0));
        assert_eq!(m.charge_state, SiteCharge::Float.code());
        assert!(mppt.live_site().unwrap().soc > soc_on);
    }

    #[test]
    fn yield_today_integrates_the_harvest_and_restarts_at_midnight() {
        let mut mppt = sim(DeviceKind::Mppt);
        mppt.set_switched_load(300.0, at(12.0));
        let y0 = mppt.snapshot(at(12.0)).site.yield_today_kwh;
        let mut expected = 0.0;
        let mut t = at(12.0);
        while t < at(13.0) {
            mppt.text_block(t);
            expected += mppt.snapshot(t).pv_power * 60.0 / 3_600_000.0;
            t += 60.0;
        }
        let y = mppt.snapshot(at(13.0)).site.yield_today_kwh - y0;
        assert!((y - expected).abs() < 0.01, "{y} vs {expected} kWh");
        run(&mut mppt, at(13.0), at(24.5), 60.0);
        assert!(mppt.snapshot(at(24.5)).site.yield_today_kwh < 1e-9);
    }

    #[test]
    fn bad_switched_load_values_count_as_nothing() {
        let mut bmv = sim(DeviceKind::Bmv);
        for w in [f64::NAN, -500.0, f64::INFINITY] {
            bmv.set_switched_load(w, at(2.0));
            assert_eq!(bmv.live_site().unwrap().switched_load_w, 0.0);
        }
    }
}
