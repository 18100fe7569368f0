//! An upstream's TLS material in Pingora's types: its trust roots (the system's plus its extra
//! CA) and the client certificate it is shown, built once per config.

use std::sync::Arc;

use pingora::utils::tls::{CertKey, WrappedX509};
use rustls::pki_types::CertificateDer;

/// A client certificate for upstream mTLS. The key is zeroized when the config is dropped.
pub struct ClientCert {
    pub chain: Vec<Vec<u8>>,
    pub key: zeroize::Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCert")
            .field("chain", &self.chain.len())
            .field("key", &"[REDACTED]")
            .finish()
    }
}

/// Trust roots for one upstream: system roots plus its extra CA, parsed once per config.
pub type CaList = Arc<[WrappedX509]>;

/// An upstream's TLS material in Pingora's types, built once per config (not per request).
#[derive(Clone, Default)]
pub struct UpstreamTls {
    pub ca: Option<CaList>,
    /// Pingora keeps its own copy of the key (a Pingora type, not zeroized); it lives as long
    /// as the config that loaded it.
    pub client_cert: Option<Arc<CertKey>>,
}

impl UpstreamTls {
    /// Builds the material from an upstream's extra CA certificates and client certificate.
    pub fn new(ca: Option<&[Vec<u8>]>, client_cert: Option<&ClientCert>) -> Self {
        Self {
            ca: ca.map(ca_list),
            client_cert: client_cert
                .map(|cc| Arc::new(CertKey::new(cc.chain.clone(), cc.key.to_vec()))),
        }
    }
}

/// Builds the trust list for an upstream with an extra CA: the system roots and `extra` (an
/// upstream without one gets `None`: Pingora's connector then uses the system roots).
fn ca_list(extra: &[Vec<u8>]) -> CaList {
    let mut ders: Vec<Vec<u8>> = extra.to_vec();
    if let Ok(system) = pingora_core_native_roots() {
        ders.extend(system);
    }
    let list: Vec<WrappedX509> = ders
        .into_iter()
        // Certificates were checked when the config loaded; skip anything x509 cannot parse
        // rather than panic inside the parser.
        .filter(|d| x509_parses(d))
        .map(|d| WrappedX509::new(d, pingora::utils::tls::parse_x509))
        .collect();
    Arc::from(list)
}

fn x509_parses(der: &[u8]) -> bool {
    let mut store = rustls::RootCertStore::empty();
    store.add(CertificateDer::from(der)).is_ok()
}

/// The system roots, as Pingora's default connector finds them (`SSL_CERT_FILE` and
/// `SSL_CERT_DIR` honoured by `rustls-native-certs`).
fn pingora_core_native_roots() -> std::result::Result<Vec<Vec<u8>>, ()> {
    let certs = pingora::tls::load_native_certs().map_err(|_| ())?;
    Ok(certs.into_iter().map(|c| c.as_ref().to_vec()).collect())
}
