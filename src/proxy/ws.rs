//! WebSocket upgrades: which upgrade requests and `101` answers are allowed, and the glue
//! between the body filters and the frame scanners of [`crate::rewrite::websocket`].
//!
//! How the agent's bytes reach the request body filter (Pingora 0.9.1, read from
//! `pingora-proxy/src/proxy_h1.rs` and `pingora-core`'s v1 server session): an upgrade request
//! must have no body (refused here otherwise), so before the `101` the filter sees only the
//! end of that empty body (`None`, end of stream). Bytes the agent sends early — in the same
//! read as the request head, or while the gateway waits for the upstream — are kept by
//! Pingora's body reader and handed out, first, once the `101` has been written and the
//! reader turns "read until close". From then on every byte is frame data, and `None` with
//! end of stream means the agent closed. So every byte after the request head passes through
//! the agent-side scanner.
//!
//! On the response side, Pingora may run the body filter on the first upgraded chunks before
//! the `101` is written downstream (it filters a batch of tasks, then writes them), so
//! `session.was_upgraded()` is not yet true there; the scanner is set up when the `101` passes
//! `upstream_response_filter` instead, and its presence decides.

use std::sync::Arc;

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::{Error, ErrorType, Result};

use super::{refusal_error, Ctx};
use crate::config::UpstreamId;
use crate::policy::{Policy, RuleSet};
use crate::refusal::{Reason, Refusal};
use crate::rewrite::websocket::{Direction, WsError, WsScanner};

/// The scanners of one WebSocket connection; present in the context of every admitted
/// WebSocket upgrade request.
#[derive(Debug, Default)]
pub struct Streams {
    /// Frames from the agent; set for each upstream attempt.
    up: Option<WsScanner>,
    /// The rules of `up` (WebSocket messages' place, see `config::SwapIn`).
    up_rules: Option<Arc<RuleSet>>,
    /// Frames from the upstream; set when its `101` passes.
    down: Option<WsScanner>,
}

/// Checks an upgrade request (on a route that allows WebSocket): a `GET` with `Upgrade:
/// websocket` and no body.
///
/// # Errors
/// 403 `upgrade_not_allowed` for any other protocol; 400 `bad_request` for another method or a
/// request body (its bytes would be read as frames once upgraded).
pub fn check_request(req: &RequestHeader) -> std::result::Result<(), Refusal> {
    if !is_websocket(req.headers.get_all(http::header::UPGRADE)) {
        return Err(Refusal::new(
            403,
            Reason::UpgradeNotAllowed,
            "only WebSocket upgrades (`Upgrade: websocket`) are allowed; other protocols could not be scanned",
        ));
    }
    let has_body = req.headers.contains_key(http::header::TRANSFER_ENCODING)
        || req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if req.method != http::Method::GET || has_body {
        return Err(Refusal::new(
            400,
            Reason::BadRequest,
            "a WebSocket upgrade is a GET request without a body",
        ));
    }
    Ok(())
}

/// Checks the upstream's `101`: it must switch to plain `websocket`, for a WebSocket request,
/// with no extension (the gateway cannot scan compressed frames; it never offers any).
///
/// # Errors
/// 502 `websocket_handshake_refused`.
pub fn check_101(
    websocket_request: bool,
    resp: &ResponseHeader,
) -> std::result::Result<(), Refusal> {
    let refuse = |why: &str| {
        Err(Refusal::new(
            502,
            Reason::WebsocketHandshakeRefused,
            format!("the upstream's protocol switch was refused: {why}"),
        ))
    };
    if !websocket_request {
        return Err(Refusal::new(
            502,
            Reason::UnsolicitedUpgrade,
            "the upstream switched protocols although the request asked for no upgrade; what follows could not be scanned",
        ));
    }
    if !is_websocket(resp.headers.get_all(http::header::UPGRADE)) {
        return refuse("it is not a switch to `websocket`");
    }
    if resp
        .headers
        .contains_key(http::header::SEC_WEBSOCKET_EXTENSIONS)
    {
        return refuse(
            "it accepts a WebSocket extension (such as compression), which cannot be scanned",
        );
    }
    Ok(())
}

/// Exactly one `Upgrade` value, `websocket` (any case).
fn is_websocket(values: http::header::GetAll<'_, http::HeaderValue>) -> bool {
    let mut it = values.iter();
    matches!((it.next(), it.next()), (Some(v), None) if v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket"))
}

/// Sets up the agent-side scanner for an upstream attempt (again on a retry).
///
/// # Errors
/// An internal error for an unknown upstream.
pub(super) fn start_request(ctx: &mut Ctx, upstream: UpstreamId) -> Result<()> {
    let Some(streams) = ctx.websocket.as_mut() else {
        return Ok(());
    };
    let Some(rules) = ctx.policy.request_rules(upstream, ctx.slot) else {
        return Error::e_explain(ErrorType::InternalError, "unknown upstream");
    };
    let set = Arc::clone(rules.websocket());
    streams.up = Some(WsScanner::new(
        Direction::ToUpstream,
        Arc::clone(&set.rewriter),
    ));
    streams.up_rules = Some(set);
    Ok(())
}

/// Checks a `101` and sets up the upstream-side scanner; does nothing for other statuses.
///
/// # Errors
/// The refusal of [`check_101`], recorded in the context.
pub(super) fn start_response(ctx: &mut Ctx, resp: &ResponseHeader) -> Result<()> {
    if resp.status != http::StatusCode::SWITCHING_PROTOCOLS {
        return Ok(());
    }
    if let Err(refusal) = check_101(ctx.websocket.is_some(), resp) {
        return Err(refusal_error(&mut ctx.refusal, refusal));
    }
    let scanner = WsScanner::new(Direction::ToAgent, Arc::clone(&ctx.policy.response));
    if let Some(streams) = ctx.websocket.as_mut() {
        streams.down = Some(scanner);
    }
    Ok(())
}

/// The request body filter of a WebSocket request: every byte goes through the agent-side
/// scanner. `upgraded` tells the end of the (empty) request body before the `101` from the end
/// of the agent's stream after it.
///
/// # Errors
/// A refusal (recorded in the context) when the scanner refuses: the connection ends.
pub(super) fn request_chunk(
    ctx: &mut Ctx,
    upgraded: bool,
    body: &mut Option<Bytes>,
    end: bool,
) -> Result<()> {
    let Some(streams) = ctx.websocket.as_mut() else {
        return Error::e_explain(ErrorType::InternalError, "no WebSocket streams");
    };
    let res = match streams.up.as_mut() {
        Some(scanner) => scan(scanner, body, end && upgraded).map(|()| &*scanner),
        None => Err(WsError::Protocol("no scanner for the agent's frames")),
    };
    let refused = match res {
        Ok(scanner) if !ctx.denied.is_empty() => {
            // A swap outside the credential's `allow` rules: the frames are dropped unsent.
            ctx.policy.check_allowed(&ctx.denied, &scanner.hits()).err()
        }
        Ok(_) => None,
        Err(e) => Some(refusal(
            &ctx.policy,
            ctx.upstream,
            streams.up_rules.as_deref(),
            Direction::ToUpstream,
            &e,
        )),
    };
    match refused {
        Some(refusal) => Err(refusal_error(&mut ctx.refusal, refusal)),
        None => Ok(()),
    }
}

/// The response body filter once the upstream's `101` has passed: every byte goes through the
/// upstream-side scanner. Returns `false` when this is not an upgraded response.
///
/// # Errors
/// A refusal (recorded in the context) when the scanner refuses: the connection ends.
pub(super) fn response_chunk(ctx: &mut Ctx, body: &mut Option<Bytes>, end: bool) -> Result<bool> {
    let Some(scanner) = ctx.websocket.as_mut().and_then(|s| s.down.as_mut()) else {
        return Ok(false);
    };
    scan(scanner, body, end).map_err(|e| {
        let refusal = refusal(&ctx.policy, ctx.upstream, None, Direction::ToAgent, &e);
        refusal_error(&mut ctx.refusal, refusal)
    })?;
    Ok(true)
}

/// Adds the scanners' replacements to the request's and response's counts.
pub(super) fn merge_hits(ctx: &mut Ctx) {
    if let Some(streams) = ctx.websocket.as_ref() {
        if let Some(s) = streams.up.as_ref() {
            ctx.request_hits.merge(&s.hits());
        }
        if let Some(s) = streams.down.as_ref() {
            ctx.response_hits.merge(&s.hits());
        }
    }
}

/// Runs one chunk through a scanner and puts the frames to send in its place (`None` stays
/// `None`: it ends the stream).
fn scan(
    scanner: &mut WsScanner,
    body: &mut Option<Bytes>,
    finish: bool,
) -> std::result::Result<(), WsError> {
    let mut out = Vec::with_capacity(body.as_ref().map_or(0, |b| b.len()) + 16);
    if let Some(chunk) = body.as_ref() {
        scanner.push(chunk, &mut out)?;
    }
    if finish {
        scanner.finish(&mut out)?;
    }
    if body.is_some() || !out.is_empty() {
        *body = Some(Bytes::from(out));
    }
    Ok(())
}

/// The refusal for a scanner's error: a foreign dummy is refused like anywhere else; a
/// protocol error names the side and the rule it broke.
fn refusal(
    policy: &Policy,
    upstream: Option<UpstreamId>,
    rules: Option<&RuleSet>,
    dir: Direction,
    e: &WsError,
) -> Refusal {
    let side = match dir {
        Direction::ToUpstream => "client",
        Direction::ToAgent => "upstream",
    };
    match e {
        WsError::Refused(r) if dir == Direction::ToUpstream => match rules {
            Some(set) => policy.request_refusal(upstream, set, r),
            None => Refusal::new(500, Reason::Internal, "no rules for the agent's frames"),
        },
        // The response rewriter has no refusing rules; failing is the safe answer if it did.
        WsError::Refused(_) => Refusal::new(500, Reason::Internal, "a response rule refused"),
        WsError::Protocol(what) => Refusal::new(
            match dir {
                Direction::ToUpstream => 400,
                Direction::ToAgent => 502,
            },
            Reason::WebsocketProtocolError,
            format!("WebSocket frames from the {side} refused: {what}"),
        ),
        WsError::Random => Refusal::new(500, Reason::Internal, "no random masking key available"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn req(method: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, b"/ws", None).unwrap();
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    fn resp(headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(101, None).unwrap();
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn upgrade_requests() {
        let ws = ("upgrade", "websocket");
        let cases: &[(&str, RequestHeader, Option<&str>)] = &[
            ("websocket GET", req("GET", &[ws]), None),
            ("any case", req("GET", &[("upgrade", " WebSocket ")]), None),
            (
                "h2c",
                req("GET", &[("upgrade", "h2c")]),
                Some("upgrade_not_allowed"),
            ),
            (
                "two protocols",
                req("GET", &[ws, ("upgrade", "h2c")]),
                Some("upgrade_not_allowed"),
            ),
            (
                "list",
                req("GET", &[("upgrade", "websocket, h2c")]),
                Some("upgrade_not_allowed"),
            ),
            ("POST", req("POST", &[ws]), Some("bad_request")),
            (
                "with a body",
                req("GET", &[ws, ("content-length", "5")]),
                Some("bad_request"),
            ),
            (
                "chunked body",
                req("GET", &[ws, ("transfer-encoding", "chunked")]),
                Some("bad_request"),
            ),
            (
                "empty length",
                req("GET", &[ws, ("content-length", "0")]),
                None,
            ),
        ];
        for (name, r, want) in cases {
            let got = check_request(r).err().map(|e| e.reason.as_str());
            assert_eq!(got, *want, "{name}");
        }
    }

    #[test]
    fn switching_protocols() {
        let ws = ("upgrade", "websocket");
        let cases: &[(&str, bool, ResponseHeader, bool)] = &[
            ("plain websocket", true, resp(&[ws]), true),
            (
                "deflate accepted anyway",
                true,
                resp(&[ws, ("sec-websocket-extensions", "permessage-deflate")]),
                false,
            ),
            ("another protocol", true, resp(&[("upgrade", "h2c")]), false),
            ("no upgrade header", true, resp(&[]), false),
            ("not a websocket request", false, resp(&[ws]), false),
        ];
        for (name, asked, r, ok) in cases {
            let got = check_101(*asked, r);
            assert_eq!(got.is_ok(), *ok, "{name}");
            if let Err(e) = got {
                let want = if *asked {
                    "websocket_handshake_refused"
                } else {
                    "unsolicited_upgrade"
                };
                assert_eq!(e.reason.as_str(), want, "{name}");
            }
        }
    }
}
