//! A rustls client configuration for tests that speak TLS to the gateway by hand: trusts one
//! root file, optionally presents a client certificate (leaf + chain file and key), and never
//! resumes sessions — every connection is a full handshake that shows the server's current
//! certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use slapenir::pki::pem;

/// See the module documentation.
pub fn rustls_client(root: &Path, cert_key: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in pem::certs(&std::fs::read(root).unwrap()).unwrap() {
        roots.add(c).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut cfg = match cert_key {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> =
                pem::certs(&std::fs::read(cert).unwrap()).unwrap();
            let key: PrivateKeyDer<'static> = pem::private_key(&std::fs::read(key).unwrap())
                .unwrap()
                .unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    cfg.resumption = rustls::client::Resumption::disabled();
    Arc::new(cfg)
}

/// One HTTP/1.1 response head read by hand from `r`: its status and its header lines (without
/// their line ends), the blank line after them consumed, the body left unread.
pub fn read_head(r: &mut impl std::io::BufRead) -> (u16, Vec<String>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line: {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        match line.trim_end() {
            "" => return (status, headers),
            h => headers.push(h.to_owned()),
        }
    }
}
