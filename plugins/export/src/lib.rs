//! History export: what PvMonit users had with emoncms, plus InfluxDB, made safe for an
//! off-grid internet that is often off.
//!
//! Layout (each step apart from the next):
//! - [`Collector`]: readings from the bus, the last value of each per interval;
//! - [`influx_lines`] and [`emoncms_bulk`]: a batch in each service's format;
//! - [`Spool`]: batches on disk, oldest first, bounded in bytes (the oldest are dropped
//!   and counted when full), written atomically so that a power cut loses nothing sent;
//! - [`post`]: a small HTTP/1.1 client (plain `http://`: emoncms and InfluxDB on the LAN,
//!   or behind a local proxy; HTTPS is not built in);
//! - `main.rs`: the `pvbus-export` plugin.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `[plugins.config.<id>]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// One batch per interval.
    pub interval: String,
    /// Where batches wait until sent.
    pub spool_dir: PathBuf,
    /// The spool's bound (all sinks together).
    pub max_spool_bytes: u64,
    pub influx: Option<InfluxSettings>,
    pub emoncms: Option<EmoncmsSettings>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            interval: "60s".into(),
            spool_dir: PathBuf::from("/var/lib/pvbus/export"),
            max_spool_bytes: 10 * 1024 * 1024,
            influx: None,
            emoncms: None,
        }
    }
}

/// InfluxDB: the full write URL, e.g. `http://nas:8086/api/v2/write?org=home&bucket=pv&precision=s`
/// (v2) or `http://nas:8086/write?db=pv&precision=s` (v1). `precision=s` is required:
/// timestamps are unix seconds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxSettings {
    pub url: String,
    /// Sent as `Authorization: Token <token>` (v2).
    pub token: Option<String>,
}

/// emoncms: the server's URL (`http://emoncms.lan`) and the write API key.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmoncmsSettings {
    pub url: String,
    pub apikey: String,
}

/// One value to export.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The device (`mppt_roof`, or `site`).
    pub device: String,
    /// The bridge or plugin that published it (`vedirect`); `site` for the site.
    pub source: String,
    pub reading: String,
    pub value: f64,
    pub ts: u64,
}

/// The last value of each reading since the last batch.
#[derive(Debug, Default)]
pub struct Collector {
    latest: BTreeMap<(String, String), Point>,
}

impl Collector {
    /// A device state (`source`, `device`, JSON object with `ts`). Numbers and booleans
    /// are exported (booleans as 0/1); text is not (history databases want numbers).
    pub fn feed(&mut self, source: &str, device: &str, state: &Value) {
        let Some(object) = state.as_object() else {
            return;
        };
        let Some(ts) = object.get("ts").and_then(Value::as_u64) else {
            return;
        };
        for (reading, v) in object {
            let value = match v {
                Value::Number(n) => n.as_f64(),
                Value::Bool(b) => Some(f64::from(u8::from(*b))),
                _ => None,
            };
            if reading == "ts" {
                continue;
            }
            if let Some(value) = value.filter(|v| v.is_finite()) {
                self.latest.insert(
                    (device.to_string(), reading.clone()),
                    Point {
                        device: device.to_string(),
                        source: source.to_string(),
                        reading: reading.clone(),
                        value,
                        ts,
                    },
                );
            }
        }
    }

    /// The batch: every reading's last value, and a fresh start.
    pub fn take(&mut self) -> Vec<Point> {
        std::mem::take(&mut self.latest).into_values().collect()
    }
}

/// Escapes a measurement, tag or field key of the line protocol.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace(' ', "\\ ")
        .replace('=', "\\=")
}

/// InfluxDB line protocol: one line per device and timestamp,
/// `<device>,source=<source> <reading>=<value>,... <ts>`.
pub fn influx_lines(points: &[Point]) -> String {
    let mut by_device: BTreeMap<(&str, &str, u64), Vec<&Point>> = BTreeMap::new();
    for p in points {
        by_device
            .entry((&p.device, &p.source, p.ts))
            .or_default()
            .push(p);
    }
    let mut out = String::new();
    for ((device, source, ts), points) in by_device {
        let fields: Vec<String> = points
            .iter()
            .map(|p| format!("{}={}", escape(&p.reading), p.value))
            .collect();
        out.push_str(&format!(
            "{},source={} {} {ts}\n",
            escape(device),
            escape(source),
            fields.join(",")
        ));
    }
    out
}

/// emoncms's `/input/bulk` data: `[[ts,"<device>",{"reading":value,...}],...]`, one
/// node per device, as PvMonit's users had their inputs.
pub fn emoncms_bulk(points: &[Point]) -> String {
    let mut by_device: BTreeMap<(&str, u64), serde_json::Map<String, Value>> = BTreeMap::new();
    for p in points {
        by_device
            .entry((&p.device, p.ts))
            .or_default()
            .insert(p.reading.clone(), Value::from(p.value));
    }
    let rows: Vec<Value> = by_device
        .into_iter()
        .map(|((device, ts), values)| serde_json::json!([ts, device, values]))
        .collect();
    Value::Array(rows).to_string()
}

/// Batches on disk, one file each under `<dir>/<sink>/`, named by a growing sequence
/// number so that the oldest is sent first.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    next: u64,
    /// Batches dropped to stay within the bound, since start.
    pub dropped: u64,
}

impl Spool {
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Spool> {
        std::fs::create_dir_all(dir)?;
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            next: 0,
            dropped: 0,
        };
        spool.next = spool
            .all()?
            .iter()
            .filter_map(|(_, p, _)| seq_of(p))
            .max()
            .map_or(0, |n| n + 1);
        Ok(spool)
    }

    /// Every batch: (sink, path, size), oldest first.
    fn all(&self) -> std::io::Result<Vec<(String, PathBuf, u64)>> {
        let mut all = Vec::new();
        for sink in std::fs::read_dir(&self.dir)? {
            let sink = sink?;
            if !sink.file_type()?.is_dir() {
                continue;
            }
            let name = sink.file_name().to_string_lossy().into_owned();
            for f in std::fs::read_dir(sink.path())? {
                let f = f?;
                let path = f.path();
                if seq_of(&path).is_some() {
                    all.push((name.clone(), path, f.metadata()?.len()));
                }
            }
        }
        all.sort_by_key(|(_, p, _)| seq_of(p));
        Ok(all)
    }

    /// Stores a batch for `sink`, then drops the oldest batches while over the bound.
    pub fn push(&mut self, sink: &str, body: &str) -> std::io::Result<()> {
        let dir = self.dir.join(sink);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{:012}.batch", self.next));
        self.next += 1;
        let tmp = dir.join(".incoming");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        let all = self.all()?;
        let mut total: u64 = all.iter().map(|(_, _, n)| n).sum();
        for (_, path, size) in all {
            if total <= self.max_bytes {
                break;
            }
            std::fs::remove_file(&path)?;
            total -= size;
            self.dropped += 1;
        }
        Ok(())
    }

    /// The oldest batch of `sink`: its path and body.
    pub fn oldest(&self, sink: &str) -> std::io::Result<Option<(PathBuf, String)>> {
        let Some((_, path, _)) = self.all()?.into_iter().find(|(s, _, _)| s == sink) else {
            return Ok(None);
        };
        Ok(Some((path.clone(), std::fs::read_to_string(&path)?)))
    }

    /// Batches and bytes waiting.
    pub fn queued(&self) -> std::io::Result<(usize, u64)> {
        let all = self.all()?;
        Ok((all.len(), all.iter().map(|(_, _, n)| n).sum()))
    }
}

fn seq_of(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".batch")?.parse().ok()
}

#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("{0:?} is not an http:// URL (https is not built in: use a local proxy)")]
    BadUrl(String),
    #[error("cannot reach {host}: {error}")]
    Connect { host: String, error: String },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the server answered {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("a broken answer: {0}")]
    Protocol(String),
}

/// POSTs `body` to `url` (`http://host[:port]/path?query`) with `headers`; `Ok` on a
/// 2xx answer.
pub async fn post(
    url: &str,
    headers: &[(&str, &str)],
    content_type: &str,
    body: &str,
    timeout: Duration,
) -> Result<(), PostError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| PostError::BadUrl(url.to_string()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(PostError::BadUrl(url.to_string()));
    }
    let addr = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let work = async {
        let mut stream =
            tokio::net::TcpStream::connect(&addr)
                .await
                .map_err(|e| PostError::Connect {
                    host: addr.clone(),
                    error: e.to_string(),
                })?;
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: pvbus-export\r\n",
            body.len()
        );
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        let io = |e: std::io::Error| PostError::Protocol(e.to_string());
        stream.write_all(request.as_bytes()).await.map_err(io)?;
        let mut answer = Vec::new();
        stream
            .take(64 * 1024)
            .read_to_end(&mut answer)
            .await
            .map_err(io)?;
        let answer = String::from_utf8_lossy(&answer);
        let status: u16 = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| PostError::Protocol(answer.lines().next().unwrap_or("").to_string()))?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").trim();
            Err(PostError::Refused {
                status,
                body: body.chars().take(200).collect(),
            })
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| PostError::Timeout(timeout))?
}

/// `application/x-www-form-urlencoded` escaping.
pub fn form_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn readings_become_lines_and_bulk_rows() {
        let mut c = Collector::default();
        c.feed(
            "vedirect",
            "mppt",
            &json!({"ts": 100, "pv_power": 200, "charge_state": "float"}),
        );
        c.feed(
            "vedirect",
            "mppt",
            &json!({"ts": 160, "pv_power": 245.5, "load_output": true}),
        );
        c.feed("site", "site", &json!({"ts": 160, "consumption": 80}));
        c.feed("x", "no_ts", &json!({"pv_power": 1}));
        let points = c.take();
        assert!(c.take().is_empty());
        assert_eq!(
            influx_lines(&points),
            "mppt,source=vedirect load_output=1,pv_power=245.5 160\nsite,source=site consumption=80 160\n"
        );
        assert_eq!(
            emoncms_bulk(&points),
            r#"[[160,"mppt",{"load_output":1.0,"pv_power":245.5}],[160,"site",{"consumption":80.0}]]"#
        );
        assert_eq!(escape("a b,c=d"), "a\\ b\\,c\\=d");
        assert_eq!(form_escape("[1,\"a b\"]"), "%5B1%2C%22a%20b%22%5D");
    }

    #[test]
    fn the_spool_keeps_order_survives_reopening_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 100).unwrap();
        s.push("influx", "one\n").unwrap();
        s.push("emoncms", "[1]").unwrap();
        s.push("influx", "two\n").unwrap();
        let mut s = Spool::open(dir.path(), 100).unwrap();
        let (path, body) = s.oldest("influx").unwrap().unwrap();
        assert_eq!(body, "one\n");
        std::fs::remove_file(path).unwrap();
        assert_eq!(s.oldest("influx").unwrap().unwrap().1, "two\n");
        assert_eq!(s.queued().unwrap(), (2, 7));
        // 40-byte batches in a 100-byte spool: the oldest go.
        for i in 0..5 {
            s.push("influx", &format!("{i:039}\n")).unwrap();
        }
        let (n, bytes) = s.queued().unwrap();
        assert!(bytes <= 100 && n == 2, "{n} {bytes}");
        assert_eq!(s.dropped, 5);
        assert!(
            s.oldest("influx")
                .unwrap()
                .unwrap()
                .1
                .starts_with("000000000000000000000000000000000000003")
        );
    }
}
