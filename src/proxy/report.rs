//! What a finished request leaves behind: its metrics and its audit line (names and numbers,
//! never a value).

use super::*;

/// Counts the finished request: status class, duration, bytes, swaps, refusal.
pub(super) fn record_metrics(session: &Session, ctx: &Ctx) {
    metrics::in_flight(-1);
    let config = &ctx.policy.config;
    let route = ctx
        .route
        .and_then(|r| ctx.policy.route_label(r))
        .unwrap_or("none");
    let upstream = ctx
        .upstream
        .and_then(|u| config.upstream(u))
        .map_or("none", |u| u.name.as_str());
    metrics::request_done(
        route,
        upstream,
        ctx.answered_status(session),
        ctx.started.elapsed().as_secs_f64(),
    );
    metrics::body_bytes("in", session.body_bytes_read());
    metrics::body_bytes("out", session.body_bytes_sent());
    if let Some(r) = &ctx.refusal {
        metrics::refusal(r.reason);
    }
    let client = ctx.policy.client_name(ctx.slot).unwrap_or("");
    for (rule, n) in ctx.request_hits.iter() {
        if let Some(c) = ctx.policy.hit_credential(rule) {
            metrics::replacements(&c.name, client, "request", n);
            metrics::credential_used(&c.name, client);
        }
    }
    for (rule, n) in ctx.request_hits.kept() {
        if let Some(c) = ctx.policy.hit_credential(rule) {
            metrics::misplaced(&c.name, n);
        }
    }
    for (rule, n) in ctx.response_hits.iter() {
        // Named by credential, retired values included (`Policy::response_credential_name`).
        if let Some(name) = ctx.policy.response_credential_name(rule) {
            metrics::replacements(name, "", "response", n);
            metrics::credential_used(name, "");
        }
    }
}

impl Ctx {
    /// The status the agent got: the response written, or the refusal's.
    fn answered_status(&self, session: &Session) -> Option<u16> {
        session
            .response_written()
            .map(|r| r.status.as_u16())
            .or_else(|| self.refusal.as_ref().map(|r| r.status))
    }
}

/// The audit line of a finished request: names and numbers, never a value.
pub(super) fn audit_line<'a>(
    session: &'a Session,
    e: Option<&Error>,
    ctx: &'a Ctx,
) -> audit::Request<'a> {
    let policy = &ctx.policy;
    let config = &policy.config;
    let credential = |c: usize| config.credentials.get(c).map(|c| c.name.as_str());
    audit::Request {
        identity: ctx.identity.as_ref().and_then(|i| i.name()),
        method: session.req_header().method.as_str(),
        route: ctx.route.and_then(|r| policy.route_label(r)),
        upstream: ctx
            .upstream
            .and_then(|u| config.upstream(u))
            .map(|u| u.name.as_str()),
        status: ctx.answered_status(session),
        refusal: ctx.refusal.as_ref().map(|r| r.reason),
        refused_credential: ctx
            .refusal
            .as_ref()
            .and_then(|r| r.credential)
            .and_then(credential),
        credentials_in: names(ctx.request_hits.iter(), credential),
        credentials_kept: names(ctx.request_hits.kept(), credential),
        credentials_out: names(ctx.response_hits.iter(), |rule| {
            policy.response_credential_name(rule)
        }),
        client: policy.client_name(ctx.slot),
        bytes_in: session.body_bytes_read(),
        bytes_out: session.body_bytes_sent(),
        duration_seconds: ctx.started.elapsed().as_secs_f64(),
        error: e.map(|e| e.etype().as_str()),
    }
}

/// The names of the credentials behind `hits`, sorted, each once.
fn names<'a>(
    hits: impl Iterator<Item = (usize, u64)>,
    name: impl Fn(usize) -> Option<&'a str>,
) -> Vec<&'a str> {
    let mut v: Vec<&str> = hits.filter_map(|(rule, _)| name(rule)).collect();
    v.sort_unstable();
    v.dedup();
    v
}
