//! Certificates and keys read from PEM files, for the listener and the interception CA.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

/// Errors loading certificate files. Never holds key material.
#[derive(Debug)]
pub struct TlsLoadError(pub String);

impl std::fmt::Display for TlsLoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Every certificate in PEM `data`, in order (other sections are skipped).
///
/// # Errors
/// A `CERTIFICATE` section that does not decode.
pub fn certs(data: &[u8]) -> Result<Vec<CertificateDer<'static>>, pem::Error> {
    CertificateDer::pem_slice_iter(data).collect()
}

/// The first private key in PEM `data` (PKCS#8, PKCS#1 or SEC1), `None` when it holds none.
/// A caller never quotes the error: it may describe the key's bytes.
///
/// # Errors
/// A key section that does not decode.
pub fn private_key(data: &[u8]) -> Result<Option<PrivateKeyDer<'static>>, pem::Error> {
    match PrivateKeyDer::from_pem_slice(data) {
        Ok(key) => Ok(Some(key)),
        Err(pem::Error::NoItemsFound) => Ok(None),
        Err(e) => Err(e),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsLoadError> {
    let data = std::fs::read(path)
        .map_err(|e| TlsLoadError(format!("cannot read {}: {e}", path.display())))?;
    let certs = certs(&data)
        .map_err(|e| TlsLoadError(format!("{} is not valid PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsLoadError(format!(
            "{} holds no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsLoadError> {
    let data = zeroize::Zeroizing::new(
        std::fs::read(path)
            .map_err(|e| TlsLoadError(format!("cannot read {}: {e}", path.display())))?,
    );
    private_key(&data)
        .map_err(|_| TlsLoadError(format!("{} is not a valid PEM private key", path.display())))?
        .ok_or_else(|| TlsLoadError(format!("{} holds no private key", path.display())))
}

/// Loads a certificate chain and its key, checking that they belong together.
///
/// # Errors
/// Unreadable files, bad PEM, a key that does not match the certificate.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsLoadError> {
    let chain = read_pem_certs(cert)?;
    let key = read_key(key)?;
    let ck = CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| TlsLoadError(format!("{} and its key: {e}", cert.display())))?;
    ck.keys_match().map_err(|_| {
        TlsLoadError(format!(
            "the key does not match the certificate {}",
            cert.display()
        ))
    })?;
    Ok(ck)
}

/// Builds a client verifier from a CA bundle.
///
/// # Errors
/// Unreadable or unusable CA files.
pub fn load_client_verifier(ca: &Path) -> Result<Arc<dyn ClientCertVerifier>, TlsLoadError> {
    let mut roots = RootCertStore::empty();
    for c in read_pem_certs(ca)? {
        roots.add(c).map_err(|e| {
            TlsLoadError(format!(
                "{}: not a usable CA certificate: {e}",
                ca.display()
            ))
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsLoadError(format!("{}: {e}", ca.display())))
}
