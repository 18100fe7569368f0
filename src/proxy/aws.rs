//! The AWS step of the request path: a request to an upstream bound to an `aws` credential that
//! is signed (Signature Version 4) with that credential's dummy access key id is checked with the
//! dummy secret, then signed again with the real key over exactly what the upstream receives.
//!
//! 1. [`detect`] (before anything is rewritten): finds the signature and the credential, and
//!    learns which payload hash the signature covers. When that hash is of the body (a hex
//!    `x-amz-content-sha256`, or a non-S3 request without it), the body must be read first.
//! 2. [`finish`]: checks the body against its declared hash, checks the signature and the time,
//!    rewrites the body (when it was read) with the upstream's rules, and keeps what signing
//!    needs ([`Resign`]: the signature's scope, the new payload hash, the real key) in the
//!    [`Prepared`] request.
//! 3. [`sign_upstream`], from `upstream_request_filter`: signs the upstream's header itself,
//!    after [`super::request::apply_upstream`] has built it — the header signed is the header
//!    sent, built once — and sets the new `Authorization` (or presigned query), session token and
//!    payload hash on it.
//!
//! A request that does not verify is answered `403` and nothing is sent. Bodies that must be read
//! are limited to [`MAX_SIGNED_BODY`] (Pingora replays at most that much of a request body).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderValue;
use pingora::http::RequestHeader;

use super::request::Prepared;
use crate::aws::sigv4::{Keys, Payload, PayloadHash, RequestView, SigV4Error, SignedRequest};
use crate::config::UpstreamId;
use crate::policy::Policy;
use crate::refusal::{Reason, Refusal};
use crate::rewrite::Hits;

/// The largest body the gateway reads before signing (`413` above it): the signature covers
/// the body's hash, which goes into the header, so the whole body is needed first.
pub const MAX_SIGNED_BODY: usize = 64 * 1024;

/// A request signed with an `aws` credential's dummy key, between [`detect`] and [`finish`].
#[derive(Debug)]
pub struct Pending {
    /// Index into [`Policy::aws_keys`].
    key: usize,
    signed: SignedRequest,
    payload: Payload,
    /// The agent's origin-form path and query (what it signed).
    path_and_query: Vec<u8>,
}

impl Pending {
    /// Whether the signature covers the body's hash, so the body must be read before signing.
    pub fn needs_body(&self) -> bool {
        matches!(
            self.payload,
            Payload::HashBody | Payload::Declared(PayloadHash::Sha256(_))
        )
    }
}

fn refusal(e: &SigV4Error, credential: Option<usize>) -> Refusal {
    let reason = match e.status() {
        400 => Reason::AwsSignatureMalformed,
        403 => Reason::AwsSignatureInvalid,
        501 => Reason::AwsSigningUnsupported,
        _ => Reason::AwsMisconfigured,
    };
    Refusal {
        status: e.status(),
        reason,
        message: format!("AWS Signature Version 4: {e}"),
        credential,
    }
}

/// Header names and values of `req`, with `host` added from the URI's authority when the
/// request has no `Host` header (HTTP/2).
fn header_pairs(req: &RequestHeader) -> Vec<(&[u8], &[u8])> {
    let mut pairs: Vec<(&[u8], &[u8])> = req
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
        .collect();
    if !req.headers.contains_key(http::header::HOST)
        && let Some(a) = req.uri.authority()
    {
        pairs.push((b"host", a.as_str().as_bytes()));
    }
    pairs
}

fn split_query(path_and_query: &[u8]) -> (&[u8], &[u8]) {
    match path_and_query.iter().position(|&b| b == b'?') {
        Some(i) => (&path_and_query[..i], &path_and_query[i + 1..]),
        None => (path_and_query, b""),
    }
}

/// Finds a SigV4 signature made with the dummy access key id of an `aws` credential bound to
/// `upstream`. `Ok(None)` when the upstream has no `aws` credential, the request is not signed,
/// or it is signed with another key id (a dummy bound elsewhere is refused by the request rules).
///
/// # Errors
/// A refusal (`400`, `501`) for a signature that cannot be read.
pub fn detect(
    policy: &Policy,
    upstream: UpstreamId,
    req: &RequestHeader,
    path_and_query: &[u8],
) -> Result<Option<Pending>, Refusal> {
    if !policy.has_aws_key(upstream) {
        return Ok(None);
    }
    let headers = header_pairs(req);
    let (path, query) = split_query(path_and_query);
    let view = RequestView {
        method: req.method.as_str(),
        path,
        query,
        headers: &headers,
    };
    let Some(signed) = SignedRequest::parse(&view).map_err(|e| refusal(&e, None))? else {
        return Ok(None);
    };
    let Some(key) = policy.aws_key_for(upstream, &signed.scope.access_key_id) else {
        return Ok(None);
    };
    let credential = policy.aws_keys.get(key).map(|k| k.access_key_id);
    let payload = signed.payload(&view).map_err(|e| refusal(&e, credential))?;
    Ok(Some(Pending {
        key,
        signed,
        payload,
        path_and_query: path_and_query.to_vec(),
    }))
}

/// What signing the upstream's header needs, kept from [`finish`] to [`sign_upstream`].
pub struct Resign {
    signed: SignedRequest,
    /// The payload hash of the body the upstream receives.
    hash: PayloadHash,
    real: KeyValues,
    /// The access key id's credential, for refusals.
    credential: Option<usize>,
}

impl std::fmt::Debug for Resign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resign([REDACTED])")
    }
}

/// Real or dummy values of an `aws` credential's parts, or the refusal for one that is
/// unavailable.
struct KeyValues {
    access_key_id: String,
    secret: zeroize::Zeroizing<Vec<u8>>,
    token: Option<zeroize::Zeroizing<Vec<u8>>>,
}

fn key_values(policy: &Policy, key: usize, real: bool) -> Result<KeyValues, Refusal> {
    let aws = policy
        .aws_keys
        .get(key)
        .ok_or_else(|| Refusal::new(500, Reason::Internal, "unknown AWS credential"))?;
    let value = |idx: usize| -> Result<zeroize::Zeroizing<Vec<u8>>, Refusal> {
        let cred = policy
            .config
            .credentials
            .get(idx)
            .ok_or_else(|| Refusal::new(500, Reason::Internal, "unknown credential"))?;
        if !real {
            return Ok(zeroize::Zeroizing::new(cred.dummy.clone()));
        }
        // `aws` credentials have one value for every client (checked when loading).
        match cred
            .value_for(None)
            .map(|v| &v.real)
            .unwrap_or(&Err(String::new()))
        {
            Ok(secret) => Ok(zeroize::Zeroizing::new(secret.expose().to_vec())),
            // Named by credential only: its source is the operator's business.
            Err(_) => Err(Refusal {
                status: 503,
                reason: Reason::CredentialUnavailable,
                message: format!("credential `{}` is unavailable on this gateway", cred.name),
                credential: Some(idx),
            }),
        }
    };
    let id = value(aws.access_key_id)?;
    Ok(KeyValues {
        access_key_id: String::from_utf8(id.to_vec()).map_err(|_| {
            Refusal::new(
                500,
                Reason::AwsMisconfigured,
                format!("the access key id of credential `{}` is not text", aws.name),
            )
        })?,
        secret: value(aws.secret_access_key)?,
        token: aws.session_token.map(value).transpose()?,
    })
}

impl KeyValues {
    fn keys(&self) -> Keys<'_> {
        Keys {
            access_key_id: &self.access_key_id,
            secret_access_key: &self.secret,
            session_token: self.token.as_deref().map(Vec::as_slice),
        }
    }
}

/// Checks the agent's signature with the dummy key (and `body` against its declared hash, when
/// the body was read) and rewrites `body` with the upstream's rules; the body and what signing
/// needs ([`Resign`]) go into `prepared`.
///
/// # Errors
/// `403` when the body, signature, key id, session token or time does not check out; the
/// request rules' refusals for the body; `503` when a real part is unavailable.
pub fn finish(
    policy: &Policy,
    upstream: UpstreamId,
    pending: Pending,
    req: &RequestHeader,
    prepared: &mut Prepared,
    body: Option<&[u8]>,
    hits: &mut Hits,
) -> Result<(), Refusal> {
    let credential = policy.aws_keys.get(pending.key).map(|k| k.access_key_id);
    let fail = |e: SigV4Error| refusal(&e, credential);
    let headers = header_pairs(req);
    let (path, query) = split_query(&pending.path_and_query);
    let agent_view = RequestView {
        method: req.method.as_str(),
        path,
        query,
        headers: &headers,
    };
    let agent_hash = match (&pending.payload, body) {
        (Payload::Declared(PayloadHash::Sha256(declared)), Some(b)) => {
            if PayloadHash::of_body(b) != PayloadHash::Sha256(*declared) {
                return Err(Refusal {
                    status: 403,
                    reason: Reason::AwsSignatureInvalid,
                    message: "AWS Signature Version 4: the body does not match the hash it was signed with (x-amz-content-sha256); it was altered after signing".into(),
                    credential,
                });
            }
            PayloadHash::Sha256(*declared)
        }
        (Payload::Declared(hash), _) => hash.clone(),
        (Payload::HashBody, b) => PayloadHash::of_body(b.unwrap_or_default()),
    };
    let dummy = key_values(policy, pending.key, false)?;
    pending
        .signed
        .verify(&agent_view, &agent_hash, &dummy.keys())
        .map_err(fail)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    pending.signed.check_time(now).map_err(fail)?;
    let real = key_values(policy, pending.key, true)?;

    // The body the upstream receives, and the hash the new signature covers.
    let upstream_hash = match body {
        Some(b) => {
            let rules = Arc::clone(&prepared.body_rules);
            let new_body = rules
                .rewriter
                .rewrite(b, hits)
                .map_err(|r| policy.request_refusal(Some(upstream), &rules, &r))?
                .into_owned();
            let hash = PayloadHash::of_body(&new_body);
            prepared.body = Some(Bytes::from(new_body));
            hash
        }
        None => agent_hash,
    };
    prepared.resign = Some(Resign {
        signed: pending.signed,
        hash: upstream_hash,
        real,
        credential,
    });
    Ok(())
}

/// Signs `req`, the upstream's header as it will be sent, with the real key, and sets the new
/// `Authorization` (or presigned query), session token and payload hash on it (each header only
/// where the request has it, as the agent signed it).
///
/// # Errors
/// The signing errors (see `SignedRequest::resign`), or a value that cannot be set.
pub fn sign_upstream(resign: &Resign, req: &mut RequestHeader) -> Result<(), Refusal> {
    let resigned = {
        let headers = header_pairs(req);
        let (path, query) = split_query(req.raw_path());
        let view = RequestView {
            method: req.method.as_str(),
            path,
            query,
            headers: &headers,
        };
        resign
            .signed
            .resign(&view, &resign.hash, &resign.real.keys())
            .map_err(|e| refusal(&e, resign.credential))?
    };
    let cannot = || Refusal::new(502, Reason::InvalidHeader, "cannot set a signed header");
    for edit in resigned.headers {
        let name = http::HeaderName::from_static(edit.name);
        if !req.headers.contains_key(&name) {
            continue;
        }
        let mut value = HeaderValue::from_bytes(&edit.value).map_err(|_| cannot())?;
        value.set_sensitive(true);
        req.insert_header(name, value).map_err(|_| cannot())?;
    }
    if let Some(q) = resigned.query {
        let (path, _) = split_query(req.raw_path());
        let mut pq = path.to_vec();
        pq.push(b'?');
        pq.extend_from_slice(&q);
        req.set_raw_path(&pq).map_err(|_| cannot())?;
    }
    Ok(())
}
