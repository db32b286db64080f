//! Real servers standing in for InfluxDB and emoncms: plain HTTP, or HTTPS with a
//! certificate made at test time (rcgen) by a CA of the test's own. They record each
//! request (request line, headers, body) and answer 204.

#![allow(dead_code)] // each test file uses part of it

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pvbus_testkit::{Child, Mosquitto, mosquitto_pub};
use pvbus_tls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use pvbus_tls::rustls::{self, ServerConfig, ServerConnection, StreamOwned};

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Request {
    pub line: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Default)]
pub struct Server {
    requests: Arc<Mutex<Vec<Request>>>,
    /// Connections that ended before a request could be read (a refused handshake).
    failures: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Plain HTTP on 127.0.0.1:`port`.
    pub fn plain(port: u16) -> Server {
        Server::start(port, None)
    }

    /// HTTPS on 127.0.0.1:`port`.
    pub fn tls(port: u16, config: Arc<ServerConfig>) -> Server {
        Server::start(port, Some(config))
    }

    fn start(port: u16, tls: Option<Arc<ServerConfig>>) -> Server {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let server = Server::default();
        let s = server.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let result = match &tls {
                    None => answer(stream),
                    Some(config) => {
                        let conn = ServerConnection::new(config.clone()).unwrap();
                        answer(StreamOwned::new(conn, stream))
                    }
                };
                match result {
                    Ok(request) => s.requests.lock().unwrap().push(request),
                    Err(e) => s.failures.lock().unwrap().push(e.to_string()),
                }
            }
        });
        server
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().clone()
    }
}

/// What closes the connection politely once the answer is out.
trait Close {
    fn close(&mut self) {}
}
impl Close for TcpStream {}
impl Close for StreamOwned<ServerConnection, TcpStream> {
    fn close(&mut self) {
        self.conn.send_close_notify();
        let _ = self.flush();
    }
}

fn answer<S: Read + Write + Close>(mut stream: S) -> std::io::Result<Request> {
    let mut reader = BufReader::new(&mut stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        if h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some((name, value)) = h.trim_end().split_once(':') {
            headers.push((name.to_string(), value.trim().to_string()));
        }
    }
    let request = Request {
        line: line.trim().to_string(),
        headers,
        body: String::new(),
    };
    let length: usize = request
        .header("content-length")
        .map_or(0, |v| v.parse().unwrap());
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    stream
        .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    stream.close();
    Ok(Request {
        body: String::from_utf8(body).unwrap(),
        ..request
    })
}

/// A certificate authority of the test's own.
pub struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// Writes the CA's certificate (PEM) to `path`: what `ca_file` points at.
    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.cert.pem()).unwrap();
    }

    /// A server configuration with a certificate for `names` (DNS names or IP
    /// addresses) signed by this CA.
    pub fn server_config(&self, names: &[&str]) -> Arc<ServerConfig> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        Arc::new(config)
    }
}

/// `pvbus-export` as the plugins runner starts it, on `broker` with `settings`.
pub fn export(broker: &Mosquitto, settings: &serde_json::Value) -> Child {
    Child::spawn(
        "pvbus-export",
        Command::new(env!("CARGO_BIN_EXE_pvbus-export"))
            .env("PVBUS_BROKER", format!("127.0.0.1:{}", broker.port))
            .env("PVBUS_PLUGIN_ID", "export")
            .env("PVBUS_PLUGIN_CONFIG", settings.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

/// The MPPT's state at `ts`, producing `watts`.
pub fn reading(broker: &Mosquitto, ts: u64, watts: u32) {
    mosquitto_pub(
        broker.addr(),
        &[
            "-t",
            "pvbus/vedirect/mppt/state",
            "-m",
            &format!(r#"{{"ts":{ts},"pv_power":{watts}}}"#),
        ],
    );
}
