//! TLS for the LAN listener: loads `[broker.lan] tls` (PEM certificate chain and private key)
//! into a rustls acceptor at start, with errors naming the key and the file.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

use crate::BrokerError;
use crate::config::TlsFiles;

const CERT_KEY: &str = "broker.lan.tls.cert";
const KEY_KEY: &str = "broker.lan.tls.key";

fn tls_error(key: &str, path: &Path, problem: impl Into<String>) -> BrokerError {
    BrokerError::Tls {
        key: key.to_owned(),
        path: path.to_owned(),
        problem: problem.into(),
    }
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, BrokerError> {
    std::fs::read(path).map_err(|error| tls_error(key, path, format!("cannot read: {error}")))
}

/// Reads both files and checks that the key belongs to the certificate.
pub(crate) fn load_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, BrokerError> {
    let cert_pem = read(CERT_KEY, &files.cert)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| tls_error(CERT_KEY, &files.cert, format!("not PEM: {error}")))?;
    if certs.is_empty() {
        return Err(tls_error(
            CERT_KEY,
            &files.cert,
            "not PEM: no `BEGIN CERTIFICATE` block",
        ));
    }
    let key_pem = read(KEY_KEY, &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| {
        tls_error(
            KEY_KEY,
            &files.key,
            format!("not a PEM private key (PKCS#8, PKCS#1 or SEC1): {error}"),
        )
    })?;
    // ring: pure Rust and assembly, no cmake or system library on the Pi.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| tls_error(KEY_KEY, &files.key, error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|error| {
            let problem = match error {
                rustls::Error::InconsistentKeys(_) => {
                    format!("does not match the certificate in {}", files.cert.display())
                }
                other => format!("unusable private key: {other}"),
            };
            tls_error(KEY_KEY, &files.key, problem)
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
