//! The audit log: one JSON line per request on standard output — time, request id, identity,
//! route, upstream, method, status, the names of the credentials used in each direction, the
//! refusal reason, bytes and duration. Never a secret, a dummy, a header value, a path or a
//! query: an audit log is read by many people and kept for a long time.

use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::pki::ClientIdentity;
use crate::refusal::{Limit, Reason};

static REQUEST_ID: AtomicU64 = AtomicU64::new(1);

/// What the audit line of a finished request says: names and numbers only, borrowed from the
/// request (the proxy builds it; see `crate::proxy`).
#[derive(Serialize)]
pub struct Request<'a> {
    pub identity: Option<&'a str>,
    pub method: &'a str,
    pub route: Option<&'a str>,
    pub upstream: Option<&'a str>,
    pub status: Option<u16>,
    pub refusal: Option<Reason>,
    pub refused_credential: Option<&'a str>,
    pub credentials_in: Vec<&'a str>,
    /// Dummies forwarded unchanged: found outside the places their credential is swapped in.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub credentials_kept: Vec<&'a str>,
    pub credentials_out: Vec<&'a str>,
    /// The configured client identity whose values were used (credentials with `clients`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<&'a str>,
    pub bytes_in: usize,
    pub bytes_out: usize,
    pub duration_seconds: f64,
    pub error: Option<&'a str>,
}

/// An audit line: when, which request, and what it says.
#[derive(Serialize)]
struct Line<'a, T: Serialize> {
    time: f64,
    request_id: u64,
    #[serde(flatten)]
    what: &'a T,
}

/// Writes the audit line for a finished request.
pub fn log_request(request: &Request<'_>) {
    emit(&Line {
        time: now(),
        request_id: REQUEST_ID.fetch_add(1, Ordering::Relaxed),
        what: request,
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
pub fn log_tunnel_refusal(host: &str, identity: Option<&ClientIdentity>, reason: Reason) {
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
/// (`limit`, a [`crate::refusal::Limit`]) before the proxy saw a request.
pub fn log_overload_refusal(identity: Option<&ClientIdentity>, status: u16, limit: Limit) {
    emit(&serde_json::json!({
        "time": now(),
        "request_id": REQUEST_ID.fetch_add(1, Ordering::Relaxed),
        "identity": identity.and_then(|i| i.name()),
        "status": status,
        "refusal": match status {
            431 => Reason::RequestHeaderTooLarge,
            408 => Reason::RequestTimeout,
            _ => Reason::Overloaded,
        },
        "limit": limit,
    }));
}

/// Writes the audit line for a client limit that refused or slowed something: the client's
/// key (certificate name, or source address on a plain listener), the limit, and how many hits
/// this line stands for (lines are written at most once a second per client).
pub fn log_limited(client: &str, limit: Limit, hits: u64) {
    emit(&serde_json::json!({
        "time": now(),
        "limited": limit,
        "client": client,
        "hits": hits,
    }));
}
