//! The Pingora `ProxyHttp` implementation. Each hook is a short list of steps; the steps live in
//! `admit` (the `request_filter` decision), [`request`], [`response`], [`peer`], [`aws`] and
//! [`ws`] as plain functions that can be tested without a session; `report` writes what a
//! finished request leaves behind (metrics, the audit line).
//!
//! Phases (Pingora 0.9): `request_filter` (route, access, check dummies — refusals happen here,
//! before any upstream connection) → `upstream_peer` → `upstream_request_filter` (rewrite the
//! upstream copy of the headers and URL) → `request_body_filter` per chunk → concurrently
//! `upstream_response_filter` (scrub headers, set up decoding) → `response_body_filter` per
//! chunk → `logging` (audit line). After a WebSocket `101`, both body filters carry frames,
//! which [`ws`] runs through scanners.
//!
//! The agent's original request header is never modified: Pingora's own error logs print it,
//! and it holds only dummies.

mod admit;
pub mod aws;
pub mod headers;
pub mod peer;
mod report;
pub mod request;
pub mod response;
pub mod ws;

#[cfg(test)]
mod steps_tests;

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::audit;
use crate::config::{RouteId, UpstreamId};
use crate::limits::client::{Limited, OverLimit, RequestUse, Shutdown};
use crate::metrics;
use crate::pki::ClientIdentity;
use crate::policy::Policy;
use crate::refusal::{Reason, Refusal};
use crate::rewrite::{Hits, RewriteStream};
use crate::stream::PrefixStream;
use crate::stream::TunnelInfo;
use admit::{
    admit, admit_limits, client_identity, finish_aws_with_body, respond_limited, tunnel_info,
    Incoming,
};
use report::{audit_line, record_metrics};
use response::{BodyError, BodyScrubber};

/// The gateway: the current policy, swapped atomically on reload.
pub struct Gateway {
    policy: Arc<ArcSwap<Policy>>,
    /// Ends the tarpit of refusals when the server shuts down.
    shutdown: Shutdown,
}

impl Gateway {
    /// A gateway serving `policy` (and whatever is later stored into it).
    pub fn new(policy: Arc<ArcSwap<Policy>>, shutdown: Shutdown) -> Self {
        Self { policy, shutdown }
    }
}

/// Per-request state. It holds the policy snapshot the request started with.
pub struct Ctx {
    policy: Arc<Policy>,
    started: Instant,
    /// The request as it goes upstream, prepared once in `request_filter`.
    prepared: Option<request::Prepared>,
    route: Option<RouteId>,
    upstream: Option<UpstreamId>,
    request_hits: Hits,
    /// What the request body becomes upstream, set up for each upstream attempt.
    request_body: RequestBody,
    response: Option<BodyScrubber>,
    response_hits: Hits,
    refusal: Option<Refusal>,
    identity: Option<ClientIdentity>,
    /// The client slot of `identity` in the policy (see `Policy::client_slot`).
    slot: usize,
    /// Credentials whose `allow:` rules refuse this request: a swap of one is refused.
    denied: Vec<usize>,
    /// When the upstream was chosen (for the upstream duration).
    upstream_started: Option<Instant>,
    /// The response goes to the client chunked (HTTP/1.x).
    chunked_response: bool,
    /// Set for an admitted WebSocket upgrade request: its frame scanners.
    websocket: Option<ws::Streams>,
    /// What the request holds under its client's limits (its `streams` slot, body pacing).
    limits: RequestUse,
    /// The slot under the upstream's `max_connections` and the addresses tried (`peer::Hold`).
    upstream_hold: peer::Hold,
}

/// The request body on its way upstream: the one place that says how it is sent.
enum RequestBody {
    /// Not set up yet (before `upstream_request_filter`), or a WebSocket upgrade: its frames
    /// are scanned by `Ctx::websocket` once upgraded.
    Unset,
    /// The agent's body, streamed through the request rewriter.
    Streamed(RewriteStream),
    /// The whole body prepared in `request_filter` (`Prepared::body`), sent in place of the
    /// agent's; `None` once sent.
    Replaced(Option<Bytes>),
}

impl Ctx {
    fn new(policy: Arc<Policy>) -> Ctx {
        Ctx {
            policy,
            started: Instant::now(),
            prepared: None,
            route: None,
            upstream: None,
            request_hits: Hits::new(),
            request_body: RequestBody::Unset,
            response: None,
            response_hits: Hits::new(),
            refusal: None,
            identity: None,
            slot: 0,
            denied: Vec::new(),
            upstream_started: None,
            chunked_response: false,
            websocket: None,
            limits: RequestUse::default(),
            upstream_hold: peer::Hold::default(),
        }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new(self.policy.load_full())
    }

    /// Runs first: find the target and route, enforce per-route access and the WebSocket rule,
    /// and check every dummy in headers and URL. Any refusal is answered here, before the
    /// gateway connects anywhere.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        metrics::in_flight(1);
        ctx.identity = client_identity(session);
        if let Err(refusal) =
            crate::limits::overload::on_request(session, &ctx.policy.config.limits)
        {
            refuse(session, &mut ctx.refusal, refusal).await;
            return Ok(true);
        }
        if let Err(limited) = admit_limits(session, ctx) {
            self.shutdown.tarpit(limited.answer_at).await;
            respond_limited(session, &limited).await;
            ctx.refusal = Some(Refusal::new(429, Reason::ClientLimit, String::new()));
            return Ok(true);
        }
        let incoming = Incoming {
            req: session.req_header(),
            tunnel: tunnel_info(session),
            upgrade: session.is_upgrade_req(),
        };
        let admitted = match admit(incoming, ctx) {
            Ok(Some(pending)) => finish_aws_with_body(session, ctx, pending).await,
            Ok(None) => Ok(()),
            Err(refusal) => Err(refusal),
        };
        match admitted {
            Ok(()) => Ok(false),
            Err(refusal) => {
                ctx.limits.release();
                refuse(session, &mut ctx.refusal, refusal).await;
                Ok(true)
            }
        }
    }

    /// Where the request goes: the route's upstream, at one of its addresses (`peer::choose`:
    /// waits for a slot under `max_connections`, DNS from the cache).
    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let u = ctx
            .upstream
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no upstream chosen"))?;
        let policy = ctx.policy.clone();
        let up = policy
            .config
            .upstream(u)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "unknown upstream"))?;
        ctx.upstream_started = Some(Instant::now());
        let tls = policy.upstream_tls.get(u.0);
        match peer::choose(up, tls, &policy.config.dns, &mut ctx.upstream_hold).await {
            Ok(peer) => Ok(peer),
            Err(peer::Unavailable::Busy(refusal)) => Err(refusal_error(&mut ctx.refusal, refusal)),
            Err(peer::Unavailable::Error(e)) => {
                upstream_failed(ctx, "connect");
                Err(e)
            }
        }
    }

    /// Counts the connection a request got: newly opened or reused from the pool.
    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(up) = ctx.upstream.and_then(|u| ctx.policy.config.upstream(u)) {
            metrics::upstream_connection(&up.name, reused);
        }
        Ok(())
    }

    /// Counts a failed connection by kind, then keeps Pingora's decision on retrying.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        peer::connect_failed(&mut ctx.upstream_hold, &mut e);
        let kind = match e.etype() {
            ErrorType::ConnectTimedout | ErrorType::TLSHandshakeTimedout => "timeout",
            ErrorType::TLSHandshakeFailure | ErrorType::InvalidCert | ErrorType::HandshakeError => {
                "tls"
            }
            _ => "connect",
        };
        upstream_failed(ctx, kind);
        e
    }

    /// Counts an upstream failure after connecting; retries follow Pingora's default policy
    /// (never for a non-idempotent request or a body too large to replay).
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        if e.esource() == &ErrorSource::Upstream {
            let kind = match e.etype() {
                ErrorType::ReadTimedout | ErrorType::WriteTimedout => "timeout",
                _ => "other",
            };
            upstream_failed(ctx, kind);
        }
        let mut e = e.more_context(format!("Peer: {peer}"));
        if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    /// Rewrites the upstream copy of the request header; resets the body rewriter (this hook
    /// runs again on a retry, and the body is then replayed from the start).
    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let (Some(u), Some(prepared)) = (ctx.upstream, ctx.prepared.as_ref()) else {
            return Error::e_explain(ErrorType::InternalError, "request not admitted");
        };
        let built =
            request::apply_upstream(&ctx.policy, u, prepared, upstream_request).and_then(|()| {
                match &prepared.resign {
                    Some(resign) => aws::sign_upstream(resign, upstream_request),
                    None => Ok(()),
                }
            });
        if let Err(refusal) = built {
            return Err(refusal_error(&mut ctx.refusal, refusal));
        }
        ctx.request_body = match &prepared.body {
            Some(body) => RequestBody::Replaced(Some(body.clone())),
            None if ctx.websocket.is_some() => RequestBody::Unset,
            None => RequestBody::Streamed(prepared.body_rules.rewriter.stream()),
        };
        ws::start_request(ctx, u)
    }

    /// Streams the request body through the rewriter. Bytes of a possibly unfinished dummy are
    /// held back (an empty chunk is sent meanwhile: `None` would end the upstream body).
    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        crate::limits::overload::body_deadline(ctx.started, &ctx.policy.config.limits)?;
        pace_body(body, ctx).await;
        let stream = match &mut ctx.request_body {
            RequestBody::Replaced(replacement) => {
                // The agent's body was read and checked in `request_filter`; Pingora replays
                // it from its buffer, and the prepared body goes in its place.
                *body = match replacement.take() {
                    Some(b) => Some(b),
                    None if end_of_stream => None,
                    None => Some(Bytes::new()),
                };
                return Ok(());
            }
            RequestBody::Unset if ctx.websocket.is_some() => {
                return ws::request_chunk(ctx, session.was_upgraded(), body, end_of_stream);
            }
            RequestBody::Unset => return Ok(()),
            RequestBody::Streamed(stream) => stream,
        };
        let mut out = Vec::with_capacity(body.as_ref().map_or(0, |b| b.len()) + 64);
        let mut result = match body.as_ref() {
            Some(b) => stream.push(b, &mut out),
            None => Ok(()),
        };
        if end_of_stream && result.is_ok() {
            result = stream.finish(&mut out);
        }
        let refusal = match result {
            Err(refused) => ctx.prepared.as_ref().map(|p| {
                ctx.policy
                    .request_refusal(ctx.upstream, &p.body_rules, &refused)
            }),
            // A swap outside the credential's `allow` rules: `out` is dropped unsent.
            Ok(()) => ctx.policy.check_allowed(&ctx.denied, stream.hits()).err(),
        };
        if let Some(refusal) = refusal {
            return Err(refusal_error(&mut ctx.refusal, refusal));
        }
        if body.is_some() || !out.is_empty() {
            *body = Some(Bytes::from(out));
        }
        Ok(())
    }

    /// Scrubs every response head (`1xx` included: they reach the agent too) and, for the final
    /// one, sets up the body scrubber (decoding compressed bodies); refuses an upgrade the
    /// request did not ask for.
    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if upstream_response.status.is_informational()
            && upstream_response.status != http::StatusCode::SWITCHING_PROTOCOLS
        {
            // `1xx` heads (`100 Continue`, `103 Early Hints`...) reach the agent too.
            return response::scrub_head(&ctx.policy, upstream_response, &mut ctx.response_hits)
                .map_err(|refusal| refusal_error(&mut ctx.refusal, refusal));
        }
        if let (Some(started), Some(up)) = (
            ctx.upstream_started.take(),
            ctx.upstream.and_then(|u| ctx.policy.config.upstream(u)),
        ) {
            metrics::upstream_duration(&up.name, started.elapsed().as_secs_f64());
            metrics::upstream_outcome(&up.name, true);
        }
        ws::start_response(ctx, upstream_response)?;
        // The request body's dummies are all known by now or will be; the request hits are
        // final only at the end, so they are read in `logging`.
        let head_request = session.req_header().method == http::Method::HEAD;
        match response::prepare(
            &ctx.policy,
            upstream_response,
            head_request,
            &mut ctx.response_hits,
        ) {
            Ok(scrubber) => {
                ctx.response = scrubber;
                Ok(())
            }
            Err(refusal) => Err(refusal_error(&mut ctx.refusal, refusal)),
        }
    }

    /// Notes whether the response goes to the client chunked (Pingora has settled the framing
    /// by now), for [`Self::response_body_filter`]; gives back the request's `streams` slot
    /// before a final head without a body goes out.
    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if !response.status.is_informational() && has_no_body(session, response) {
            ctx.limits.release();
        }
        ctx.chunked_response = response
            .headers
            .get_all(http::header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"));
        Ok(())
    }

    /// Scrubs each response body chunk as it arrives; SSE events go out at once (a chunk's tail
    /// is held back only when it has the public shape of a needle's start: see
    /// `rewrite::Shape`). Once the end of a chunked response is in hand,
    /// the rest of it leaves the gateway in one write ([`PrefixStream::coalesce_to_end`]).
    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        if end_of_stream {
            // Before the last bytes go out: a client that reads a whole response and at once
            // sends its next request (on another connection) finds the slot free.
            ctx.limits.release();
        }
        if ws::response_chunk(ctx, body, end_of_stream)? {
            return Ok(None);
        }
        if session.was_upgraded() {
            // Fail closed: an upgraded stream without a scanner is never passed on.
            return Error::e_explain(ErrorType::HTTPStatus(502), "upgraded without a scanner");
        }
        if let Some(scrubber) = ctx.response.as_mut() {
            match scrubber.chunk(body, end_of_stream) {
                Ok(()) => {}
                Err(BodyError::Refused(refusal)) => {
                    return Err(refusal_error(&mut ctx.refusal, refusal))
                }
                Err(BodyError::Broken(msg)) => {
                    return Error::e_explain(ErrorType::HTTPStatus(502), msg)
                }
            }
        }
        if end_of_stream
            && ctx.chunked_response
            && let Some(stream) = session
                .downstream_session
                .stream()
                .and_then(|s| s.as_any().downcast_ref::<PrefixStream>())
        {
            stream.coalesce_to_end();
        }
        Ok(None)
    }

    /// Scrubs HTTP/2 trailers (HTTP/1.1 trailers never get here: Pingora discards them). The
    /// body ended without an end-of-stream chunk, so what the body scrubber still holds is
    /// emitted now; when there is any, Pingora writes it as the last body chunk *instead of*
    /// the trailers (its hook has no way to send both), so the trailers are lost rather than the
    /// body's last bytes. Never fails: Pingora forwards trailers unfiltered when this hook errs.
    async fn response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut Ctx,
    ) -> Result<Option<Bytes>> {
        response::scrub_trailers(&ctx.policy, trailers, &mut ctx.response_hits);
        let held = ctx
            .response
            .as_mut()
            .map(BodyScrubber::flush)
            .unwrap_or_default();
        Ok((!held.is_empty()).then_some(held))
    }

    /// Answers a failed request. Refusals get their own status and message; other failures a
    /// generic message — never the error's text, which may describe upstream internals.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let (code, reason, message) = match &ctx.refusal {
            Some(r) => (r.status, Some(r.reason), r.message.clone()),
            None => {
                let code = match e.etype() {
                    _ if crate::limits::overload::downstream_status(e).is_some() => 408,
                    ErrorType::HTTPStatus(c) => *c,
                    _ => match e.esource() {
                        ErrorSource::Upstream => 502,
                        ErrorSource::Downstream => match e.etype() {
                            ErrorType::WriteError
                            | ErrorType::ReadError
                            | ErrorType::ConnectionClosed => 0,
                            _ => 400,
                        },
                        _ => 500,
                    },
                };
                let msg = match code {
                    502 => "the upstream could not be reached or sent an invalid response",
                    504 => "the upstream timed out",
                    _ => "the gateway could not complete the request",
                };
                (code, None, msg.to_string())
            }
        };
        ctx.limits.release();
        // The connection is not reused after a failure: the answer says so (`Connection:
        // close`), so a client never sends its next request into a connection being closed.
        session.set_keepalive(None);
        if code > 0 && session.response_written().is_none() {
            respond(session, code, reason, &message).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// Writes the audit line: names and numbers only, never a secret or a header value.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        // A response that ended without an end-of-stream chunk (upstream error) drops whatever
        // is held back: the body is truncated anyway.
        if let Some(s) = ctx.response.as_ref() {
            ctx.response_hits.merge(s.hits());
        }
        if let RequestBody::Streamed(s) = &ctx.request_body {
            ctx.request_hits.merge(s.hits());
        }
        ws::merge_hits(ctx);
        crate::limits::overload::count_error(e);
        ctx.limits.release();
        // A request refused by a client limit has its own audit line, at most one a second
        // per client (see `limits::client`): a flood must not flood the log.
        if ctx
            .refusal
            .as_ref()
            .is_none_or(|r| r.reason != Reason::ClientLimit)
        {
            audit::log_request(&audit_line(session, e, ctx));
        }
        record_metrics(session, ctx);
    }
}

/// Holds a request body chunk back while the client is over its `body_bytes_per_second`.
async fn pace_body(body: &Option<Bytes>, ctx: &mut Ctx) {
    let n = body.as_ref().map_or(0, Bytes::len);
    let wait = ctx.limits.body_wait(&ctx.policy, n);
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
}

/// Records an upstream failure for the metrics and the status page.
fn upstream_failed(ctx: &Ctx, kind: &'static str) {
    if let Some(up) = ctx.upstream.and_then(|u| ctx.policy.config.upstream(u)) {
        metrics::upstream_error(&up.name, kind);
        metrics::upstream_outcome(&up.name, false);
    }
}

/// Whether a final response head is all there is: the answer to `HEAD`, `204`, `304`, or
/// `Content-Length: 0`. (A body that ends at once without saying so in its head, as an HTTP/2
/// upstream may send, keeps its slot until `logging`.)
fn has_no_body(session: &Session, response: &ResponseHeader) -> bool {
    session.req_header().method == http::Method::HEAD
        || matches!(response.status.as_u16(), 204 | 304)
        || response
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() == b"0")
}

/// Records a refusal (for the answer and the audit line) and turns it into a Pingora error.
fn refusal_error(slot: &mut Option<Refusal>, refusal: Refusal) -> Box<Error> {
    let e = Error::explain(
        ErrorType::HTTPStatus(refusal.status),
        refusal.reason.as_str(),
    );
    *slot = Some(refusal);
    e
}

/// Answers `refusal` and keeps it (in `slot`) for the audit line and the metrics.
async fn refuse(session: &mut Session, slot: &mut Option<Refusal>, refusal: Refusal) {
    respond(
        session,
        refusal.status,
        Some(refusal.reason),
        &refusal.message,
    )
    .await;
    *slot = Some(refusal);
}

/// Writes a small plain-text answer: a refusal (`reason`), or a failure the gateway could not
/// help (`X-Slapenir-Refusal: error`). The message never holds a secret value.
async fn respond(session: &mut Session, status: u16, reason: Option<Reason>, message: &str) {
    let body = Bytes::from(format!("slapenir: {message}\n"));
    let Ok(mut resp) = ResponseHeader::build(status, Some(4)) else {
        return;
    };
    let _ = resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8");
    let _ = resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string());
    // Only where waiting helps: a busy upstream frees a connection within seconds; an
    // unavailable credential does not come back by retrying.
    if reason == Some(Reason::UpstreamBusy) {
        let _ = resp.insert_header(http::header::RETRY_AFTER, "1");
    }
    let _ = resp.insert_header("x-slapenir-refusal", reason.map_or("error", Reason::as_str));
    if let Err(e) = session.write_response_header(Box::new(resp), false).await {
        log::debug!("could not write the refusal header: {e}");
        return;
    }
    if let Err(e) = session.write_response_body(Some(body), true).await {
        log::debug!("could not write the refusal body: {e}");
    }
}
