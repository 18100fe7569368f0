//! Gateway-wide overload protection: what the agents' listener as a whole accepts, whoever the
//! client is (`limits:` keys `connections`, `fd_reserve`, `header_bytes`, `headers` and the
//! timeouts). Per-client limits live elsewhere.
//!
//! - Connections: every agent connection is [`admit`]ted after its TLS handshake (the 503 needs
//!   a channel the client can read) and counted while it lives. Beyond `connections` open, or
//!   while fewer than `fd_reserve` descriptors remain under `RLIMIT_NOFILE`, it is answered
//!   `503` with `Retry-After` and closed (by the listener); open connections are untouched.
//! - Descriptors: [`raise_nofile`] lifts the soft limit to the hard one at start; a background
//!   thread counts `/proc/self/fd` off the request path, and admission adds the connections
//!   admitted since the last count (each may bring an upstream socket).
//! - HTTP/1 request heads: bounded by the listener's keep-alive loop
//!   (`crate::connect::http1`), which reads each head itself before Pingora does.
//! - HTTP/2 (where Pingora owns the connection): the header list is bounded by the HTTP/2
//!   settings ([`h2_options`]: the h2 library answers `431` past it); a connection with no
//!   stream open is closed after `idle_timeout` ([`h2_server_options`]); [`on_request`] applies
//!   the current `header_bytes`/`headers` and `send_timeout` per request.
//! - `request_timeout`: [`body_deadline`], from the request body filter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};
use serde_json::{json, Value};

use crate::config::limits::Limits;
use crate::policy::Policy;
use crate::refusal::{Limit, Reason, Refusal};

/// The metric label of gateway-wide limits.
pub const GATEWAY: &str = "gateway";
/// How often the descriptors in use are counted.
const FD_SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Descriptors one admitted connection may add before the next count: its own socket and
/// one upstream socket.
const FDS_PER_CONNECTION: u64 = 2;
/// `Retry-After` on a shed connection, in seconds.
pub const RETRY_AFTER: u32 = 1;

/// Agent connections open now (admitted, not yet closed).
static OPEN: AtomicU64 = AtomicU64::new(0);
/// Descriptors in use at the last count, and `OPEN` then.
static FDS_SAMPLED: AtomicU64 = AtomicU64::new(0);
static OPEN_AT_SAMPLE: AtomicU64 = AtomicU64::new(0);
/// `RLIMIT_NOFILE` as found and as raised.
static NOFILE: OnceLock<Nofile> = OnceLock::new();
/// The soft `RLIMIT_NOFILE` at the last count (another process may change it: `prlimit`).
static FDS_LIMIT: AtomicU64 = AtomicU64::new(u64::MAX);

/// `RLIMIT_NOFILE` at start: the soft limit found, the one now in force, and the hard limit.
#[derive(Debug, Clone, Copy)]
pub struct Nofile {
    pub soft_before: u64,
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, logs both, and starts counting the
/// descriptors in use. Call once at start.
pub fn raise_nofile() -> Nofile {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    let soft_before = now.current.unwrap_or(u64::MAX);
    let hard = now.maximum.unwrap_or(u64::MAX);
    let soft = if soft_before < hard {
        let raised = Rlimit {
            current: now.maximum,
            maximum: now.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => hard,
            Err(e) => {
                log::warn!("cannot raise the descriptor limit from {soft_before} to {hard}: {e}");
                soft_before
            }
        }
    } else {
        soft_before
    };
    log::info!("file descriptors: limit {soft} (soft, was {soft_before}), hard limit {hard}");
    let n = Nofile {
        soft_before,
        soft,
        hard,
    };
    let _ = NOFILE.set(n);
    FDS_LIMIT.store(soft, Ordering::Relaxed);
    start_fd_count();
    n
}

fn start_fd_count() {
    let spawned = std::thread::Builder::new()
        .name("fd-count".into())
        .spawn(|| loop {
            let open = OPEN.load(Ordering::Relaxed);
            let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
            FDS_LIMIT.store(limit.current.unwrap_or(u64::MAX), Ordering::Relaxed);
            if let Some(n) = count_fds() {
                FDS_SAMPLED.store(n, Ordering::Relaxed);
                OPEN_AT_SAMPLE.store(open, Ordering::Relaxed);
            }
            std::thread::sleep(FD_SAMPLE_EVERY);
        });
    if let Err(e) = spawned {
        log::warn!("descriptors in use will not be counted: {e}");
    }
}

/// Descriptors open in this process (`/proc/self/fd`, less the one reading it).
fn count_fds() -> Option<u64> {
    let n = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(n.saturating_sub(1))
}

/// Descriptors in use now, by the last count and the connections admitted since.
pub fn fds_in_use() -> u64 {
    let since = OPEN
        .load(Ordering::Relaxed)
        .saturating_sub(OPEN_AT_SAMPLE.load(Ordering::Relaxed));
    FDS_SAMPLED.load(Ordering::Relaxed) + since * FDS_PER_CONNECTION
}

/// An admitted connection; counted until dropped.
#[derive(Debug)]
pub struct Admitted(());

impl Drop for Admitted {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Admits one more agent connection, or names the limit it would break
/// (`total_connections`, `file_descriptors`).
///
/// # Errors
/// The limit it hit; the connection is not counted.
pub fn admit(policy: &ArcSwap<Policy>) -> Result<Admitted, Limit> {
    let (connections, reserve) = {
        let p = policy.load();
        (
            u64::from(p.config.limits.connections),
            u64::from(p.config.limits.fd_reserve),
        )
    };
    let open = OPEN.fetch_add(1, Ordering::Relaxed) + 1;
    let admitted = Admitted(());
    if open > connections {
        return Err(Limit::TotalConnections);
    }
    if FDS_LIMIT
        .load(Ordering::Relaxed)
        .saturating_sub(fds_in_use())
        < reserve
    {
        return Err(Limit::FileDescriptors);
    }
    Ok(admitted)
}

/// Agent connections open now (admitted by [`admit`], not yet closed).
pub fn open_connections() -> u64 {
    OPEN.load(Ordering::Relaxed)
}

/// HTTP/2 settings for the agents' listener: the header list bounded by `header_bytes` (the h2
/// library answers `431` beyond it). Read at start; [`on_request`] applies a reloaded value.
pub fn h2_options(limits: &Limits) -> pingora::protocols::http::v2::server::H2Options {
    let mut o = pingora::protocols::http::v2::server::default_h2_options();
    o.max_header_list_size(u32::try_from(limits.header_bytes).unwrap_or(u32::MAX));
    o
}

/// The HTTP/2 connection loop's options: an agent's HTTP/2 connection with no stream open is
/// closed after `idle_timeout`, as an idle HTTP/1 one is. Read at start (Pingora takes them
/// when the proxy is built).
pub fn h2_server_options(limits: &Limits) -> pingora::apps::HttpServerOptions {
    let mut o = pingora::apps::HttpServerOptions::default();
    o.h2_idle_timeout = Some(limits.idle_timeout);
    o
}

/// Per request, from `request_filter`: the head limits for HTTP/2 (HTTP/1 heads were checked
/// by `crate::connect::http1::serve_http1`), and the write timeout.
///
/// # Errors
/// A `431` refusal for a head over `header_bytes` or `headers`.
pub fn on_request(session: &mut Session, limits: &Limits) -> Result<(), Refusal> {
    session
        .downstream_session
        .set_write_timeout(Some(limits.send_timeout));
    if !session.is_http2() {
        return Ok(());
    }
    let req = session.req_header();
    let count = req.headers.len();
    let bytes: usize = req.uri.to_string().len()
        + req
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    let limit = if count > limits.headers as usize {
        Limit::Headers
    } else if bytes as u64 > limits.header_bytes {
        Limit::HeaderBytes
    } else {
        return Ok(());
    };
    crate::metrics::limited(GATEWAY, limit);
    Err(Refusal {
        status: 431,
        reason: Reason::RequestHeaderTooLarge,
        message: "the request head is larger than this gateway accepts".into(),
        credential: None,
    })
}

/// From the request body filter: the request (from when its head was read) has taken longer
/// than `request_timeout`.
///
/// # Errors
/// A `408` error; the request is not completed upstream.
pub fn body_deadline(started: Instant, limits: &Limits) -> pingora::Result<()> {
    if started.elapsed() <= limits.request_timeout {
        return Ok(());
    }
    crate::metrics::limited(GATEWAY, Limit::RequestTimeout);
    crate::metrics::refusal(Reason::RequestTimeout);
    Error::e_explain(ErrorType::HTTPStatus(408), "request_timeout")
}

/// From `logging`: counts a request cut by a downstream timeout (`body_idle_timeout` on a
/// read, `send_timeout` on a write).
pub fn count_error(e: Option<&Error>) {
    let Some(e) = e else { return };
    if e.esource() != &ErrorSource::Downstream {
        return;
    }
    match e.etype() {
        ErrorType::ReadTimedout => crate::metrics::limited(GATEWAY, Limit::BodyIdleTimeout),
        ErrorType::WriteTimedout => crate::metrics::limited(GATEWAY, Limit::SendTimeout),
        _ => {}
    }
}

/// The status code for a downstream error: `408` for a body that stopped arriving.
pub fn downstream_status(e: &Error) -> Option<u16> {
    (e.esource() == &ErrorSource::Downstream && e.etype() == &ErrorType::ReadTimedout)
        .then_some(408)
}

/// The `/status` section: the gateway-wide limits and what is in use.
pub fn status(limits: &Limits) -> Value {
    let n = NOFILE.get();
    json!({
        "connections_open": OPEN.load(Ordering::Relaxed),
        "connections_limit": limits.connections,
        "fds_in_use": fds_in_use(),
        "fds_limit": FDS_LIMIT.load(Ordering::Relaxed),
        "fds_hard_limit": n.map(|n| n.hard),
        "fds_limit_at_start": n.map(|n| n.soft_before),
        "fd_reserve": limits.fd_reserve,
        "header_bytes": limits.header_bytes,
        "headers": limits.headers,
        "idle_timeout_ms": limits.idle_timeout.as_millis() as u64,
        "head_timeout_ms": limits.head_timeout.as_millis() as u64,
        "body_idle_timeout_ms": limits.body_idle_timeout.as_millis() as u64,
        "request_timeout_ms": limits.request_timeout.as_millis() as u64,
        "send_timeout_ms": limits.send_timeout.as_millis() as u64,
    })
}
