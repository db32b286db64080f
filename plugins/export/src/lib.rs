//! History export: what PvMonit users had with emoncms, plus InfluxDB, made safe for an
//! off-grid internet that is often off.
//!
//! Layout (each step apart from the next):
//! - [`Collector`]: readings from the bus, the last value of each per interval;
//! - [`influx_lines`] and [`emoncms_bulk`]: a batch in each service's format;
//! - [`Spool`]: batches on disk, oldest first, bounded in bytes (the oldest are dropped
//!   and counted when full), written atomically so that a power cut loses nothing sent;
//! - [`Endpoint`] and [`post`]: a small HTTP/1.1 client, one request per connection, over
//!   TLS for `https://` (emoncms.org and InfluxDB Cloud are HTTPS only): rustls through
//!   `pvbus-tls`, trusting the system's root certificates or a `ca_file` (a self-hosted
//!   server with its own CA); errors name the URL, never its query (where keys are);
//! - `main.rs`: the `pvbus-export` plugin.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pvbus_tls::{rustls, tokio_rustls};
use rustls::pki_types::ServerName;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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

/// InfluxDB: the full write URL, e.g.
/// `https://eu-central-1-1.aws.cloud2.influxdata.com/api/v2/write?org=home&bucket=pv&precision=s`
/// (v2, InfluxDB Cloud) or `http://nas:8086/write?db=pv&precision=s` (v1). `precision=s`
/// is required: timestamps are unix seconds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxSettings {
    pub url: String,
    /// Sent as `Authorization: Token <token>` (v2).
    pub token: Option<String>,
    /// For `https://`: the CA (PEM) that signed the server's certificate, for a server
    /// with its own CA; default: the system's root certificates.
    pub ca_file: Option<PathBuf>,
}

/// emoncms: the server's URL (`https://emoncms.org`, `http://emoncms.lan`) and the
/// write API key.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmoncmsSettings {
    pub url: String,
    pub apikey: String,
    /// As for InfluxDB.
    pub ca_file: Option<PathBuf>,
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

/// Where a sink posts: the URL taken apart once, at start, and for `https://` the TLS
/// client (trusting its `ca_file`, or the system's root certificates).
#[derive(Clone)]
pub struct Endpoint {
    /// `scheme://authority/path`: the URL without its query, which may hold a key;
    /// what errors and logs show.
    shown: String,
    /// `host:port` to connect to.
    connect_to: String,
    /// For the `Host` header: the authority as written.
    authority: String,
    /// Path and query, for the request line.
    target: String,
    tls: Option<Tls>,
}

#[derive(Clone)]
struct Tls {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
    host: String,
    /// What we trust, in words, for an unknown CA.
    trust: String,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.shown)
            .field("tls", &self.tls.as_ref().map(|t| &t.trust))
            .finish()
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// Why a sink's URL or TLS settings cannot be used. URLs are shown without their query
/// (where an API key often is) and without a password.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("{url:?} cannot be posted to: {why}")]
    BadUrl { url: String, why: &'static str },
    #[error("a CA file is for https:// URLs, and {0:?} is plain http")]
    CaFileWithoutTls(String),
    #[error(
        "https needs root certificates and none were found on this system (install ca-certificates, or set ca_file)"
    )]
    NoSystemRoots,
    #[error(transparent)]
    CaFile(pvbus_tls::RootsError),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

impl EndpointError {
    /// The setting at fault: `url` or `ca_file`.
    pub fn key(&self) -> &'static str {
        match self {
            EndpointError::BadUrl { .. } | EndpointError::NoSystemRoots => "url",
            _ => "ca_file",
        }
    }
}

/// The URL without its query and without a `user:password@`: what may be shown.
fn without_query(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or(url);
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

impl Endpoint {
    /// `url`: `http://` or `https://host[:port][/path][?query]`; `ca_file`: the CA to
    /// trust for `https://` instead of the system's root certificates.
    pub fn new(url: &str, ca_file: Option<&Path>) -> Result<Endpoint, EndpointError> {
        let bad = |why| EndpointError::BadUrl {
            url: without_query(url),
            why,
        };
        let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(bad("it must start with http:// or https://"));
        };
        let (authority, target) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err(bad(
                "user:password@ in the URL is not supported (InfluxDB: use `token`)",
            ));
        }
        // `host`, `host:port`, `[v6]`, `[v6]:port`.
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6
                    .split_once(']')
                    .ok_or_else(|| bad("an IPv6 address without its closing `]`"))?;
                (host, after.strip_prefix(':'))
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| bad("the port is not a number"))?,
            None if https => 443,
            None => 80,
        };
        let connect_to = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let tls = if https {
            let roots = pvbus_tls::roots(ca_file).map_err(|e| match e {
                pvbus_tls::RootsError::NoSystemRoots => EndpointError::NoSystemRoots,
                other => EndpointError::CaFile(other),
            })?;
            let config = pvbus_tls::client_builder(roots)?.with_no_client_auth();
            let name = ServerName::try_from(host.to_string())
                .map_err(|_| bad("the host is not a name a certificate can be checked for"))?;
            Some(Tls {
                connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
                name,
                host: host.to_string(),
                trust: match ca_file {
                    Some(path) => format!("ca_file {}", path.display()),
                    None => {
                        "the system's root certificates; set ca_file for a server with its own CA"
                            .into()
                    }
                },
            })
        } else {
            if ca_file.is_some() {
                return Err(EndpointError::CaFileWithoutTls(without_query(url)));
            }
            None
        };
        Ok(Endpoint {
            shown: without_query(url),
            connect_to,
            authority: authority.to_string(),
            target,
            tls,
        })
    }

    pub fn is_https(&self) -> bool {
        self.tls.is_some()
    }
}

/// Why a batch was not delivered; each names the URL (without its query).
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("cannot reach {url}: {error}")]
    Connect { url: String, error: String },
    #[error("{url}: TLS: {problem}")]
    Tls { url: String, problem: String },
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url} answered {status}: {body}")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: a broken answer: {message}")]
    Protocol { url: String, message: String },
}

/// The most of an answer we read: a status line, headers and an error message.
const MAX_ANSWER: usize = 64 * 1024;

/// POSTs `body` to `endpoint` with `headers` (HTTP/1.1, one request per connection,
/// over TLS for `https://`); `Ok` on a 2xx answer. `timeout` covers it all.
pub async fn post(
    endpoint: &Endpoint,
    headers: &[(&str, &str)],
    content_type: &str,
    body: &str,
    timeout: Duration,
) -> Result<(), PostError> {
    let url = || endpoint.shown.clone();
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: pvbus-export\r\n",
        endpoint.target,
        endpoint.authority,
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    let work = async {
        let tcp = tokio::net::TcpStream::connect(&endpoint.connect_to)
            .await
            .map_err(|e| PostError::Connect {
                url: url(),
                error: e.to_string(),
            })?;
        let answer = match &endpoint.tls {
            None => exchange(tcp, request.as_bytes()).await,
            Some(tls) => {
                let stream = tls
                    .connector
                    .connect(tls.name.clone(), tcp)
                    .await
                    .map_err(|e| PostError::Tls {
                        url: url(),
                        problem: tls_problem(&e, tls),
                    })?;
                exchange(stream, request.as_bytes()).await
            }
        }
        .map_err(|e| PostError::Protocol {
            url: url(),
            message: e.to_string(),
        })?;
        let answer = String::from_utf8_lossy(&answer);
        let status: u16 = answer
            .strip_prefix("HTTP/1.")
            .and_then(|s| s.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| PostError::Protocol {
                url: url(),
                message: format!(
                    "not an HTTP answer: {:?}",
                    answer
                        .lines()
                        .next()
                        .unwrap_or("")
                        .chars()
                        .take(80)
                        .collect::<String>()
                ),
            })?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").trim();
            Err(PostError::Refused {
                url: url(),
                status,
                body: body.chars().take(200).collect(),
            })
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| PostError::Timeout {
            url: url(),
            timeout,
        })?
}

/// Writes `request` and reads the answer: to the end of its body when it has a
/// `Content-Length`, else to the end of the connection (`Connection: close`).
async fn exchange<S>(mut stream: S, request: &[u8]) -> std::io::Result<Vec<u8>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(request).await?;
    stream.flush().await?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // Many servers close a TLS connection without close_notify once the answer
            // is out; what came before is whole.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => 0,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
        if answer.len() >= MAX_ANSWER || complete(&answer) {
            break;
        }
    }
    Ok(answer)
}

/// Whether `answer` holds its headers and the whole body its `Content-Length` announces.
fn complete(answer: &[u8]) -> bool {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let headers = String::from_utf8_lossy(&answer[..end]);
    let length = headers.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    length.is_some_and(|n| answer.len() >= end + 4 + n)
}

/// What a failed TLS handshake means, in words that say what to check.
fn tls_problem(error: &std::io::Error, tls: &Tls) -> String {
    use rustls::CertificateError as Cert;
    let Some(rustls_error) = pvbus_tls::find_rustls(error) else {
        return match error.kind() {
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
                "the server closed the connection during the handshake (is this an https port?)"
                    .into()
            }
            _ => format!("the handshake failed: {error}"),
        };
    };
    match rustls_error {
        rustls::Error::InvalidCertificate(
            Cert::NotValidForName | Cert::NotValidForNameContext { .. },
        ) => format!(
            "the server's certificate is not valid for the name {:?} (the URL must use a name the certificate lists)",
            tls.host
        ),
        rustls::Error::InvalidCertificate(Cert::UnknownIssuer) => format!(
            "the server's certificate is not signed by a CA we trust ({})",
            tls.trust
        ),
        rustls::Error::InvalidCertificate(Cert::Expired | Cert::ExpiredContext { .. }) => {
            "the server's certificate has expired (or this machine's clock is wrong)".into()
        }
        rustls::Error::InvalidCertificate(Cert::NotValidYet | Cert::NotValidYetContext { .. }) => {
            "the server's certificate is not valid yet (is this machine's clock right?)".into()
        }
        rustls::Error::InvalidCertificate(other) => {
            format!("the server's certificate was rejected: {other:?}")
        }
        rustls::Error::InvalidMessage(_) => format!(
            "the handshake failed, the server does not speak TLS ({rustls_error}); is this an http:// port?"
        ),
        rustls::Error::AlertReceived(alert) => {
            format!("the server refused the handshake ({alert:?})")
        }
        other => format!("the handshake failed: {other}"),
    }
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
    fn urls_are_taken_apart_and_bad_ones_named_without_their_query() {
        let e = Endpoint::new("http://nas:8086/write?db=pv&precision=s", None).unwrap();
        assert_eq!(
            (
                e.connect_to.as_str(),
                e.authority.as_str(),
                e.target.as_str()
            ),
            ("nas:8086", "nas:8086", "/write?db=pv&precision=s")
        );
        assert_eq!(e.to_string(), "http://nas:8086/write");
        assert!(!e.is_https());
        let e = Endpoint::new("http://[fd00::5]?x=1", None).unwrap();
        assert_eq!(
            (e.connect_to.as_str(), e.target.as_str()),
            ("[fd00::5]:80", "/?x=1")
        );
        // https: port 443 and a TLS client (the system's roots are installed here).
        let e = Endpoint::new("https://emoncms.org/input/bulk?apikey=SECRET", None).unwrap();
        assert_eq!(e.connect_to, "emoncms.org:443");
        assert!(e.is_https());
        assert!(!format!("{e:?} {e}").contains("SECRET"));

        let bad = |url: &str, ca: Option<&Path>, key: &str, words: &str| {
            let e = Endpoint::new(url, ca).unwrap_err();
            let text = e.to_string();
            assert_eq!(e.key(), key, "{text}");
            assert!(text.contains(words), "{text}");
            assert!(!text.contains("SECRET"), "{text}");
        };
        bad(
            "ftp://x/?k=SECRET",
            None,
            "url",
            "must start with http:// or https://",
        );
        bad("https://:443/x?apikey=SECRET", None, "url", "no host");
        bad("http://nas:80a/", None, "url", "the port is not a number");
        bad("http://me:SECRET@nas/", None, "url", "not supported");
        bad(
            "http://nas/?apikey=SECRET",
            Some(Path::new("/ca.pem")),
            "ca_file",
            "a CA file is for https:// URLs",
        );
        bad(
            "https://nas/?apikey=SECRET",
            Some(Path::new("/nonexistent/ca.pem")),
            "ca_file",
            "/nonexistent/ca.pem: cannot read",
        );
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
