//! Writes over HEX: the settings that MQTT commands may change, and the per-port request
//! queue (one request in flight, replies matched by command and register, timeout and
//! retries), which is pure state driven by the bridge loop.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use vedirect::hex::{RegisterFrame, Request, Response};
use vedirect::registers::{
    self, CHARGE_CURRENT_LIMIT, LOAD_OUTPUT_CONTROL, LoadOutputControl, Register, RegisterValue,
};

/// A setting that can be changed with `<base>/vedirect/<device>/<setting>/set`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// MPPT load output (0xEDAB): `on`, `off`, `auto`. Stored by the device (NV): written
    /// only when commanded, never in a loop.
    LoadOutput,
    /// Charge current limit in A (0x2015), or `none`. Volatile: the device forgets it
    /// about a minute after the last write, so the bridge rewrites it while it is set.
    ChargeCurrentLimit,
}

/// A parsed command value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    Load(LoadOutputControl),
    Limit(f64),
    /// Stop imposing a charge current limit.
    NoLimit,
}

/// Why a command payload was refused (before anything was sent).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    #[error("unknown setting {0:?}: expected load_output or charge_current_limit")]
    UnknownSetting(String),
    #[error("load_output: expected on, off or auto, got {0:?}")]
    BadLoad(String),
    #[error("charge_current_limit: expected amperes from 0 to 1000 (e.g. 12.5) or none, got {0:?}")]
    BadLimit(String),
}

impl Setting {
    pub const ALL: [Setting; 2] = [Setting::LoadOutput, Setting::ChargeCurrentLimit];

    pub fn name(self) -> &'static str {
        match self {
            Setting::LoadOutput => "load_output",
            Setting::ChargeCurrentLimit => "charge_current_limit",
        }
    }

    pub fn from_name(name: &str) -> Result<Setting, CommandError> {
        Setting::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| CommandError::UnknownSetting(name.to_string()))
    }

    pub fn register(self) -> &'static Register {
        let id = match self {
            Setting::LoadOutput => LOAD_OUTPUT_CONTROL,
            Setting::ChargeCurrentLimit => CHARGE_CURRENT_LIMIT,
        };
        registers::lookup(id).expect("the register table holds every setting")
    }

    pub fn parse(self, payload: &str) -> Result<Target, CommandError> {
        let p = payload.trim();
        match self {
            Setting::LoadOutput => match p.to_ascii_lowercase().as_str() {
                "on" | "1" | "true" => Ok(Target::Load(LoadOutputControl::On)),
                "off" | "0" | "false" => Ok(Target::Load(LoadOutputControl::Off)),
                "auto" | "automatic" => Ok(Target::Load(LoadOutputControl::Automatic)),
                _ => Err(CommandError::BadLoad(p.to_string())),
            },
            Setting::ChargeCurrentLimit => {
                if p.eq_ignore_ascii_case("none") || p.eq_ignore_ascii_case("off") {
                    return Ok(Target::NoLimit);
                }
                match p.parse::<f64>() {
                    Ok(a) if a.is_finite() && (0.0..=1000.0).contains(&a) => Ok(Target::Limit(a)),
                    _ => Err(CommandError::BadLimit(p.to_string())),
                }
            }
        }
    }
}

impl Target {
    /// The Set request that applies this target, if it needs one.
    pub fn request(self, setting: Setting) -> Option<Request> {
        let register = setting.register();
        let value = match self {
            Target::Load(l) => vec![l.raw()],
            Target::Limit(a) => register.encode(a),
            Target::NoLimit => return None,
        };
        Some(Request::Set {
            register: register.id,
            value,
        })
    }
}

/// The value of a setting as published on its retained topic.
pub fn describe(setting: Setting, value: &[u8]) -> String {
    match setting {
        Setting::LoadOutput => match value.first().copied().map(LoadOutputControl::from_raw) {
            Some(LoadOutputControl::On) => "on".into(),
            Some(LoadOutputControl::Off) => "off".into(),
            Some(LoadOutputControl::Automatic) => "auto".into(),
            Some(LoadOutputControl::Other(v)) => format!("algorithm_{v}"),
            None => "unknown".into(),
        },
        Setting::ChargeCurrentLimit => match setting.register().decode(value) {
            Ok(RegisterValue::Number(a)) => format!("{}", (a * 10.0).round() / 10.0),
            _ => "none".into(),
        },
    }
}

/// Why a request was sent, so that its outcome reaches the right place.
#[derive(Debug, Clone, PartialEq)]
pub enum Purpose {
    /// An MQTT command: answered on the setting's topic or the error topic.
    Command {
        topic: String,
        device: String,
        setting: Setting,
    },
    /// The periodic rewrite of a volatile setting.
    Refresh { topic: String, device: String },
    /// Asking a device whose text blocks carry no `SER#` (battery monitors) for its
    /// serial number.
    Identify,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub request: Request,
    pub purpose: Purpose,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The device accepted it; `reply` holds the value it stored.
    Done {
        job: Job,
        reply: RegisterFrame,
    },
    Failed {
        job: Job,
        error: String,
    },
}

struct InFlight {
    job: Job,
    sent: u32,
    deadline: Instant,
}

/// The HEX request queue of one port.
pub struct HexQueue {
    queue: VecDeque<Job>,
    in_flight: Option<InFlight>,
    timeout: Duration,
    attempts: u32,
}

/// A bound on queued requests: commands beyond it are refused rather than piling up
/// behind a device that does not answer.
pub const MAX_QUEUED: usize = 16;

impl HexQueue {
    pub fn new(timeout: Duration, attempts: u32) -> HexQueue {
        HexQueue {
            queue: VecDeque::new(),
            in_flight: None,
            timeout,
            attempts: attempts.max(1),
        }
    }

    /// Queues a job; gives it back when the queue is full.
    pub fn push(&mut self, job: Job) -> Result<(), Job> {
        if self.queue.len() >= MAX_QUEUED {
            return Err(job);
        }
        self.queue.push_back(job);
        Ok(())
    }

    pub fn is_idle(&self) -> bool {
        self.in_flight.is_none() && self.queue.is_empty()
    }

    /// When the request in flight times out.
    pub fn deadline(&self) -> Option<Instant> {
        self.in_flight.as_ref().map(|f| f.deadline)
    }

    /// The frame to write now, if no request is in flight and one is waiting.
    pub fn next_to_send(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.in_flight.is_some() {
            return None;
        }
        let job = self.queue.pop_front()?;
        let bytes = job.request.encode();
        self.in_flight = Some(InFlight {
            job,
            sent: 1,
            deadline: now + self.timeout,
        });
        Some(bytes)
    }

    /// A frame from the device. Returns the outcome when it answers the request in flight.
    /// Replies can come after async frames and text blocks, so anything else is ignored.
    pub fn on_response(
        &mut self,
        response: &Response,
        now: Instant,
    ) -> Option<Result<Outcome, Vec<u8>>> {
        let flight = self.in_flight.as_ref()?;
        let (want_cmd, register) = match &flight.job.request {
            Request::Get { register } => (0x7, Some(*register)),
            Request::Set { register, .. } => (0x8, Some(*register)),
            other => (other.to_frame().command, None),
        };
        match response {
            Response::Get(r) | Response::Set(r)
                if response.command() == want_cmd && Some(r.register) == register =>
            {
                let flight = self.in_flight.take()?;
                let outcome = match r.flags.status() {
                    Ok(()) => Outcome::Done {
                        job: flight.job,
                        reply: r.clone(),
                    },
                    Err(e) => {
                        let reg = registers::lookup(r.register);
                        let nearest = match (reg, e) {
                            (Some(reg), vedirect::hex::RegisterError::ParameterError) => {
                                match reg.decode(&r.value) {
                                    Ok(RegisterValue::Number(v)) => {
                                        format!(" (nearest valid value {v}{})", reg.unit)
                                    }
                                    _ => String::new(),
                                }
                            }
                            _ => String::new(),
                        };
                        Outcome::Failed {
                            job: flight.job,
                            error: format!(
                                "the device refused register 0x{:04X}: {e}{nearest}",
                                r.register
                            ),
                        }
                    }
                };
                Some(Ok(outcome))
            }
            Response::Unknown { command } if u8::try_from(*command).ok() == Some(want_cmd) => {
                let flight = self.in_flight.take()?;
                Some(Ok(Outcome::Failed {
                    job: flight.job,
                    error: format!("the device does not understand HEX command 0x{want_cmd:X}"),
                }))
            }
            // The device saw a damaged frame: send it again at once if attempts remain.
            Response::Error { .. } if response.is_frame_error() => Some(self.retry(now)),
            _ => None,
        }
    }

    /// Called at [`HexQueue::deadline`]: resend, or give up.
    pub fn on_timeout(&mut self, now: Instant) -> Option<Result<Outcome, Vec<u8>>> {
        match &self.in_flight {
            Some(f) if f.deadline <= now => Some(self.retry(now)),
            _ => None,
        }
    }

    fn retry(&mut self, now: Instant) -> Result<Outcome, Vec<u8>> {
        let flight = self
            .in_flight
            .as_mut()
            .expect("retry with a request in flight");
        if flight.sent < self.attempts {
            flight.sent += 1;
            flight.deadline = now + self.timeout;
            return Err(flight.job.request.encode());
        }
        let flight = self.in_flight.take().expect("checked above");
        Ok(Outcome::Failed {
            error: format!(
                "no answer from the device after {} attempt(s) of {} ms",
                flight.sent,
                self.timeout.as_millis()
            ),
            job: flight.job,
        })
    }

    /// The port closed: every job fails with `reason`.
    pub fn fail_all(&mut self, reason: &str) -> Vec<Outcome> {
        self.in_flight
            .take()
            .map(|f| f.job)
            .into_iter()
            .chain(self.queue.drain(..))
            .map(|job| Outcome::Failed {
                job,
                error: reason.to_string(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vedirect::hex::{Flags, Frame};

    fn job(setting: Setting, target: Target) -> Job {
        Job {
            request: target.request(setting).unwrap(),
            purpose: Purpose::Command {
                topic: "t".into(),
                device: "d".into(),
                setting,
            },
        }
    }

    fn reply(cmd: u8, register: u16, flags: u8, value: &[u8]) -> Response {
        let mut p = register.to_le_bytes().to_vec();
        p.push(flags);
        p.extend_from_slice(value);
        Response::from_frame(&Frame::new(cmd, p)).unwrap()
    }

    #[test]
    fn payloads_parse_strictly() {
        let l = Setting::LoadOutput;
        assert_eq!(l.parse("ON"), Ok(Target::Load(LoadOutputControl::On)));
        assert_eq!(
            l.parse(" auto "),
            Ok(Target::Load(LoadOutputControl::Automatic))
        );
        assert!(matches!(l.parse("maybe"), Err(CommandError::BadLoad(_))));
        let c = Setting::ChargeCurrentLimit;
        assert_eq!(c.parse("12.5"), Ok(Target::Limit(12.5)));
        assert_eq!(c.parse("none"), Ok(Target::NoLimit));
        for bad in ["-1", "NaN", "inf", "12A", "", "5000"] {
            assert!(c.parse(bad).is_err(), "{bad}");
        }
        assert!(Setting::from_name("load").is_err());
        // 0x2015 little endian, flags 0, 125 x 0.1 A, check byte 0x55 - 0xBA.
        assert_eq!(
            Target::Limit(12.5).request(c).unwrap().encode(),
            b":81520007D009B\n"
        );
        assert_eq!(Target::NoLimit.request(c), None);
        assert_eq!(describe(c, &[125, 0]), "12.5");
        assert_eq!(describe(l, &[4]), "on");
    }

    #[test]
    fn one_request_in_flight_matched_by_command_and_register() {
        let t0 = Instant::now();
        let mut q = HexQueue::new(Duration::from_millis(500), 3);
        q.push(job(
            Setting::LoadOutput,
            Target::Load(LoadOutputControl::On),
        ))
        .unwrap();
        q.push(job(Setting::ChargeCurrentLimit, Target::Limit(5.0)))
            .unwrap();
        let first = q.next_to_send(t0).unwrap();
        assert_eq!(first, b":8ABED0004B1\n");
        assert_eq!(q.next_to_send(t0), None, "one request at a time");
        // An async frame and a reply about another register do not answer it.
        assert_eq!(q.on_response(&reply(0xA, 0xEDAB, 0, &[4]), t0), None);
        assert_eq!(q.on_response(&reply(0x8, 0x2015, 0, &[50, 0]), t0), None);
        let Some(Ok(Outcome::Done { reply: stored, .. })) =
            q.on_response(&reply(0x8, 0xEDAB, 0, &[4]), t0)
        else {
            panic!("the set reply ends the job")
        };
        assert_eq!(stored.value, vec![4]);
        assert!(q.next_to_send(t0).is_some());
        let refused = q.on_response(&reply(0x8, 0x2015, Flags::PARAMETER_ERROR.0, &[200, 0]), t0);
        let Some(Ok(Outcome::Failed { error, .. })) = refused else {
            panic!("{refused:?}")
        };
        assert!(
            error.contains("parameter error") && error.contains("nearest valid value 20A"),
            "{error}"
        );
        assert!(q.is_idle());
    }

    #[test]
    fn timeouts_resend_then_fail() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut q = HexQueue::new(ms(500), 2);
        q.push(job(
            Setting::LoadOutput,
            Target::Load(LoadOutputControl::Off),
        ))
        .unwrap();
        let sent = q.next_to_send(t0).unwrap();
        assert_eq!(q.deadline(), Some(t0 + ms(500)));
        assert_eq!(q.on_timeout(t0 + ms(499)), None);
        assert_eq!(q.on_timeout(t0 + ms(500)), Some(Err(sent)));
        let Some(Ok(Outcome::Failed { error, .. })) = q.on_timeout(t0 + ms(1000)) else {
            panic!()
        };
        assert!(error.contains("2 attempt"), "{error}");
        assert!(q.is_idle());
        // A frame error from the device counts as an attempt too.
        q.push(job(
            Setting::LoadOutput,
            Target::Load(LoadOutputControl::Off),
        ))
        .unwrap();
        let sent = q.next_to_send(t0).unwrap();
        let err = Response::Error { code: 0xAAAA };
        assert_eq!(q.on_response(&err, t0), Some(Err(sent)));
        q.push(job(
            Setting::LoadOutput,
            Target::Load(LoadOutputControl::On),
        ))
        .unwrap();
        let failed = q.fail_all("port lost");
        assert_eq!(failed.len(), 2);
    }
}
