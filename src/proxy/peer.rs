//! How the gateway connects to an upstream: address, TLS with SNI and verification (system
//! roots plus the upstream's extra CA), HTTP version and timeouts. Connections are pooled by
//! Pingora; the pool key includes the upstream's name so that upstreams with different trust
//! roots never share a connection.
//!
//! Before it gets a peer, a request takes one of its upstream's `max_connections` slots and
//! holds it until it ends: at most that many requests use the upstream at once, so the gateway
//! holds at most that many connections to it (in use, or idle in the keep-alive pool and reused
//! before any new one is opened). For an HTTP/2 upstream a slot is a stream. Beyond the cap a
//! request waits up to the upstream's `connect_timeout`, then is refused with `503
//! upstream_busy`. Addresses come from the DNS cache ([`crate::dns`]), and a failed connection
//! moves the retry to the next one.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use std::sync::LazyLock;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};

use crate::config::{Dns, HttpVersion, Upstream};
use crate::dns::Addresses;
use crate::metrics;
use crate::pki::upstream::UpstreamTls;
use crate::refusal::{Reason, Refusal};

/// A request's hold on its upstream, kept in the request context across Pingora's retries: its
/// slot under `max_connections`, the addresses the name resolved to, and how many of them a
/// connection has failed to.
#[derive(Default)]
pub struct Hold {
    slot: Option<Slot>,
    addresses: Option<Addresses>,
    failed: usize,
}

/// Why no peer could be chosen.
pub enum Unavailable {
    /// Every `max_connections` slot stayed taken for the upstream's whole `connect_timeout`.
    Busy(Refusal),
    /// The host name did not resolve.
    Error(Box<Error>),
}

/// The peer for one request (or one retry of it) to `up`: waits for a slot under the
/// upstream's `max_connections`, takes the addresses from the DNS cache ([`crate::dns`]), and
/// picks the next address after each failed connection.
///
/// # Errors
/// [`Unavailable::Busy`] after waiting `connect_timeout` for a slot; [`Unavailable::Error`] when
/// the host cannot be resolved.
pub async fn choose(
    up: &Upstream,
    tls: Option<&UpstreamTls>,
    dns: &Arc<Dns>,
    hold: &mut Hold,
) -> Result<Box<HttpPeer>, Unavailable> {
    if hold.slot.is_none() {
        hold.slot = Some(slot(up).await.ok_or_else(|| Unavailable::Busy(busy(up)))?);
    }
    let addresses = match &hold.addresses {
        Some(a) => a.clone(),
        None => {
            let a = crate::dns::global()
                .addresses(&up.name, &up.host, dns)
                .await
                .map_err(|m| {
                    Unavailable::Error(Error::explain(ErrorType::ConnectNoRoute, m).into_up())
                })?;
            hold.addresses = Some(a.clone());
            a
        }
    };
    let ip = addresses
        .get(hold.failed)
        .or_else(|| addresses.get(0))
        .ok_or_else(|| {
            Unavailable::Error(
                Error::explain(
                    ErrorType::ConnectNoRoute,
                    format!("upstream `{}` resolves to no address", up.name),
                )
                .into_up(),
            )
        })?;
    Ok(build(up, SocketAddr::new(ip, up.port), tls))
}

/// After a failed connection: the next attempt goes to the next address, and when there is one
/// the error is marked for retry (nothing was sent yet, so any request may be retried).
pub fn connect_failed(hold: &mut Hold, e: &mut Error) {
    hold.failed += 1;
    let another = hold
        .addresses
        .as_ref()
        .is_some_and(|a| a.get(hold.failed).is_some());
    let l4 = matches!(
        e.etype(),
        ErrorType::ConnectRefused
            | ErrorType::ConnectTimedout
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectError
    );
    if another && l4 {
        e.set_retry(true);
    }
}

/// The refusal for a request that found no free slot.
fn busy(up: &Upstream) -> Refusal {
    Refusal::new(
        503,
        Reason::UpstreamBusy,
        format!(
            "upstream `{}` has all its {} connections in use; retry later",
            up.name, up.max_connections
        ),
    )
}

/// One of an upstream's `max_connections` slots, held by a request until it ends (so that the
/// connection it used is back in Pingora's keep-alive pool, or closed, before another request
/// may open one).
struct Slot {
    _permit: OwnedSemaphorePermit,
    upstream: Arc<str>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::upstream_in_use(&self.upstream, -1);
    }
}

/// The slots of one upstream. Kept across reloads (by upstream name), so that a reload changing
/// `max_connections` counts the requests already in flight: raising the cap adds slots at
/// once; lowering it takes slots away as the requests holding them end.
struct Limiter {
    name: Arc<str>,
    slots: Arc<Semaphore>,
    cap: Mutex<usize>,
}

static LIMITERS: LazyLock<Mutex<HashMap<String, Arc<Limiter>>>> = LazyLock::new(Default::default);

/// Waits up to `connect_timeout` for one of `up`'s slots.
async fn slot(up: &Upstream) -> Option<Slot> {
    let limiter = limiter(up)?;
    let permit = tokio::time::timeout(up.connect_timeout, limiter.slots.clone().acquire_owned())
        .await
        .ok()?
        .ok()?;
    metrics::upstream_in_use(&limiter.name, 1);
    Some(Slot {
        _permit: permit,
        upstream: limiter.name.clone(),
    })
}

/// `up`'s limiter, made on first use. Only [`configure`] resizes it: a request still holding
/// the policy from before a reload must not set the old cap again.
fn limiter(up: &Upstream) -> Option<Arc<Limiter>> {
    let mut all = LIMITERS.lock().ok()?;
    Some(
        all.entry(up.name.clone())
            .or_insert_with(|| {
                Arc::new(Limiter {
                    name: Arc::from(up.name.as_str()),
                    slots: Arc::new(Semaphore::new(up.max_connections)),
                    cap: Mutex::new(up.max_connections),
                })
            })
            .clone(),
    )
}

/// Sets `up`'s limiter to its `max_connections`: raising it adds slots at once, lowering it
/// takes free slots at once and the others as the requests holding them end.
fn resize(up: &Upstream) {
    let Some(limiter) = limiter(up) else { return };
    let Ok(mut cap) = limiter.cap.lock() else {
        return;
    };
    let (old, new) = (*cap, up.max_connections);
    if old == new {
        return;
    }
    *cap = new;
    log::info!("upstream `{}`: max_connections {old} -> {new}", up.name);
    if new > old {
        limiter.slots.add_permits(new - old);
        return;
    }
    let owed = (old - new) - limiter.slots.forget_permits(old - new);
    let Ok(owed) = u32::try_from(owed) else {
        return;
    };
    if owed == 0 {
        return;
    }
    let slots = limiter.slots.clone();
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(async move {
                if let Ok(p) = slots.acquire_many_owned(owed).await {
                    p.forget();
                }
            });
        }
        Err(_) => log::warn!(
            "upstream `{}`: {owed} slots above the new max_connections stay until a restart",
            up.name
        ),
    }
}

/// Applies a (re)loaded configuration to the state kept across reloads: each upstream's
/// `max_connections` (requests in flight keep their slots) and the DNS cache's settings and
/// names ([`crate::dns::Resolver::configure`]). Call it once the new policy is stored.
pub fn configure(config: &crate::config::Config) {
    for up in &config.upstreams {
        resize(up);
    }
    crate::dns::global().configure(config);
}

/// How many of upstream `name`'s `max_connections` slots requests hold now (0 before its first
/// request).
pub fn in_use(name: &str) -> usize {
    let Some(limiter) = LIMITERS.lock().ok().and_then(|all| all.get(name).cloned()) else {
        return 0;
    };
    let cap = limiter.cap.lock().map_or(0, |c| *c);
    cap.saturating_sub(limiter.slots.available_permits())
}

/// The peer for `up` at `addr`.
pub fn build(up: &Upstream, addr: SocketAddr, tls: Option<&UpstreamTls>) -> Box<HttpPeer> {
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
    Box::new(peer)
}
