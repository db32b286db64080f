//! The TLS client configuration (rustls with the ring provider, through `pvbus-tls`, which
//! the export plugin shares), built from the files of `[cloud]` at every connection
//! attempt, so that a renewed certificate is picked up without a restart; and the words
//! for what went wrong during a connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pvbus_tls::find_rustls;
use pvbus_tls::{PemError, RootsError};
use rumqttc::{ConnectReturnCode, ConnectionError};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, CertificateError, ClientConfig};

use crate::config::CloudConfig;

/// Why a TLS configuration could not be made; each names the key and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cloud.{key} {}: cannot read: {source}", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cloud.{key} {}: no certificate in it (expected PEM blocks `-----BEGIN CERTIFICATE-----`)", path.display())]
    NoCertificate { key: &'static str, path: PathBuf },
    #[error("cloud.{key} {}: not valid PEM: {message}", path.display())]
    BadPem {
        key: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("cloud.ca_file {}: certificate {index} is not a usable CA certificate: {source}", path.display())]
    BadCa {
        path: PathBuf,
        index: usize,
        source: rustls::Error,
    },
    #[error("cloud.client_key_file {}: no private key in it (expected PEM `-----BEGIN PRIVATE KEY-----`, RSA or EC)", path.display())]
    NoKey { path: PathBuf },
    #[error("cloud.client_key_file {} does not go with cloud.client_cert_file {}: {source}", key.display(), cert.display())]
    KeyMismatch {
        key: PathBuf,
        cert: PathBuf,
        source: rustls::Error,
    },
    #[error(
        "no root certificates found on this system (install ca-certificates, or set cloud.ca_file)"
    )]
    NoSystemRoots,
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The rustls configuration for `[cloud]`: its CA file or the system's roots, and the
/// client certificate when one is configured.
pub fn client_config(config: &CloudConfig) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = pvbus_tls::roots(config.ca_file.as_deref()).map_err(|e| match e {
        RootsError::Pem(pem) => pem_error("ca_file", pem),
        RootsError::BadCa {
            path,
            index,
            source,
        } => TlsError::BadCa {
            path,
            index,
            source,
        },
        RootsError::NoSystemRoots => TlsError::NoSystemRoots,
    })?;
    let builder = pvbus_tls::client_builder(roots)?;
    let client = match (&config.client_cert_file, &config.client_key_file) {
        (Some(cert_path), Some(key_path)) => {
            let chain = certificates("client_cert_file", cert_path)?;
            let key = private_key(key_path)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|source| TlsError::KeyMismatch {
                    key: key_path.clone(),
                    cert: cert_path.clone(),
                    source,
                })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(client))
}

/// pvbus-tls's words for a PEM file, with the key of `[cloud]` that named it.
fn pem_error(key: &'static str, error: PemError) -> TlsError {
    match error {
        PemError::Read { path, source } => TlsError::Read { key, path, source },
        PemError::NoCertificate { path } => TlsError::NoCertificate { key, path },
        PemError::BadPem { path, message } => TlsError::BadPem { key, path, message },
    }
}

fn certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    pvbus_tls::certificates(path).map_err(|e| pem_error(key, e))
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        key: "client_key_file",
        path: path.to_path_buf(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_path_buf(),
        },
        other => TlsError::BadPem {
            key: "client_key_file",
            path: path.to_path_buf(),
            message: other.to_string(),
        },
    })
}

/// What a failed or lost connection means, in words that say what to check. `was_up`:
/// the connection had been accepted (CONNACK) before it failed.
pub fn describe(error: &ConnectionError, config: &CloudConfig, was_up: bool) -> String {
    let (host, port) = config.remote_endpoint();
    let remote = format!("{host}:{port}");
    match error {
        ConnectionError::ConnectionRefused(code) => match code {
            ConnectReturnCode::BadUserNamePassword => format!(
                "{remote} refused the login: bad user name or password (cloud.username {:?})",
                config.username.as_deref().unwrap_or("")
            ),
            ConnectReturnCode::NotAuthorized => format!(
                "{remote} refused the login: not authorised (check cloud.username and the password, or the client certificate and the broker's policy)"
            ),
            ConnectReturnCode::BadClientId => format!(
                "{remote} refused the client id {:?} (cloud.client_id)",
                config.client_id()
            ),
            ConnectReturnCode::RefusedProtocolVersion => {
                format!("{remote} refused MQTT 3.1.1")
            }
            ConnectReturnCode::ServiceUnavailable => {
                format!("{remote} refused the connection: service unavailable")
            }
            ConnectReturnCode::Success => format!("{remote}: unexpected CONNACK"),
        },
        // A TLS failure can surface at any layer (with TLS 1.3 the server's verdict on
        // our certificate arrives after the handshake, as a read error of the first
        // packet): look for rustls' own error anywhere in the chain first.
        _ if let Some(tls) = find_rustls(error) => describe_rustls(tls, &host, config),
        ConnectionError::Tls(rumqttc::TlsError::Io(io)) | ConnectionError::Io(io) => {
            describe_io(io, &host, &remote, config)
        }
        ConnectionError::Tls(rumqttc::TlsError::DNSName(_)) => {
            format!("cloud.remote: {host:?} is not a valid TLS server name")
        }
        ConnectionError::Tls(rumqttc::TlsError::TLS(e)) => describe_rustls(e, &host, config),
        ConnectionError::NetworkTimeout => {
            format!("{remote}: no answer within {CONNECT_TIMEOUT_SECS} s")
        }
        ConnectionError::MqttState(rumqttc::StateError::AwaitPingResp) => {
            format!("{remote}: the connection went silent (no answer to keep-alive)")
        }
        ConnectionError::MqttState(
            rumqttc::StateError::Io(io)
            | rumqttc::StateError::Deserialization(rumqttc::Error::Io(io)),
        ) if was_up => format!("the connection to {remote} was lost ({io})"),
        ConnectionError::MqttState(
            rumqttc::StateError::Io(io)
            | rumqttc::StateError::Deserialization(rumqttc::Error::Io(io)),
        ) => describe_io(io, &host, &remote, config),
        ConnectionError::MqttState(state) => format!("{remote}: the connection was lost ({state})"),
        other => format!("{remote}: {other}"),
    }
}

/// How long a TCP + TLS + MQTT connect may take before it counts as failed.
pub const CONNECT_TIMEOUT_SECS: u64 = 10;

fn describe_io(io: &std::io::Error, host: &str, remote: &str, config: &CloudConfig) -> String {
    if let Some(tls) = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        return describe_rustls(tls, host, config);
    }
    use std::io::ErrorKind;
    match io.kind() {
        ErrorKind::ConnectionRefused => {
            format!("cannot connect to {remote}: connection refused (nothing listens there?)")
        }
        ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof | ErrorKind::BrokenPipe => {
            format!(
                "{remote} closed the connection ({io}); with TLS this is often a client certificate it does not accept, or a plain MQTT port (try cloud.tls)"
            )
        }
        _ if io.to_string().contains("lookup") => {
            format!("cannot resolve {host:?}: {io}")
        }
        _ => format!("{remote}: {io}"),
    }
}

fn describe_rustls(error: &rustls::Error, host: &str, config: &CloudConfig) -> String {
    let trusted = match &config.ca_file {
        Some(path) => format!("cloud.ca_file {}", path.display()),
        None => "the system's root certificates (set cloud.ca_file for a private CA)".into(),
    };
    match error {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!(
                    "TLS: the remote's certificate is not valid for the name {host:?} (cloud.remote must be a name the certificate lists)"
                )
            }
            CertificateError::UnknownIssuer => {
                format!("TLS: the remote's certificate is not signed by a CA we trust ({trusted})")
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "TLS: the remote's certificate has expired (or this machine's clock is wrong)"
                    .into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "TLS: the remote's certificate is not valid yet (is this machine's clock right?)"
                    .into()
            }
            other => format!("TLS: the remote's certificate was rejected: {other:?}"),
        },
        rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired) => {
            "TLS: the remote requires a client certificate (set cloud.client_cert_file and cloud.client_key_file)".into()
        }
        rustls::Error::AlertReceived(
            alert @ (rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::CertificateUnknown),
        ) if config.client_cert_file.is_some() => format!(
            "TLS: the remote did not accept our client certificate ({alert:?}; is cloud.client_cert_file signed by a CA it trusts?)"
        ),
        rustls::Error::AlertReceived(alert) => format!(
            "TLS: the remote refused the handshake ({alert:?}); a client certificate it does not accept, or none where it needs one?"
        ),
        other => format!("TLS: {other}"),
    }
}
