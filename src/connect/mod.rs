//! `CONNECT` (`HTTPS_PROXY`) with TLS interception, in front of the Pingora proxy.
//!
//! Pingora 0.9 answers `CONNECT` with 405, so the agents' listener runs [`GatewayApp`], which
//! looks at the first bytes of each (m)TLS connection:
//! - HTTP/2 (by ALPN) or any other request: handed to the proxy unchanged (the sniffed bytes are
//!   replayed), so gateway mode and `HTTP_PROXY` work as before;
//! - `CONNECT host:port`: checked against the routes (no route: `403` before any TLS; no
//!   `interception` configured: `501`), answered `200`, then TLS is accepted *inside* the tunnel
//!   with a leaf for `host` minted by the interception CA ([`crate::pki::mint`]). A client
//!   hello naming any other server (SNI) gets no certificate: the handshake fails. The decrypted stream goes to
//!   the same proxy, carrying [`TunnelInfo`] (target and the outer client identity) as its proxy
//!   digest; `request_filter` refuses any request whose `Host` is not the tunnel's target
//!   (`421`), and applies every gateway-mode rule unchanged.
//!
//! Inside the tunnel, HTTP/2 and HTTP/1.1 are offered by ALPN.

pub mod http1;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::listeners::tls::Acceptor;
use pingora::protocols::{Ssl, Stream, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::limits::client::{
    refusal_bytes, ConnectionUse, Limited, OverLimit, Shutdown, OVER_LIMIT_H2_GRACE,
};
use crate::pki::mint::Minter;
use crate::pki::ClientIdentity;
use crate::policy::Policy;
use crate::proxy::Gateway;
use crate::refusal::Reason;
use crate::stream::{PrefixStream, TunnelInfo};

/// How long a client may take to send its first request line or `CONNECT` head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the TLS handshake inside a tunnel may take.
const TUNNEL_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest `CONNECT` head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// The agents' listener application: `CONNECT` handling in front of the proxy.
pub struct GatewayApp {
    proxy: Arc<HttpProxy<Gateway>>,
    policy: Arc<ArcSwap<Policy>>,
    minter: Option<Arc<Minter>>,
    /// Shared with the proxy, whose hooks get no shutdown watch of their own.
    shutdown: Shutdown,
}

impl GatewayApp {
    pub fn new(
        proxy: Arc<HttpProxy<Gateway>>,
        policy: Arc<ArcSwap<Policy>>,
        minter: Option<Arc<Minter>>,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            proxy,
            policy,
            minter,
            shutdown,
        }
    }
}

#[async_trait]
impl ServerApp for GatewayApp {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.shutdown.note(shutdown);
        let _admitted = match crate::limits::overload::admit(&self.policy) {
            Ok(a) => a,
            Err(limit) => {
                crate::connect::http1::shed(stream, limit).await;
                return None;
            }
        };
        // Held until the connection ends (HTTP/1 keep-alive loops inside the proxy).
        let conn = match admit_connection(&self.policy.load(), &stream) {
            Ok(c) => c,
            Err(limited) => return self.over_limit(stream, &limited, shutdown).await,
        };
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return self.proxy.process_new(stream, shutdown).await;
        }
        let mut head = BytesMut::with_capacity(1024);
        // Read until the bytes can no longer be the start of "CONNECT ".
        let mut deadline = None;
        loop {
            let wait = crate::connect::http1::head_wait(&self.policy, &mut deadline);
            match tokio::time::timeout_at(wait, stream.read_buf(&mut head)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Err(_) => return crate::connect::http1::head_expired(stream, deadline).await,
                Ok(Ok(_)) => {}
            }
            crate::connect::http1::head_started(&self.policy, &mut deadline);
            let n = head.len().min(8);
            if n == 8 || !b"CONNECT "[..n].eq(&head[..n]) {
                break;
            }
        }
        if !head.starts_with(b"CONNECT ") {
            let replay = PrefixStream::new(stream, head.freeze());
            return crate::connect::http1::serve_http1(
                &self.proxy,
                &self.policy,
                Box::new(replay),
                deadline,
                shutdown,
            )
            .await;
        }
        // Boxed: inline, the tunnel's state would be part of every connection's future, about
        // 5 KiB for each idle keep-alive connection that never sends CONNECT
        // (docs/performance.md, "Memory").
        Box::pin(self.tunnel(stream, head, deadline, &conn, shutdown)).await;
        None
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

impl GatewayApp {
    /// A connection over its client's `connections` limit: HTTP/1 gets a raw `429` and is
    /// closed; HTTP/2 (which raw bytes cannot answer) goes to the proxy marked
    /// [`OverLimit`], whose requests are answered `429`, and is closed after
    /// [`OVER_LIMIT_H2_GRACE`].
    async fn over_limit(
        self: &Arc<Self>,
        mut stream: Stream,
        limited: &Limited,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if !matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            // A tarpit (`limits::client::TARPIT_RELEASES_PER_SECOND`): a client that reconnects
            // as soon as it is refused would otherwise make the gateway do a TLS handshake (the
            // identity is only known after one) per refusal, as fast as it can, on the CPU
            // other clients are served with. The connection stays counted under the
            // gateway-wide `connections` limit meanwhile.
            refuse_over_limit(&mut stream, limited, shutdown).await;
            return None;
        }
        let Ok(marked) = PrefixStream::with_mark(stream, Box::new(OverLimit)) else {
            return None;
        };
        let served = self.proxy.process_new(Box::new(marked), shutdown);
        let _ = tokio::time::timeout(OVER_LIMIT_H2_GRACE, served).await;
        None
    }
}

/// Admits a connection under its client's `connections` limit (the client known by its
/// certificate, or its source address).
fn admit_connection(policy: &Policy, stream: &Stream) -> Result<ConnectionUse, Limited> {
    let ssl = stream.get_ssl_digest();
    let identity = ssl
        .as_ref()
        .and_then(|d| d.extension.get::<ClientIdentity>());
    let peer = stream
        .get_socket_digest()
        .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
    crate::limits::client::admit_connection(policy, identity, peer)
}

/// A `429` written raw for a connection or `CONNECT` over a client limit (pre-built bytes),
/// when the client's tarpit says (or at once when the gateway shuts down).
async fn refuse_over_limit(stream: &mut Stream, limited: &Limited, shutdown: &ShutdownWatch) {
    crate::limits::client::tarpit(limited.answer_at, Some(shutdown)).await;
    crate::metrics::refusal(Reason::ClientLimit);
    let _ = stream.write_all(refusal_bytes(limited)).await;
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
}

/// A refusal written on the raw connection (before any tunnel exists).
async fn refuse(stream: &mut Stream, status: u16, reason: Reason, message: &str) {
    crate::metrics::refusal(reason);
    let phrase = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        501 => "Not Implemented",
        _ => "Error",
    };
    let body = format!("slapenir: {message}\n");
    let resp = format!(
        "HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nX-Slapenir-Refusal: {reason}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(resp.as_bytes()).await;
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
}

/// The parsed `CONNECT` head: target and the bytes the client sent after it.
struct ConnectHead {
    host: String,
    port: u16,
    rest: Bytes,
}

async fn read_connect_head(
    stream: &mut Stream,
    mut buf: BytesMut,
) -> Result<ConnectHead, &'static str> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let target = req.path.ok_or("CONNECT without a target")?;
                let (host, port) = target
                    .rsplit_once(':')
                    .ok_or("CONNECT target must be host:port")?;
                let port: u16 = port.parse().map_err(|_| "CONNECT target has a bad port")?;
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let host = host.trim_end_matches('.').to_ascii_lowercase();
                if host.is_empty()
                    || !host.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':')
                    })
                {
                    return Err("CONNECT target has a bad host");
                }
                let rest = buf.split_off(len).freeze();
                return Ok(ConnectHead { host, port, rest });
            }
            Ok(httparse::Status::Partial) => {}
            Err(_) => return Err("malformed CONNECT request"),
        }
        if buf.len() > MAX_HEAD {
            return Err("CONNECT head too large");
        }
        match tokio::time::timeout(HEAD_TIMEOUT, stream.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return Err("connection closed during the CONNECT head"),
        }
    }
}

impl GatewayApp {
    async fn tunnel(
        self: &Arc<Self>,
        mut stream: Stream,
        buf: BytesMut,
        deadline: Option<tokio::time::Instant>,
        conn: &ConnectionUse,
        shutdown: &ShutdownWatch,
    ) {
        let deadline = crate::connect::http1::head_wait(&self.policy, &mut { deadline });
        let head = match tokio::time::timeout_at(deadline, read_connect_head(&mut stream, buf))
            .await
            .unwrap_or(Err("the CONNECT head took too long"))
        {
            Ok(h) => h,
            Err(msg) => return refuse(&mut stream, 400, Reason::BadRequest, msg).await,
        };
        let identity = stream
            .get_ssl_digest()
            .and_then(|d| d.extension.get::<ClientIdentity>().cloned());
        let policy = self.policy.load_full();
        if !policy.has_connect_route(&head.host, head.port) {
            let msg = format!(
                "no route for `{}:{}`: this gateway only opens tunnels to configured APIs",
                head.host, head.port
            );
            crate::audit::log_tunnel_refusal(&head.host, identity.as_ref(), Reason::NoRoute);
            return refuse(&mut stream, 403, Reason::NoRoute, &msg).await;
        }
        // Held until the tunnel closes; refused before `200`.
        let _tunnel = match conn.open_tunnel(&policy) {
            Ok(hold) => hold,
            Err(limited) => {
                crate::audit::log_tunnel_refusal(
                    &head.host,
                    identity.as_ref(),
                    Reason::ClientLimit,
                );
                return refuse_over_limit(&mut stream, &limited, shutdown).await;
            }
        };
        let Some(minter) = self.minter.clone() else {
            crate::audit::log_tunnel_refusal(
                &head.host,
                identity.as_ref(),
                Reason::ConnectUnsupported,
            );
            return refuse(
                &mut stream,
                501,
                Reason::ConnectUnsupported,
                "CONNECT needs TLS interception, which this gateway has not configured (`interception` in the config)",
            )
            .await;
        };
        let leaf = match minter.leaf_for(&head.host).await {
            Ok(l) => l,
            Err(e) => {
                log::error!("tunnel to `{}`: {e}", head.host);
                return refuse(
                    &mut stream,
                    500,
                    Reason::Internal,
                    "cannot open a tunnel to this host",
                )
                .await;
            }
        };
        if stream
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await
            .is_err()
            || stream.flush().await.is_err()
        {
            return;
        }
        let config = match tunnel_tls_config(&head.host, leaf) {
            Ok(c) => c,
            Err(e) => {
                log::error!("tunnel to `{}`: {e}", head.host);
                return;
            }
        };
        let acceptor = Acceptor::from_server_config(config);
        let info = TunnelInfo {
            host: head.host.clone(),
            port: head.port,
            identity,
        };
        let Ok(inner) = PrefixStream::with_tunnel(stream, head.rest, info) else {
            return;
        };
        let tls =
            match tokio::time::timeout(TUNNEL_HANDSHAKE_TIMEOUT, acceptor.tls_handshake(inner))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    crate::metrics::refusal(Reason::TunnelHandshakeFailed);
                    log::info!("tunnel to `{}`: TLS handshake refused: {e}", head.host);
                    return;
                }
                Err(_) => {
                    log::info!("tunnel to `{}`: TLS handshake timed out", head.host);
                    return;
                }
            };
        if matches!(tls.selected_alpn_proto(), Some(ALPN::H2)) {
            self.proxy.process_new(Box::new(tls), shutdown).await;
        } else {
            crate::connect::http1::serve_http1(
                &self.proxy,
                &self.policy,
                Box::new(tls),
                None,
                shutdown,
            )
            .await;
        }
    }
}

/// TLS inside a tunnel: the minted leaf, served only to a client hello that names the tunnel's
/// host (or names none); HTTP/2 and HTTP/1.1 by ALPN.
fn tunnel_tls_config(
    host: &str,
    leaf: Arc<CertifiedKey>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = Arc::new(TunnelResolver {
        host: host.to_owned(),
        leaf,
    });
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[derive(Debug)]
struct TunnelResolver {
    host: String,
    leaf: Arc<CertifiedKey>,
}

impl ResolvesServerCert for TunnelResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match hello.server_name() {
            Some(sni) if !sni.trim_end_matches('.').eq_ignore_ascii_case(&self.host) => {
                log::info!(
                    "tunnel to `{}`: refused a TLS client hello for `{sni}` (domain fronting)",
                    self.host
                );
                None
            }
            _ => Some(self.leaf.clone()),
        }
    }
}
