//! Response-side steps, free of Pingora's session type: every real secret the gateway knows
//! becomes its dummy in the response headers and the streamed body, compressed bodies are
//! decoded first (or refused: fail closed), and framing headers are fixed up.
//!
//! Memory per response is bounded: the decoder's window, one read's decoded output (held to the
//! `decoding` budget: see [`crate::rewrite::decode`]), plus the rewriter's held-back bytes (less than the
//! longest real secret); nothing waits for the end of the body.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName};
use pingora::http::ResponseHeader;

use super::headers::{self, HeaderError};
use crate::policy::Policy;
use crate::refusal::{Reason, Refusal};
use crate::rewrite::decode::{
    DecodeError, Decoder, Encoding, UnsupportedEncoding, MAX_STACKED_CODINGS,
};
use crate::rewrite::{Hits, RewriteStream};

/// Headers describing the exact bytes of a body; wrong once the body is rewritten.
const BODY_DIGESTS: &[&str] = &["content-md5", "digest", "content-digest", "repr-digest"];

/// The decoded buffer is kept between chunks up to this capacity; a larger one (a read that
/// decoded to a lot) is freed rather than held for the rest of the response.
const DECODED_RETAINED: usize = 256 * 1024;

/// The per-response body state.
pub struct BodyScrubber {
    decoder: Option<Decoder>,
    stream: RewriteStream,
    decoded: Vec<u8>,
}

/// Why a body chunk cannot be passed on.
#[derive(Debug)]
pub enum BodyError {
    /// Refused by policy (the decoding budget): recorded as a refusal, with its reason.
    Refused(Refusal),
    /// A broken body (a corrupt or truncated compressed stream); the message holds no secret.
    Broken(String),
}

impl From<DecodeError> for BodyError {
    fn from(e: DecodeError) -> Self {
        if e.is_over_budget() {
            BodyError::Refused(refuse(
                502,
                Reason::DecodeBudgetExceeded,
                format!("the upstream's compressed body decodes to more than the gateway's decoding budget allows ({e})"),
            ))
        } else {
            BodyError::Broken(format!("corrupt compressed body: {e}"))
        }
    }
}

fn refuse(status: u16, reason: Reason, message: impl Into<String>) -> Refusal {
    Refusal::new(status, reason, message)
}

/// Scrubs a response head, whatever its status (`1xx` included): the reason phrase is replaced
/// by the status code's standard one (it is free text an upstream can fill with anything), a
/// header whose *name* holds a real secret in any letter case is dropped, and real secrets in
/// values become their dummies.
///
/// # Errors
/// 502 when a scrubbed value is not a valid header value.
pub fn scrub_head(
    policy: &Policy,
    resp: &mut ResponseHeader,
    hits: &mut Hits,
) -> Result<(), Refusal> {
    // `None` means the standard phrase (or none for an unregistered code); it cannot fail.
    let _ = resp.set_reason_phrase(None);
    scrub_headers(policy, resp, hits)
}

/// Scrubs response trailers in place, by the same rules as [`scrub_head`]. It cannot fail:
/// Pingora forwards the trailers unchanged when its trailer hook fails, so a value that cannot
/// be scrubbed into a valid header value is dropped instead.
pub fn scrub_trailers(policy: &Policy, trailers: &mut HeaderMap, hits: &mut Hits) {
    let rw = &policy.response;
    for name in &leaking_names(policy, trailers, hits) {
        trailers.remove(name);
    }
    let changes = match headers::rewrite_values(trailers, rw, hits, false) {
        Ok(changes) => changes,
        Err(HeaderError::Invalid(name)) => {
            trailers.remove(&name);
            return scrub_trailers(policy, trailers, hits);
        }
        Err(HeaderError::Refused(..)) => {
            // The response rewriter has no refusing rules; drop everything if one ever did.
            trailers.clear();
            return;
        }
    };
    for (name, values) in changes {
        trailers.remove(&name);
        for v in values {
            trailers.append(name.clone(), v);
        }
    }
}

/// Scrubs the head of the final response (or a `101`) and decides how the body is handled.
///
/// Returns the body scrubber, or `None` for an accepted `101 Switching Protocols` (the upgraded
/// stream is scanned frame by frame elsewhere).
///
/// # Errors
/// 502 when a scrubbed header value is invalid, and when the body carries a content or transfer coding the gateway cannot decode: such a body is
/// never passed through unscanned.
pub fn prepare(
    policy: &Policy,
    resp: &mut ResponseHeader,
    head_request: bool,
    hits: &mut Hits,
) -> Result<Option<BodyScrubber>, Refusal> {
    scrub_head(policy, resp, hits)?;
    if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
        // Checked (and refused unless it answers an admitted WebSocket upgrade) by
        // `ws::start_response`, which runs first for every `101`.
        return Ok(None);
    }
    let (codings, transfer_coded) = body_codings(resp).map_err(|e| {
        refuse(
            502,
            Reason::CompressedBodyRefused,
            format!("the upstream sent a body the gateway cannot scan ({e})"),
        )
    })?;
    let decoder = Decoder::stacked(&codings).map(|d| d.with_budget(policy.config.decoding));
    if decoder.is_some() {
        resp.remove_header(&http::header::CONTENT_ENCODING);
    }
    if transfer_coded {
        // Decoded here; Pingora frames the body for the agent again (chunked).
        resp.remove_header(&http::header::TRANSFER_ENCODING);
    }
    // A length the rewrite could change goes (the body is then sent chunked). An empty body,
    // or the length announced in answer to HEAD, cannot change: removing it would leave an
    // HTTP/1.1 response without framing, which the client reads until the connection closes.
    let may_change = decoder.is_some() || !policy.response_length_preserving;
    if may_change && !head_request && !empty_by_length(resp) {
        resp.remove_header(&http::header::CONTENT_LENGTH);
        for h in BODY_DIGESTS {
            resp.remove_header(*h);
        }
    }
    Ok(Some(BodyScrubber {
        decoder,
        stream: policy.response.stream(),
        decoded: Vec::new(),
    }))
}

/// Every coding applied to the body, in the order applied: all `Content-Encoding` fields, then
/// the codings of all `Transfer-Encoding` fields other than `chunked` (which Pingora removes).
/// Also says whether a transfer coding was found.
fn body_codings(resp: &ResponseHeader) -> Result<(Vec<Encoding>, bool), UnsupportedEncoding> {
    let mut codings = Encoding::parse_list(
        resp.headers
            .get_all(http::header::CONTENT_ENCODING)
            .iter()
            .map(|v| v.as_bytes()),
    )?;
    // Token by token (no allocation for the usual `chunked`), without `chunked` itself.
    let transfer = Encoding::parse_list(
        resp.headers
            .get_all(http::header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .filter(|t| !t.trim_ascii().eq_ignore_ascii_case(b"chunked")),
    )?;
    let transfer_coded = !transfer.is_empty();
    codings.extend(transfer);
    if codings.len() > MAX_STACKED_CODINGS {
        return Err(UnsupportedEncoding::TooMany {
            count: codings.len(),
        });
    }
    Ok((codings, transfer_coded))
}

fn empty_by_length(resp: &ResponseHeader) -> bool {
    resp.headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        == Some(0)
}

/// The header names that hold a real secret (or a form of one) in any letter case; counted.
fn leaking_names(policy: &Policy, fields: &HeaderMap, hits: &mut Hits) -> Vec<HeaderName> {
    fields
        .keys()
        .filter(|n| headers::name_matches(&policy.response, n, hits))
        .cloned()
        .collect()
}

/// Replaces real secrets in header values with their dummies; a header whose *name* holds a
/// real secret is dropped.
fn scrub_headers(
    policy: &Policy,
    resp: &mut ResponseHeader,
    hits: &mut Hits,
) -> Result<(), Refusal> {
    let rw = &policy.response;
    for name in &leaking_names(policy, &resp.headers, hits) {
        resp.remove_header(name);
    }
    let changes = headers::rewrite_values(&resp.headers, rw, hits, false).map_err(|e| match e {
        // The response rewriter has no refusing rules.
        HeaderError::Refused(..) => refuse(500, Reason::Internal, "response rules refused"),
        HeaderError::Invalid(name) => refuse(
            502,
            Reason::InvalidHeader,
            format!("a scrubbed `{name}` header is not a valid value"),
        ),
    })?;
    for (name, values) in changes {
        resp.remove_header(&name);
        for v in values {
            resp.append_header(name.clone(), v)
                .map_err(|_| refuse(502, Reason::InvalidHeader, "cannot set a header"))?;
        }
    }
    Ok(())
}

impl BodyScrubber {
    /// Scrubs one chunk in place. `end` flushes everything held back.
    ///
    /// # Errors
    /// [`BodyError::Refused`] when a compressed body decodes to more than the `decoding`
    /// budget allows; [`BodyError::Broken`] (no secret in the message) when it is corrupt or
    /// truncated.
    pub fn chunk(&mut self, body: &mut Option<Bytes>, end: bool) -> Result<(), BodyError> {
        let input = body.take().unwrap_or_default();
        let plain: &[u8] = match self.decoder.as_mut() {
            Some(d) => {
                self.decoded.clear();
                d.push(&input, &mut self.decoded)?;
                if end {
                    d.finish(&mut self.decoded)?;
                }
                &self.decoded
            }
            None => &input,
        };
        let mut out = Vec::with_capacity(plain.len() + 64);
        // The response rewriter has no refusing rules; an error here is a bug, and failing
        // the response is the safe way to handle it.
        let internal = |_| BodyError::Broken("internal: a response rule refused".to_string());
        self.stream.push(plain, &mut out).map_err(internal)?;
        if end {
            self.stream.finish(&mut out).map_err(internal)?;
        }
        if self.decoded.capacity() > DECODED_RETAINED {
            self.decoded = Vec::new();
        }
        // An empty chunk is skipped by the writer; `None` would end the body early.
        *body = Some(Bytes::from(out));
        Ok(())
    }

    /// Emits whatever is still held back (for responses that end without an `end` chunk).
    pub fn flush(&mut self) -> Bytes {
        let mut out = Vec::new();
        if let Some(d) = self.decoder.as_mut() {
            self.decoded.clear();
            if d.finish(&mut self.decoded).is_ok() {
                let _ = self.stream.push(&self.decoded, &mut out);
            }
        }
        let _ = self.stream.finish(&mut out);
        Bytes::from(out)
    }

    /// Replacements made so far.
    pub fn hits(&self) -> &Hits {
        self.stream.hits()
    }
}
