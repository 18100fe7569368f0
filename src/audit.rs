//! The audit log: one JSON line per request on standard output — time, request id, identity,
//! route, upstream, method, status, the names of the credentials used in each direction, the
//! refusal reason, bytes and duration. Never a secret, a dummy, a header value, a path or a
//! query: an audit log is read by many people and kept for a long time.

use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use pingora::proxy::Session;
use pingora::Error;
use serde::Serialize;

use crate::proxy::Ctx;

static REQUEST_ID: AtomicU64 = AtomicU64::new(1);

/// One audit line of a request: borrowed names and numbers, serialized without building a map.
#[derive(Serialize)]
struct RequestLine<'a> {
    time: f64,
    request_id: u64,
    identity: Option<&'a str>,
    method: &'a str,
    route: Option<&'a str>,
    upstream: Option<&'a str>,
    status: Option<u16>,
    refusal: Option<&'a str>,
    refused_credential: Option<&'a str>,
    credentials_in: Vec<&'a str>,
    /// Dummies forwarded unchanged: found outside the places their credential is swapped in.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    credentials_kept: Vec<&'a str>,
    credentials_out: Vec<&'a str>,
    /// The configured client identity whose values were used (credentials with `clients`).
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<&'a str>,
    bytes_in: usize,
    bytes_out: usize,
    duration_seconds: f64,
    error: Option<&'a str>,
}

fn names<'a>(
    hits: impl Iterator<Item = (usize, u64)>,
    name: impl Fn(usize) -> Option<&'a str>,
) -> Vec<&'a str> {
    let mut v: Vec<&str> = hits.filter_map(|(rule, _)| name(rule)).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Writes the audit line for a finished request.
pub fn log_request(session: &Session, e: Option<&Error>, ctx: &Ctx) {
    let policy = ctx.policy();
    let config = &policy.config;
    let upstream = ctx.upstream();
    let credential = |c: usize| config.credentials.get(c).map(|c| c.name.as_str());
    let route = ctx.route().and_then(|r| policy.route_label(r));
    let identity = ctx.identity().and_then(|i| i.name());
    emit(&RequestLine {
        time: now(),
        request_id: REQUEST_ID.fetch_add(1, Ordering::Relaxed),
        identity,
        method: session.req_header().method.as_str(),
        route,
        upstream: upstream
            .and_then(|u| config.upstreams.get(u))
            .map(|u| u.name.as_str()),
        status: ctx.answered_status(session),
        refusal: ctx.refusal().map(|r| r.reason),
        refused_credential: ctx
            .refusal()
            .and_then(|r| r.credential)
            .and_then(credential),
        credentials_in: names(ctx.request_hits().iter(), credential),
        credentials_kept: names(ctx.request_hits().kept(), credential),
        credentials_out: names(ctx.response_hits().iter(), |rule| {
            policy.response_credential_name(rule)
        }),
        client: ctx.client(),
        bytes_in: session.body_bytes_read(),
        bytes_out: session.body_bytes_sent(),
        duration_seconds: ctx.started().elapsed().as_secs_f64(),
        error: e.map(|e| e.etype().as_str()),
    });
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

thread_local! {
    /// Each thread's line buffer, kept between lines.
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Writes one line with one `write`; a failed write (closed stdout) is not the request's
/// problem.
fn emit(line: &impl Serialize) {
    LINE.with_borrow_mut(|buf| {
        buf.clear();
        if serde_json::to_writer(&mut *buf, line).is_err() {
            return;
        }
        buf.push(b'\n');
        let _ = std::io::stdout().lock().write_all(buf);
    });
}

/// Writes the audit line for a `CONNECT` refused before any tunnel was opened.
pub fn log_tunnel_refusal(host: &str, identity: Option<&crate::tls::ClientIdentity>, reason: &str) {
    emit(&serde_json::json!({
        "time": now(),
        "request_id": REQUEST_ID.fetch_add(1, Ordering::Relaxed),
        "identity": identity.and_then(|i| i.name()),
        "method": "CONNECT",
        "tunnel": host,
        "refusal": reason,
    }));
}

/// Writes the audit line for a connection or request head refused by a gateway-wide limit
/// (`limit`, one of `crate::limits::LIMITS`) before the proxy saw a request.
pub fn log_overload_refusal(
    identity: Option<&crate::tls::ClientIdentity>,
    status: u16,
    limit: &str,
) {
    emit(&serde_json::json!({
        "time": now(),
        "request_id": REQUEST_ID.fetch_add(1, Ordering::Relaxed),
        "identity": identity.and_then(|i| i.name()),
        "status": status,
        "refusal": match status {
            431 => "request_header_too_large",
            408 => "request_timeout",
            _ => "overloaded",
        },
        "limit": limit,
    }));
}

/// Writes the audit line for a client limit that refused or slowed something: the client's
/// key (certificate name, or source address on a plain listener), the limit, and how many hits
/// this line stands for (lines are written at most once a second per client).
pub fn log_limited(client: &str, limit: &str, hits: u64) {
    emit(&serde_json::json!({
        "time": now(),
        "limited": limit,
        "client": client,
        "hits": hits,
    }));
}
