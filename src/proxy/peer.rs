//! How the gateway connects to an upstream: address, TLS with SNI and verification (system
//! roots plus the upstream's extra CA), HTTP version and timeouts. Connections are pooled by
//! Pingora; the pool key includes the upstream's name so that upstreams with different trust
//! roots never share a connection.

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::{CertKey, WrappedX509};
use pingora::{Error, ErrorType, Result};

use crate::config::{HttpVersion, Upstream};

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
    /// Builds the material for `up`.
    pub fn new(up: &Upstream) -> Self {
        Self {
            ca: ca_list(up),
            client_cert: up
                .client_cert
                .as_ref()
                .map(|cc| Arc::new(CertKey::new(cc.chain.clone(), cc.key.to_vec()))),
        }
    }
}

/// Builds the trust list for an upstream with an extra CA (`None` when it has none: Pingora's
/// connector then uses the system roots).
pub fn ca_list(up: &Upstream) -> Option<CaList> {
    let extra = up.ca.as_ref()?;
    let mut ders: Vec<Vec<u8>> = extra.iter().cloned().collect();
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
    Some(Arc::from(list))
}

fn x509_parses(der: &[u8]) -> bool {
    let mut store = rustls::RootCertStore::empty();
    store
        .add(rustls::pki_types::CertificateDer::from(der))
        .is_ok()
}

fn pingora_core_native_roots() -> std::result::Result<Vec<Vec<u8>>, ()> {
    let mut out = Vec::new();
    // Honour SSL_CERT_FILE like the default connector does.
    if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
        let data = std::fs::read(file).map_err(|_| ())?;
        for c in rustls_pemfile::certs(&mut data.as_slice()).flatten() {
            out.push(c.as_ref().to_vec());
        }
        return Ok(out);
    }
    let certs = pingora::tls::load_native_certs().map_err(|_| ())?;
    out.extend(certs.into_iter().map(|c| c.as_ref().to_vec()));
    Ok(out)
}

/// Resolves the upstream's address. IPv4 addresses are preferred: the sandbox networks this
/// gateway runs on are IPv4.
async fn resolve(up: &Upstream) -> Result<SocketAddr> {
    if let Ok(ip) = up.host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, up.port));
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((up.host.as_str(), up.port))
        .await
        .map_err(|e| {
            Error::explain(
                ErrorType::ConnectNoRoute,
                format!("cannot resolve upstream `{}`: {e}", up.name),
            )
            .into_up()
        })?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| {
            Error::explain(
                ErrorType::ConnectNoRoute,
                format!("upstream `{}` resolves to no address", up.name),
            )
            .into_up()
        })
}

/// The peer for one request to `up`.
///
/// # Errors
/// When the host cannot be resolved.
pub async fn build(up: &Upstream, tls: Option<&UpstreamTls>) -> Result<Box<HttpPeer>> {
    let addr = resolve(up).await?;
    let mut peer = HttpPeer::new(addr, up.tls, up.host.clone());
    peer.options.connection_timeout = Some(up.connect_timeout);
    peer.options.total_connection_timeout = Some(up.connect_timeout * 2);
    peer.options.read_timeout = up.read_timeout;
    peer.options.verify_cert = true;
    peer.options.verify_hostname = true;
    peer.options.alpn = match (up.http_version, up.tls) {
        (HttpVersion::Auto, true) => ALPN::H2H1,
        (HttpVersion::Auto, false) | (HttpVersion::Http1, _) => ALPN::H1,
        (HttpVersion::Http2, _) => ALPN::H2,
    };
    if up.http_version != HttpVersion::Http1 {
        peer.options.max_h2_streams = 100;
    }
    if let Some(tls) = tls {
        peer.options.ca = tls.ca.clone();
        peer.client_cert_key = tls.client_cert.clone();
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    up.name.hash(&mut h);
    up.ca.is_some().hash(&mut h);
    peer.group_key = h.finish();
    Ok(Box::new(peer))
}
