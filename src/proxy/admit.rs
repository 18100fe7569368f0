//! Admission, the `request_filter` decision: the client's limits, the target and the tunnel's
//! rule, the route and its client list, the upgrade rule, the `allow` rules, AWS signatures
//! (reading a signed body when the signature covers it) and the prepared request. [`admit`]
//! needs no Pingora session and is tested in-process (`steps_tests.rs`).

use super::*;

/// The request as `admit` sees it: its head, the tunnel it came through (`CONNECT`), and
/// whether it asks for an upgrade — all a Pingora session is needed for.
pub(super) struct Incoming<'a> {
    pub(super) req: &'a RequestHeader,
    pub(super) tunnel: Option<&'a TunnelInfo>,
    pub(super) upgrade: bool,
}

/// The client limits of a request (see `limits::client::RequestUse::admit`): the client is the
/// outer connection's identity inside a tunnel, else the connection's, else its address.
pub(super) fn admit_limits(session: &Session, ctx: &mut Ctx) -> std::result::Result<(), Limited> {
    let user_data = session
        .digest()
        .and_then(|d| d.proxy_digest.as_ref())
        .and_then(|p| p.user_data.as_ref());
    let over_limit = user_data.is_some_and(|u| u.is::<OverLimit>());
    let identity = match user_data.and_then(|u| u.downcast_ref::<TunnelInfo>()) {
        Some(tunnel) => tunnel.identity.as_ref(),
        None => ctx.identity.as_ref(),
    };
    let peer = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    ctx.limits.admit(&ctx.policy, identity, peer, over_limit)
}

/// Answers a request refused by a client limit: `429` with `Retry-After`. The caller has held
/// it in the tarpit first, as for connections over the limit
/// (`limits::client::TARPIT_RELEASES_PER_SECOND`): a client that retries at once would
/// otherwise have the gateway answer 429s as fast as it can send (tens of thousands a second
/// from one client in the fairness test), on the CPU other clients are served with; a client
/// that honours `Retry-After` waits at least as long anyway.
pub(super) async fn respond_limited(session: &mut Session, limited: &Limited) {
    let body = Bytes::from_static(limited.body().as_bytes());
    let Ok(mut resp) = ResponseHeader::build(429, Some(5)) else {
        return;
    };
    let _ = resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8");
    let _ = resp.insert_header(http::header::CONTENT_LENGTH, body.len());
    let _ = resp.insert_header(http::header::RETRY_AFTER, limited.retry_after);
    let _ = resp.insert_header("x-slapenir-refusal", "client_limit");
    let _ = resp.insert_header("x-slapenir-limit", limited.limit.as_str());
    if session
        .write_response_header(Box::new(resp), false)
        .await
        .is_ok()
    {
        let _ = session.write_response_body(Some(body), true).await;
    }
}

/// The `request_filter` steps: the target, the tunnel's rule, the route and its client list,
/// the upgrade rule, the `allow` rules, AWS signatures and the prepared request. An AWS-signed
/// request whose signature covers its body comes back as `Some`: it is finished once the body
/// is read ([`finish_aws_with_body`]).
pub(super) fn admit(
    incoming: Incoming<'_>,
    ctx: &mut Ctx,
) -> std::result::Result<Option<aws::Pending>, Refusal> {
    let req = incoming.req;
    let mut target = request::target(req)?;
    if let Some(tunnel) = incoming.tunnel {
        // Inside a CONNECT tunnel: every request must be for the tunnel's target, and the
        // identity is the one from the outer handshake.
        let port_ok = target.port.is_none_or(|p| p == tunnel.port);
        if target.host != tunnel.host || !port_ok {
            return Err(Refusal {
                status: 421,
                reason: Reason::MisdirectedRequest,
                message: format!(
                    "this tunnel is for `{}:{}`; open a new one for `{}`",
                    tunnel.host, tunnel.port, target.host
                ),
                credential: None,
            });
        }
        target.port = Some(tunnel.port);
        ctx.identity = tunnel.identity.clone();
    }
    let path = request::match_path(&target.path_and_query)?;
    let policy = &ctx.policy;
    let (route_idx, route) = policy
        .route(&target.host, target.port, &path)
        .ok_or_else(|| Refusal {
            status: 403,
            reason: Reason::NoRoute,
            message: format!(
                "no route for host `{}`: this gateway only forwards to configured APIs",
                target.host
            ),
            credential: None,
        })?;
    // Known from here on, so refusals below are counted and logged under their route.
    ctx.route = Some(route_idx);
    ctx.upstream = Some(route.upstream);
    if let Some(allowed) = &route.clients {
        // Identities come from client certificates; a plain listener has none.
        let ok = ctx
            .identity
            .as_ref()
            .is_some_and(|id| id.is_any_of(allowed));
        if !ok {
            return Err(Refusal {
                status: 403,
                reason: Reason::ClientNotAllowed,
                message: match ctx.identity.as_ref().and_then(|i| i.name()) {
                    Some(name) => format!("client `{name}` is not allowed on this route"),
                    None => "this route is limited to certain clients, and this connection has no client certificate".into(),
                },
                credential: None,
            });
        }
    }
    if incoming.upgrade && !route.websocket {
        return Err(Refusal {
            status: 403,
            reason: Reason::UpgradeNotAllowed,
            message: "protocol upgrades (WebSocket) are not allowed on this route; its traffic could not be scanned".into(),
            credential: None,
        });
    }
    if incoming.upgrade {
        ws::check_request(req)?;
        ctx.websocket = Some(ws::Streams::default());
    }
    ctx.slot = policy.client_slot(ctx.identity.as_ref());
    ctx.denied = policy.denied_credentials(
        route.upstream,
        req.method.as_str(),
        &path,
        request::query(&target.path_and_query),
    );
    let signed = aws::detect(policy, route.upstream, req, &target.path_and_query)?;
    let (mut prepared, mut hits) = request::prepare(
        policy,
        route.upstream,
        ctx.slot,
        req,
        &target.path_and_query,
    )?;
    if let Err(refusal) = policy.check_allowed(&ctx.denied, &hits) {
        // Counted and logged with the refusal.
        ctx.request_hits = hits;
        return Err(refusal);
    }
    let mut needs_body = None;
    match signed {
        Some(pending) if pending.needs_body() => needs_body = Some(pending),
        Some(pending) => aws::finish(
            policy,
            route.upstream,
            pending,
            req,
            &mut prepared,
            None,
            &mut hits,
        )?,
        None => {}
    }
    ctx.request_hits = hits;
    ctx.prepared = Some(prepared);
    Ok(needs_body)
}

/// Reads the body of an AWS-signed request whose signature covers it (at most
/// [`aws::MAX_SIGNED_BODY`]), then checks and signs it (see [`aws::finish`]).
pub(super) async fn finish_aws_with_body(
    session: &mut Session,
    ctx: &mut Ctx,
    pending: aws::Pending,
) -> std::result::Result<(), Refusal> {
    // Pingora replays a request body it buffered (up to the same limit) to the upstream; the
    // body filter swaps in the prepared one.
    session.as_mut().enable_retry_buffering();
    // A client that asked to wait for `100 Continue` (boto3 does for uploads) sends the body
    // only after it; the upstream copy goes without `Expect` (see `apply_upstream`).
    let expects_continue = session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue && session.as_mut().write_continue_response().await.is_err() {
        return Err(Refusal::new(
            400,
            Reason::BadRequest,
            "the client went away",
        ));
    }
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > aws::MAX_SIGNED_BODY {
                    return Err(Refusal::new(
                        413,
                        Reason::AwsSignedBodyTooLarge,
                        format!(
                            "AWS Signature Version 4: a request signed over its body can be re-signed up to {} KiB; send larger uploads with x-amz-content-sha256: UNSIGNED-PAYLOAD (the S3 default over HTTPS)",
                            aws::MAX_SIGNED_BODY / 1024
                        ),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(_) => {
                return Err(Refusal::new(
                    400,
                    Reason::BadRequest,
                    "the request body could not be read",
                ))
            }
        }
    }
    let (Some(u), Some(prepared)) = (ctx.upstream, ctx.prepared.as_mut()) else {
        return Err(Refusal::new(500, Reason::Internal, "request not admitted"));
    };
    let req = session.req_header();
    aws::finish(
        &ctx.policy,
        u,
        pending,
        req,
        prepared,
        Some(&body),
        &mut ctx.request_hits,
    )
}

/// The tunnel a request arrived through, if it came inside a `CONNECT` tunnel.
pub(super) fn tunnel_info(session: &Session) -> Option<&TunnelInfo> {
    session
        .digest()
        .and_then(|d| d.proxy_digest.as_ref())
        .and_then(|p| p.user_data.as_ref())
        .and_then(|u| u.downcast_ref::<TunnelInfo>())
}

/// The identity from the connection's client certificate, if any.
pub(super) fn client_identity(session: &Session) -> Option<ClientIdentity> {
    session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .and_then(|s| s.extension.get::<ClientIdentity>())
        .cloned()
}
