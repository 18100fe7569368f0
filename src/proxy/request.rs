//! Request-side steps, free of Pingora's session type: find the target, route it, check every
//! header value and the URL for dummies, and prepare the request that goes upstream.

use pingora::http::RequestHeader;

use http::HeaderValue;

use super::headers::{self, HeaderChanges, HeaderError};
use crate::config::UpstreamId;
use crate::rewrite::encoded;
use std::sync::Arc;

use crate::policy::{Policy, RuleSet, UpstreamRules};
use crate::refusal::{Reason, Refusal};
use crate::rewrite::{Hits, Refused, Rewriter};

/// Where a request is going, as the agent asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Lower case, without brackets or a trailing dot.
    pub host: String,
    /// The port, when the request names one (or implies one by an absolute-form scheme).
    pub port: Option<u16>,
    /// Origin-form path and query (`/v1/models?x=1`), as bytes received.
    pub path_and_query: Vec<u8>,
}

/// Headers that never go upstream: they are for the gateway (or are hop-by-hop).
const DROP_UPSTREAM: &[&str] = &[
    "proxy-authorization",
    "proxy-connection",
    "proxy-authenticate",
    // The agent's offer of WebSocket extensions (permessage-deflate): the gateway scans frames
    // and cannot scan compressed ones; without an offer the upstream may accept none.
    "sec-websocket-extensions",
];

fn refuse(status: u16, reason: Reason, message: impl Into<String>) -> Refusal {
    Refusal::new(status, reason, message)
}

/// Finds the target of a request: absolute-form (`HTTP_PROXY`), the HTTP/2 `:authority`, or
/// the `Host` header (gateway mode).
///
/// # Errors
/// A refusal for CONNECT (not supported here), `*` targets, and unparseable hosts.
pub fn target(req: &RequestHeader) -> Result<Target, Refusal> {
    if req.method == http::Method::CONNECT {
        // Reaches the proxy only over HTTP/2 or inside a tunnel; the listener's CONNECT
        // handling is for HTTP/1.1 connections.
        return Err(refuse(
            501,
            Reason::ConnectUnsupported,
            "CONNECT is handled on HTTP/1.1 connections to the gateway only",
        ));
    }
    let raw = req.raw_path();
    if let Some((scheme_default, rest)) = strip_scheme(raw) {
        let end = rest
            .iter()
            .position(|&b| b == b'/' || b == b'?')
            .unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let (host, port) = parse_authority(authority)?;
        let mut path_and_query = Vec::with_capacity(path.len() + 1);
        if !path.starts_with(b"/") {
            path_and_query.push(b'/');
        }
        path_and_query.extend_from_slice(path);
        return Ok(Target {
            host,
            port: Some(port.unwrap_or(scheme_default)),
            path_and_query,
        });
    }
    if !raw.starts_with(b"/") {
        return Err(refuse(
            400,
            Reason::BadRequest,
            "the request target must be a path (`/v1/...`) or an absolute http:// URL",
        ));
    }
    let authority = match req.uri.authority() {
        Some(a) => a.as_str().as_bytes(),
        None => req
            .headers
            .get(http::header::HOST)
            .map(|h| h.as_bytes())
            .ok_or_else(|| refuse(400, Reason::BadRequest, "the request has no Host header"))?,
    };
    let (host, port) = parse_authority(authority)?;
    Ok(Target {
        host,
        port,
        path_and_query: raw.to_vec(),
    })
}

fn strip_scheme(raw: &[u8]) -> Option<(u16, &[u8])> {
    let lower = |n: usize| raw.get(..n).map(|p| p.to_ascii_lowercase());
    if lower(7).as_deref() == Some(b"http://") {
        Some((80, &raw[7..]))
    } else if lower(8).as_deref() == Some(b"https://") {
        Some((443, &raw[8..]))
    } else {
        None
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` → lower-case host and optional port.
fn parse_authority(a: &[u8]) -> Result<(String, Option<u16>), Refusal> {
    let bad = || refuse(400, Reason::BadRequest, "the request names no valid host");
    let s = std::str::from_utf8(a).map_err(|_| bad())?;
    if s.contains('@') {
        return Err(refuse(
            400,
            Reason::BadRequest,
            "user info in the request target is not allowed",
        ));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse::<u16>().map_err(|_| bad())?),
            None if after.is_empty() => None,
            None => return Err(bad()),
        };
        (h, port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p.parse::<u16>().map_err(|_| bad())?)),
            None => (s, None),
        }
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'))
    {
        return Err(bad());
    }
    Ok((host, port))
}

/// The path used for route matching: the path part, with percent-encoded unreserved
/// characters decoded (so `/%61dmin` matches a route for `/admin`).
///
/// # Errors
/// Dot segments (`/../`, `/./`, also encoded) are refused: they would let a path match one
/// route's prefix while the upstream resolves it to another's.
pub fn match_path(path_and_query: &[u8]) -> Result<Vec<u8>, Refusal> {
    let path = path_and_query
        .split(|&b| b == b'?')
        .next()
        .unwrap_or_default();
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        if b == b'%' && i + 2 < path.len() {
            let hex = std::str::from_utf8(&path[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(c) = hex
                && (c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~'))
            {
                out.push(c);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    if out
        .split(|&b| b == b'/')
        .any(|seg| seg == b"." || seg == b"..")
    {
        return Err(refuse(
            400,
            Reason::BadRequest,
            "dot segments (`.` or `..`) are not allowed in the path",
        ));
    }
    Ok(out)
}

/// The agent's request as it will go upstream: path and query, and the header values that
/// change, with dummies already replaced. Computed once in `request_filter` (so refusals
/// happen before any connection) and applied to each upstream attempt.
#[derive(Debug)]
pub struct Prepared {
    pub path_and_query: Vec<u8>,
    pub headers: HeaderChanges,
    /// The whole body to send instead of streaming the agent's through the rewriter: set when
    /// the body had to be read before the header could be made (AWS signatures over the body).
    pub body: Option<bytes::Bytes>,
    /// The rules for the body, chosen by its media type (see [`crate::config::SwapIn`]).
    pub body_rules: Arc<RuleSet>,
    /// An AWS-signed request: signed again once its upstream header is built.
    pub resign: Option<super::aws::Resign>,
}

/// Rewrites header values (and the credentials inside `Basic` values), the path and the query
/// of the agent's request, each place with its rule set (client slot `slot` of `upstream`);
/// returns the replacements made and the dummies kept, by credential.
///
/// # Errors
/// The refusal for the first dummy that may not go to this upstream or this client (403) or
/// whose real value is unavailable (503), a real value sent by the agent (403), a dummy in a
/// header *name* (400), or a rewritten value that is not a valid header value (502).
pub fn prepare(
    policy: &Policy,
    upstream: UpstreamId,
    slot: usize,
    req: &RequestHeader,
    path_and_query: &[u8],
) -> Result<(Prepared, Hits), Refusal> {
    let rules = policy
        .request_rules(upstream, slot)
        .ok_or_else(|| refuse(500, Reason::Internal, "unknown upstream"))?;
    let nowhere = rules.nowhere();
    let mut hits = Hits::new();
    if req
        .headers
        .keys()
        .any(|n| headers::name_matches(&nowhere.rewriter, n, &mut hits))
    {
        return Err(refuse(
            400,
            Reason::PlaceholderInHeaderName,
            "credential placeholders may appear in header values, not header names",
        ));
    }
    let mut headers = headers::rewrite_values_by(
        &req.headers,
        |name| &rules.header(name).rewriter,
        &mut hits,
        true,
    )
    .map_err(|e| match e {
        HeaderError::Refused(name, r) => {
            policy.request_refusal(Some(upstream), rules.header(&name), &r)
        }
        HeaderError::Invalid(name) => refuse(
            502,
            Reason::InvalidHeader,
            format!("a rewritten `{name}` header is not a valid header value"),
        ),
    })?;
    for name in rules.basic_headers() {
        if let Some(set) = rules.basic(name) {
            basic_auth(name, &req.headers, &mut headers, &set.rewriter, &mut hits)
                .map_err(|r| policy.request_refusal(Some(upstream), set, &r))?;
        }
    }
    let path_and_query = rewrite_target(policy, upstream, rules, path_and_query, &mut hits)?;
    let content_type = req.headers.get(http::header::CONTENT_TYPE);
    let body_rules = Arc::clone(rules.body(content_type.map(|v| v.as_bytes())));
    Ok((
        Prepared {
            path_and_query,
            headers,
            body: None,
            body_rules,
            resign: None,
        },
        hits,
    ))
}

/// Rewrites the path with the path's rules and each query parameter's value with its own; the
/// whole target is first checked with the rules that swap nothing, so that no dummy or real
/// value hides across a `&` or `=` from the guards.
fn rewrite_target(
    policy: &Policy,
    upstream: UpstreamId,
    rules: &UpstreamRules,
    target: &[u8],
    hits: &mut Hits,
) -> Result<Vec<u8>, Refusal> {
    let nowhere = rules.nowhere();
    let mut scratch = Hits::new();
    nowhere
        .rewriter
        .rewrite(target, &mut scratch)
        .map_err(|r| policy.request_refusal(Some(upstream), nowhere, &r))?;
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(q) => (&target[..q], Some(&target[q + 1..])),
        None => (target, None),
    };
    let set = rules.path();
    let mut out = set
        .rewriter
        .rewrite(path, hits)
        .map_err(|r| policy.request_refusal(Some(upstream), set, &r))?
        .into_owned();
    let Some(query) = query else { return Ok(out) };
    out.push(b'?');
    for (i, pair) in query.split(|&b| b == b'&').enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], Some(&pair[eq + 1..])),
            None => (pair, None),
        };
        let name_out = nowhere
            .rewriter
            .rewrite(name, hits)
            .map_err(|r| policy.request_refusal(Some(upstream), nowhere, &r))?;
        out.extend_from_slice(&name_out);
        if let Some(value) = value {
            let set = rules.query(name);
            let value_out = set
                .rewriter
                .rewrite(value, hits)
                .map_err(|r| policy.request_refusal(Some(upstream), set, &r))?;
            out.push(b'=');
            out.extend_from_slice(&value_out);
        }
    }
    Ok(out)
}

/// The query of `path_and_query` (after `?`), empty without one.
pub fn query(path_and_query: &[u8]) -> &[u8] {
    path_and_query
        .iter()
        .position(|&b| b == b'?')
        .map_or(&[][..], |q| &path_and_query[q + 1..])
}

/// Rewrites dummies inside `Basic` values of header `name` (see [`encoded::rewrite_basic`]),
/// updating `changes` (which may already hold a literal rewrite of the header).
fn basic_auth(
    name: &http::HeaderName,
    original: &http::HeaderMap,
    changes: &mut HeaderChanges,
    rw: &Rewriter,
    hits: &mut Hits,
) -> Result<(), Refused> {
    let changed = changes.iter().position(|(n, _)| n == name);
    let basic = |v: &HeaderValue| encoded::is_basic(v.as_bytes());
    let any_basic = match changed {
        Some(i) => changes[i].1.iter().any(basic),
        None => original.get_all(name).iter().any(basic),
    };
    if !any_basic {
        // The common case: no allocation.
        return Ok(());
    }
    let current: Vec<HeaderValue> = match changed {
        Some(i) => changes[i].1.clone(),
        None => original.get_all(name).iter().cloned().collect(),
    };
    let mut any = false;
    let mut values = Vec::with_capacity(current.len());
    for v in current {
        match encoded::rewrite_basic(v.as_bytes(), rw, hits)? {
            Some(new) => {
                // Base64 output and the original scheme are always valid header bytes.
                let Ok(mut hv) = HeaderValue::from_bytes(&new) else {
                    values.push(v);
                    continue;
                };
                hv.set_sensitive(true);
                values.push(hv);
                any = true;
            }
            None => values.push(v),
        }
    }
    if any {
        match changed {
            Some(i) => changes[i].1 = values,
            None => changes.push((name.clone(), values)),
        }
    }
    Ok(())
}

/// Applies a [`Prepared`] request to the upstream copy of the header: origin-form target,
/// rewritten values (for headers Pingora still forwards), `Host` set to the upstream, proxy
/// headers removed, identity encoding asked for (so responses can be scanned), and
/// `Content-Length` dropped when the body may change length (the body then goes chunked), or set
/// to the length of a body prepared whole.
///
/// # Errors
/// A refusal when the target or a header cannot be set.
pub fn apply_upstream(
    policy: &Policy,
    upstream: UpstreamId,
    prepared: &Prepared,
    req: &mut RequestHeader,
) -> Result<(), Refusal> {
    let Some(up) = policy.config.upstream(upstream) else {
        return Err(refuse(500, Reason::Internal, "unknown upstream"));
    };
    req.set_raw_path(&prepared.path_and_query)
        .map_err(|_| refuse(400, Reason::BadRequest, "the request target is not valid"))?;
    for name in DROP_UPSTREAM {
        req.remove_header(*name);
    }
    for (name, values) in &prepared.headers {
        // Hop-by-hop headers Pingora already removed stay removed.
        if !req.headers.contains_key(name) {
            continue;
        }
        req.remove_header(name);
        for v in values {
            req.append_header(name.clone(), v.clone())
                .map_err(|_| refuse(502, Reason::InvalidHeader, "cannot set a header"))?;
        }
    }
    req.insert_header(http::header::HOST, up.authority.as_str())
        .map_err(|_| refuse(502, Reason::InvalidHeader, "cannot set Host"))?;
    req.insert_header(http::header::ACCEPT_ENCODING, "identity")
        .map_err(|_| refuse(502, Reason::InvalidHeader, "cannot set Accept-Encoding"))?;
    match &prepared.body {
        Some(body) => {
            // The body was read (and `100 Continue` answered) before the upstream was chosen.
            req.remove_header(&http::header::EXPECT);
            req.remove_header(&http::header::TRANSFER_ENCODING);
            req.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())
                .map_err(|_| refuse(502, Reason::InvalidHeader, "cannot set Content-Length"))?;
        }
        // Only a body whose rules may change its length goes chunked; every other keeps its
        // `Content-Length` (some upstreams, S3 among them, require one).
        None if !prepared.body_rules.length_preserving => {
            req.remove_header(&http::header::CONTENT_LENGTH);
        }
        None => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic, clippy::unwrap_used, clippy::type_complexity)]
    use super::*;

    fn req(method: &str, target: &[u8], host: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build(method, b"/", None).unwrap();
        r.set_raw_path(target).unwrap();
        if let Some(h) = host {
            r.insert_header("host", h).unwrap();
        }
        r
    }

    #[test]
    fn targets() {
        let cases: &[(
            &str,
            &[u8],
            Option<&str>,
            Option<(&str, Option<u16>, &[u8])>,
        )] = &[
            (
                "origin form",
                b"/v1/models?a=1",
                Some("API.OpenAI.com"),
                Some(("api.openai.com", None, b"/v1/models?a=1")),
            ),
            (
                "origin form with port",
                b"/",
                Some("localhost:8080"),
                Some(("localhost", Some(8080), b"/")),
            ),
            (
                "absolute form",
                b"http://api.github.com/user",
                Some("ignored"),
                Some(("api.github.com", Some(80), b"/user")),
            ),
            (
                "absolute form no path",
                b"http://h.example:81?q",
                None,
                Some(("h.example", Some(81), b"/?q")),
            ),
            (
                "absolute form https",
                b"HTTPS://h.example/x",
                None,
                Some(("h.example", Some(443), b"/x")),
            ),
            ("ipv6", b"/", Some("[::1]:9"), Some(("::1", Some(9), b"/"))),
            (
                "trailing dot",
                b"/",
                Some("api.openai.com."),
                Some(("api.openai.com", None, b"/")),
            ),
            ("no host", b"/", None, None),
            ("user info", b"http://u:p@h.example/", None, None),
            ("bad port", b"/", Some("h:99999"), None),
            ("asterisk", b"*", Some("h"), None),
        ];
        for (name, t, host, want) in cases {
            let got = target(&req("GET", t, *host));
            match want {
                Some((h, p, path)) => {
                    let got = got.unwrap_or_else(|e| panic!("{name}: {e:?}"));
                    assert_eq!(got.host, *h, "{name}");
                    assert_eq!(got.port, *p, "{name}");
                    assert_eq!(got.path_and_query, path.to_vec(), "{name}");
                }
                None => assert!(got.is_err(), "{name}: {got:?}"),
            }
        }
    }

    #[test]
    fn match_paths() {
        let cases: &[(&str, &[u8], Option<&[u8]>)] = &[
            ("plain", b"/v1/models?x=/..", Some(b"/v1/models")),
            ("encoded unreserved", b"/%61dmin/%7e", Some(b"/admin/~")),
            ("encoded slash kept", b"/a%2Fb", Some(b"/a%2Fb")),
            ("dot dot", b"/a/../b", None),
            ("encoded dot dot", b"/a/%2e%2E/b", None),
            ("dot", b"/./b", None),
            ("trailing percent", b"/a%", Some(b"/a%")),
            ("short percent", b"/a%4", Some(b"/a%4")),
        ];
        for (name, input, want) in cases {
            let got = match_path(input);
            match want {
                Some(w) => assert_eq!(got.unwrap(), w.to_vec(), "{name}"),
                None => assert!(got.is_err(), "{name}"),
            }
        }
    }
}
