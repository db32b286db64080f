//! TLS for the clients of pvbus (the cloud bridge, the export plugin), in one place so
//! that they trust the same way and fail with the same words.
//!
//! Layout:
//! - [`certificates`]: the certificates of a PEM file, with errors that name the file;
//! - [`roots`]: what to trust: a CA file (a self-hosted server with its own CA) or the
//!   system's root certificates;
//! - [`client_builder`]: a rustls client configuration with the ring provider (not
//!   aws-lc-rs, which needs cmake and a C cross compiler for a Pi);
//! - [`find_rustls`]: rustls' own error wherever it is in an error's chain (tokio-rustls
//!   hands it back inside an `io::Error`), so that callers can say what went wrong.

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use tokio_rustls;
pub use tokio_rustls::rustls;

use rustls::client::WantsClientCert;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, ConfigBuilder, RootCertStore};

/// Why the certificates of a PEM file could not be read; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no certificate in it (expected PEM blocks `-----BEGIN CERTIFICATE-----`)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: not valid PEM: {message}", path.display())]
    BadPem { path: PathBuf, message: String },
}

/// Why a set of trusted roots could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RootsError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("{}: certificate {index} is not a usable CA certificate: {source}", path.display())]
    BadCa {
        path: PathBuf,
        /// From 1, in the file's order.
        index: usize,
        source: rustls::Error,
    },
    #[error("no root certificates found on this system (install ca-certificates)")]
    NoSystemRoots,
}

/// Every certificate of the PEM file at `path` (at least one).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let pem = std::fs::read(path).map_err(|source| PemError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::BadPem {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The roots to trust: every certificate of `ca_file`, or (`None`) the system's.
pub fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, RootsError> {
    match ca_file {
        Some(path) => roots_from_file(path),
        None => system_roots(),
    }
}

fn roots_from_file(path: &Path) -> Result<RootCertStore, RootsError> {
    let mut roots = RootCertStore::empty();
    for (index, cert) in certificates(path)?.into_iter().enumerate() {
        roots.add(cert).map_err(|source| RootsError::BadCa {
            path: path.to_path_buf(),
            index: index + 1,
            source,
        })?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, RootsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    // A system bundle often holds a certificate or two that webpki rejects; the rest
    // are still good.
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err(RootsError::NoSystemRoots);
    }
    Ok(roots)
}

/// A client configuration with the ring provider and the safe default protocol versions
/// (TLS 1.2 and 1.3), trusting `roots`; the caller adds a client certificate or none.
pub fn client_builder(
    roots: RootCertStore,
) -> Result<ConfigBuilder<ClientConfig, WantsClientCert>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots))
}

/// rustls' error, wherever it is in the chain of `error`'s causes.
pub fn find_rustls<'e>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // io::Error keeps what it wraps in get_ref(), not always in source().
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && let Some(tls) = find_rustls(inner)
        {
            return Some(tls);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOT_A_CERT: &str =
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n";

    #[test]
    fn files_that_are_not_certificates_are_named() {
        let dir = std::env::temp_dir().join(format!("pvbus-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let e = roots(Some(&missing)).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: cannot read:", missing.display())),
            "{e}"
        );
        let key_only = dir.join("key.pem");
        std::fs::write(&key_only, NOT_A_CERT).unwrap();
        let e = roots(Some(&key_only)).unwrap_err().to_string();
        assert!(e.contains("key.pem: no certificate in it"), "{e}");
        let garbage = dir.join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = roots(Some(&garbage)).unwrap_err().to_string();
        assert!(e.contains("garbage.pem: not valid PEM"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rustls_errors_are_found_inside_io_errors() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls.clone());
        assert_eq!(find_rustls(&io), Some(&tls));
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(find_rustls(&plain), None);
    }
}
