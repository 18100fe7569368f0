//! The audit log: one JSON line per request on standard output — time, request id, identity,
//! route, upstream, method, status, the names of the credentials used in each direction, the
//! refusal reason, bytes and duration. Never a secret, a dummy, a header value, a path or a
//! query: an audit log is read by many people and kept for a long time.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use pingora::proxy::Session;
use pingora::Error;
use serde_json::json;

use crate::proxy::Ctx;
use crate::rewrite::Hits;

static REQUEST_ID: AtomicU64 = AtomicU64::new(1);

fn names(hits: &Hits, name: impl Fn(usize) -> Option<String>) -> Vec<String> {
    let mut v: Vec<String> = hits.iter().filter_map(|(rule, _)| name(rule)).collect();
    v.sort();
    v.dedup();
    v
}

/// Writes the audit line for a finished request.
pub fn log_request(session: &Session, e: Option<&Error>, ctx: &Ctx) {
    let policy = ctx.policy();
    let config = &policy.config;
    let upstream = ctx.upstream();
    let request_credentials = names(ctx.request_hits(), |rule| {
        let (c, _) = *policy.upstream_rules.get(upstream?)?.rules.get(rule)?;
        config.credentials.get(c).map(|c| c.name.clone())
    });
    let response_credentials = names(ctx.response_hits(), |rule| {
        let c = *policy.response_rules.get(rule)?;
        config.credentials.get(c).map(|c| c.name.clone())
    });
    let route = ctx.route().and_then(|r| policy.route_label(r));
    let status = ctx.answered_status(session);
    let refused_credential = ctx
        .refusal()
        .and_then(|r| r.credential)
        .and_then(|c| config.credentials.get(c))
        .map(|c| c.name.clone());
    emit(json!({
        "time": now(),
        "request_id": REQUEST_ID.fetch_add(1, Ordering::Relaxed),
        "identity": ctx.identity().and_then(|i| i.name()),
        "method": session.req_header().method.as_str(),
        "route": route,
        "upstream": upstream.and_then(|u| config.upstreams.get(u)).map(|u| u.name.as_str()),
        "status": status,
        "refusal": ctx.refusal().map(|r| r.reason),
        "refused_credential": refused_credential,
        "credentials_in": request_credentials,
        "credentials_out": response_credentials,
        "bytes_in": session.body_bytes_read(),
        "bytes_out": session.body_bytes_sent(),
        "duration_seconds": ctx.started().elapsed().as_secs_f64(),
        "error": e.map(|e| e.etype().as_str()),
    }));
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Writes one line; a failed write (closed stdout) is not the request's problem.
fn emit(line: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

/// Writes the audit line for a `CONNECT` refused before any tunnel was opened.
pub fn log_tunnel_refusal(host: &str, identity: Option<&crate::tls::ClientIdentity>, reason: &str) {
    emit(json!({
        "time": now(),
        "request_id": REQUEST_ID.fetch_add(1, Ordering::Relaxed),
        "identity": identity.and_then(|i| i.name()),
        "method": "CONNECT",
        "tunnel": host,
        "refusal": reason,
    }));
}
