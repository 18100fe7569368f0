//! AWS Signature Version 4 (`AWS4-HMAC-SHA256`): read the signature a request carries, check it
//! with one secret key, and sign the request again with another.
//!
//! An agent holds a *dummy* AWS key pair and signs its requests with the dummy secret. The
//! gateway cannot just swap the access key id: the signature would still be the dummy secret's.
//! So for a request bound to an upstream with an `aws` credential the gateway
//!
//! 1. finds the signature ([`SignedRequest::parse`]): an `Authorization: AWS4-HMAC-SHA256 …`
//!    header ([`parse_authorization`]) or a presigned query (`X-Amz-Signature=…`,
//!    [`parse_presigned`]);
//! 2. learns which payload hash the signature covers ([`SignedRequest::payload`]): the
//!    `x-amz-content-sha256` header, `UNSIGNED-PAYLOAD` for an S3 presigned URL, or the SHA-256 of
//!    the body for other services;
//! 3. checks the access key id, the session token and the signature against the *dummy* key
//!    ([`SignedRequest::verify`]) and the request time ([`SignedRequest::check_time`]);
//! 4. signs the request as the upstream will receive it with the *real* key
//!    ([`SignedRequest::resign`]), which returns the headers to set (`Authorization`,
//!    `X-Amz-Security-Token`, `X-Amz-Content-SHA256`) or the new query string of a presigned URL.
//!
//! The canonical request follows AWS exactly: S3 (`s3`, `s3-object-lambda`, `s3-outposts`,
//! `s3express`) takes the path as sent, each segment decoded and encoded once; every other
//! service removes dot segments and empty segments and encodes the path a second time. Query
//! parameters are decoded and encoded again (`+` is a literal plus, never a space), sorted by
//! name then value, and `X-Amz-Signature` is left out. Header values are trimmed and inner runs of
//! ASCII white space become one space; values of a repeated header are joined with `,`.
//!
//! Everything here is synchronous and works on borrowed bytes. Nothing panics on any input: the
//! request is the agent's, so it is parsed as hostile. Errors ([`SigV4Error`]) name what is wrong
//! and never hold a secret, a session token or a signature. The signing key and every
//! intermediate key are zeroized when dropped.
//!
//! # Example
//!
//! ```
//! use slapenir::aws::sigv4::{Keys, Payload, PayloadHash, RequestView, SignedRequest};
//!
//! // The AWS test suite's `get-vanilla` request, signed with the suite's key.
//! let dummy = Keys { access_key_id: "AKIDEXAMPLE",
//!     secret_access_key: b"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", session_token: None };
//! let real = Keys { access_key_id: "AKIAREAL", secret_access_key: b"real-secret",
//!     session_token: None };
//! let headers: &[(&[u8], &[u8])] = &[
//!     (b"Host", b"example.amazonaws.com"),
//!     (b"X-Amz-Date", b"20150830T123600Z"),
//!     (b"Authorization", b"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/\
//!         aws4_request, SignedHeaders=host;x-amz-date, \
//!         Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
//! ];
//! let view = RequestView { method: "GET", path: b"/", query: b"", headers };
//! let signed = SignedRequest::parse(&view)?.expect("the request carries a SigV4 signature");
//! let payload = match signed.payload(&view)? {
//!     Payload::Declared(hash) => hash,
//!     Payload::HashBody => PayloadHash::of_body(b""), // this GET has no body
//! };
//! signed.verify(&view, &payload, &dummy)?;
//! // (A live gateway also calls `signed.check_time(now)`.)
//! let resigned = signed.resign(&view, &payload, &real)?;
//! let authorization = &resigned.headers[0];
//! assert_eq!(authorization.name, "authorization");
//! assert!(authorization.value.starts_with(b"AWS4-HMAC-SHA256 Credential=AKIAREAL/20150830/"));
//!
//! // The same request for another path no longer verifies: answer `err.status()`, 403.
//! let altered = RequestView { path: b"/other", ..view };
//! let err = signed.verify(&altered, &payload, &dummy).unwrap_err();
//! assert_eq!(err.status(), 403);
//! # Ok::<(), slapenir::aws::sigv4::SigV4Error>(())
//! ```

use std::fmt;

use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};
use time::macros::format_description;
use time::PrimitiveDateTime;
use zeroize::Zeroizing;

/// The only signing algorithm this module speaks.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// `x-amz-content-sha256` value of a request whose body is not part of the signature.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// `x-amz-content-sha256` value of an `aws-chunked` body with unsigned chunks and a trailing
/// checksum (what botocore sends for S3 uploads over HTTPS by default since 1.36).
pub const STREAMING_UNSIGNED_PAYLOAD_TRAILER: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";
/// SHA-256 of the empty body, in hex.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// Longest lifetime AWS allows for a presigned URL (`X-Amz-Expires`), seven days.
pub const MAX_EXPIRES_SECS: u32 = 604_800;
/// How far a request's time may be from the gateway's clock, as AWS allows (15 minutes).
pub const MAX_CLOCK_SKEW_SECS: i64 = 900;

const PRESIGN_ALGORITHM: &str = "X-Amz-Algorithm";
const PRESIGN_CREDENTIAL: &str = "X-Amz-Credential";
const PRESIGN_DATE: &str = "X-Amz-Date";
const PRESIGN_EXPIRES: &str = "X-Amz-Expires";
const PRESIGN_SIGNED_HEADERS: &str = "X-Amz-SignedHeaders";
const PRESIGN_SIGNATURE: &str = "X-Amz-Signature";
const PRESIGN_TOKEN: &str = "X-Amz-Security-Token";
const PRESIGN_PARAMS: [&str; 7] = [
    PRESIGN_ALGORITHM,
    PRESIGN_CREDENTIAL,
    PRESIGN_DATE,
    PRESIGN_EXPIRES,
    PRESIGN_SIGNED_HEADERS,
    PRESIGN_SIGNATURE,
    PRESIGN_TOKEN,
];

const HEADER_AUTHORIZATION: &str = "authorization";
const HEADER_DATE: &str = "x-amz-date";
const HEADER_TOKEN: &str = "x-amz-security-token";
const HEADER_CONTENT_SHA256: &str = "x-amz-content-sha256";

/// Payload hashes of bodies whose chunks are signed one by one, each chain starting at the
/// header's signature. Re-signing them means re-signing every chunk: not implemented.
const SIGNED_CHUNK_PAYLOADS: [&str; 4] = [
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
    "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD",
    "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER",
];

/// Why a request's signature could not be read, checked or made again. Holds no secret, no
/// session token and no signature: only names and fixed descriptions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SigV4Error {
    /// The `Authorization` header is not `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…,
    /// Signature=…`; the text says which part.
    MalformedAuthorization(&'static str),
    /// A presigned query (`X-Amz-*` parameters) is incomplete or malformed; the text says which.
    MalformedPresigned(&'static str),
    /// The request carries an `Authorization` header and presigned query parameters, or more than
    /// one `Authorization` header.
    AmbiguousAuth,
    /// The signature uses another algorithm (`AWS4-ECDSA-P256-SHA256`, SigV2 `AWS …`); the text
    /// names it.
    UnsupportedAlgorithm(&'static str),
    /// The path or query holds a `%` that does not start a `%XX` escape; the text says where.
    BadPercentEncoding(&'static str),
    /// A header that must appear at most once appears more than once.
    DuplicateHeader(&'static str),
    /// A header-signed request has no `X-Amz-Date` header (signing with `Date` alone is not
    /// supported).
    MissingDate,
    /// `X-Amz-Date` is not `YYYYMMDDTHHMMSSZ` with a real calendar date and time.
    MalformedDate,
    /// The credential scope's date is not the day of `X-Amz-Date`.
    ScopeDateMismatch,
    /// A header named in `SignedHeaders` is not in the request.
    SignedHeaderMissing(String),
    /// An S3 request signed in the `Authorization` header has no `x-amz-content-sha256` header.
    MissingContentSha256,
    /// `x-amz-content-sha256` is neither a hex SHA-256 nor a known keyword.
    MalformedContentSha256,
    /// The body is `aws-chunked` with signed chunks (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD…`):
    /// re-signing every chunk is not implemented.
    SignedChunksUnsupported,
    /// The access key id is not the credential's dummy.
    WrongAccessKeyId,
    /// `X-Amz-Security-Token` is not the credential's dummy session token.
    WrongSessionToken,
    /// The request carries a session token but the credential has none.
    UnexpectedSessionToken,
    /// The request carries no session token but the credential's real key needs one.
    MissingSessionToken,
    /// The request carries a session token but the credential has no real one to put there: a
    /// gateway configuration error.
    NoRealSessionToken,
    /// The signature does not verify: the request was altered after signing, or signed with
    /// another secret.
    SignatureMismatch,
    /// The request's time is more than 15 minutes from the gateway's clock.
    RequestTimeTooSkewed,
    /// The presigned URL has expired.
    Expired,
}

impl SigV4Error {
    /// The HTTP status the gateway answers with: `400` for a malformed request, `403` for one
    /// that does not authenticate, `501` for what this module does not implement, `500` for a
    /// gateway configuration error.
    pub fn status(&self) -> u16 {
        match self {
            SigV4Error::MalformedAuthorization(_)
            | SigV4Error::MalformedPresigned(_)
            | SigV4Error::AmbiguousAuth
            | SigV4Error::BadPercentEncoding(_)
            | SigV4Error::DuplicateHeader(_)
            | SigV4Error::MissingDate
            | SigV4Error::MalformedDate
            | SigV4Error::ScopeDateMismatch
            | SigV4Error::SignedHeaderMissing(_)
            | SigV4Error::MissingContentSha256
            | SigV4Error::MalformedContentSha256 => 400,
            SigV4Error::WrongAccessKeyId
            | SigV4Error::WrongSessionToken
            | SigV4Error::UnexpectedSessionToken
            | SigV4Error::MissingSessionToken
            | SigV4Error::SignatureMismatch
            | SigV4Error::RequestTimeTooSkewed
            | SigV4Error::Expired => 403,
            SigV4Error::UnsupportedAlgorithm(_) | SigV4Error::SignedChunksUnsupported => 501,
            SigV4Error::NoRealSessionToken => 500,
        }
    }
}

impl fmt::Display for SigV4Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SigV4Error::MalformedAuthorization(what) => {
                write!(f, "malformed AWS4-HMAC-SHA256 Authorization header: {what}")
            }
            SigV4Error::MalformedPresigned(what) => write!(f, "malformed presigned URL: {what}"),
            SigV4Error::AmbiguousAuth => f.write_str(
                "the request carries more than one AWS signature (Authorization header and \
                 X-Amz-* query parameters, or several Authorization headers)",
            ),
            SigV4Error::UnsupportedAlgorithm(alg) => write!(
                f,
                "AWS signature algorithm {alg} is not supported; only AWS4-HMAC-SHA256 is"
            ),
            SigV4Error::BadPercentEncoding(place) => {
                write!(
                    f,
                    "the {place} holds a '%' that does not start a %XX escape"
                )
            }
            SigV4Error::DuplicateHeader(name) => write!(f, "header {name} appears more than once"),
            SigV4Error::MissingDate => f.write_str(
                "the request has no X-Amz-Date header (signing with Date alone is not supported)",
            ),
            SigV4Error::MalformedDate => f.write_str("X-Amz-Date is not YYYYMMDDTHHMMSSZ"),
            SigV4Error::ScopeDateMismatch => {
                f.write_str("the credential scope's date is not the date of X-Amz-Date")
            }
            SigV4Error::SignedHeaderMissing(name) => {
                write!(f, "signed header {name} is not in the request")
            }
            SigV4Error::MissingContentSha256 => {
                f.write_str("an S3 request signed in its headers needs x-amz-content-sha256")
            }
            SigV4Error::MalformedContentSha256 => f.write_str(
                "x-amz-content-sha256 is neither a hex SHA-256 nor UNSIGNED-PAYLOAD nor \
                 STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            ),
            SigV4Error::SignedChunksUnsupported => f.write_str(
                "chunk-signed uploads (STREAMING-AWS4-HMAC-SHA256-PAYLOAD) are not supported; \
                 send the body in one piece or use UNSIGNED-PAYLOAD",
            ),
            SigV4Error::WrongAccessKeyId => {
                f.write_str("the access key id is not this credential's dummy")
            }
            SigV4Error::WrongSessionToken => {
                f.write_str("X-Amz-Security-Token is not this credential's dummy session token")
            }
            SigV4Error::UnexpectedSessionToken => {
                f.write_str("the request carries a session token but this credential has none")
            }
            SigV4Error::MissingSessionToken => f.write_str(
                "this credential needs a session token: set the agent's session token to its dummy",
            ),
            SigV4Error::NoRealSessionToken => f.write_str(
                "the request carries a session token but the credential has no real one configured",
            ),
            SigV4Error::SignatureMismatch => f.write_str(
                "the signature does not match: the request was altered after signing or signed \
                 with another secret",
            ),
            SigV4Error::RequestTimeTooSkewed => {
                f.write_str("the request time is more than 15 minutes from the gateway's clock")
            }
            SigV4Error::Expired => f.write_str("the presigned URL has expired"),
        }
    }
}

impl std::error::Error for SigV4Error {}

/// One side of an `aws` credential: the dummy pair the agent holds, or the real one.
pub struct Keys<'a> {
    /// The access key id (`AKIA…`, `ASIA…`).
    pub access_key_id: &'a str,
    /// The secret access key.
    pub secret_access_key: &'a [u8],
    /// The session token of temporary credentials.
    pub session_token: Option<&'a [u8]>,
}

impl fmt::Debug for Keys<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("secret_access_key", &"[REDACTED]")
            .field("session_token", &self.session_token.map(|_| "[REDACTED]"))
            .finish_non_exhaustive()
    }
}

/// A request as it is on the wire, borrowed from whatever parsed it.
///
/// `headers` keeps every header line, duplicates included; only the relative order of lines
/// with the same name matters (their values are joined in that order), so an `http::HeaderMap`
/// iteration is fine. An HTTP/2 request must list its `:authority` as a `host` header.
#[derive(Clone, Copy)]
pub struct RequestView<'a> {
    /// The method, as sent (`GET`).
    pub method: &'a str,
    /// The path as sent, percent-escapes and all, without the query (`/bucket/a%20b`).
    pub path: &'a [u8],
    /// The query as sent, without the `?`; empty when there is none.
    pub query: &'a [u8],
    /// Header names and values, in the order received.
    pub headers: &'a [(&'a [u8], &'a [u8])],
}

impl<'a> RequestView<'a> {
    fn header_values(&self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| *v)
    }

    fn single_header(&self, name: &'static str) -> Result<Option<&'a [u8]>, SigV4Error> {
        let mut values = self.header_values(name);
        let first = values.next();
        if values.next().is_some() {
            return Err(SigV4Error::DuplicateHeader(name));
        }
        Ok(first)
    }
}

/// The credential scope: `AKID/20150830/us-east-1/service/aws4_request`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// The access key id the request names.
    pub access_key_id: String,
    /// The day, `YYYYMMDD`.
    pub date: String,
    /// The region (`us-east-1`).
    pub region: String,
    /// The service's signing name (`s3`, `sts`, `dynamodb`).
    pub service: String,
}

impl Scope {
    /// Parses `AKID/YYYYMMDD/region/service/aws4_request`. The error says which part is wrong;
    /// it never repeats the value.
    fn parse(value: &[u8]) -> Result<Self, &'static str> {
        let mut parts = value.split(|&b| b == b'/');
        let (Some(akid), Some(date), Some(region), Some(service), Some(terminator), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err("the credential is not AKID/date/region/service/aws4_request");
        };
        if akid.is_empty() || akid.len() > 128 || !akid.iter().all(u8::is_ascii_alphanumeric) {
            return Err("the access key id is not 1 to 128 letters and digits");
        }
        if date.len() != 8 || !date.iter().all(u8::is_ascii_digit) {
            return Err("the credential date is not YYYYMMDD");
        }
        let name_ok = |s: &[u8]| {
            !s.is_empty()
                && s.len() <= 64
                && s.iter().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_'
                })
        };
        if !name_ok(region) {
            return Err("the credential region is not lowercase letters, digits, '-' or '_'");
        }
        if !name_ok(service) {
            return Err("the credential service is not lowercase letters, digits, '-' or '_'");
        }
        if terminator != b"aws4_request" {
            return Err("the credential does not end with aws4_request");
        }
        // Every part was checked to be ASCII above.
        let text = |s: &[u8]| s.iter().map(|&b| char::from(b)).collect::<String>();
        Ok(Scope {
            access_key_id: text(akid),
            date: text(date),
            region: text(region),
            service: text(service),
        })
    }

    /// `date/region/service/aws4_request`: the scope without the access key id, as it goes into
    /// the string to sign.
    pub fn credential_scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }

    /// The scope with another access key id, as it goes into `Credential=` or `X-Amz-Credential`.
    fn with_key(&self, access_key_id: &str) -> String {
        format!("{access_key_id}/{}", self.credential_scope())
    }

    /// Whether the service follows S3's rules (path neither normalized nor double-encoded,
    /// `x-amz-content-sha256` required, presigned URLs sign `UNSIGNED-PAYLOAD`).
    pub fn is_s3(&self) -> bool {
        is_s3_service(&self.service)
    }
}

fn is_s3_service(service: &str) -> bool {
    matches!(
        service,
        "s3" | "s3-object-lambda" | "s3-outposts" | "s3express"
    )
}

/// A request time, `YYYYMMDDTHHMMSSZ` (`X-Amz-Date`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timestamp {
    text: String,
    unix: i64,
}

impl Timestamp {
    /// Parses `YYYYMMDDTHHMMSSZ`, checking that it names a real day and time.
    ///
    /// # Errors
    /// [`SigV4Error::MalformedDate`].
    pub fn parse(value: &[u8]) -> Result<Self, SigV4Error> {
        // Exactly sixteen characters, starting with a digit: `time` would also take a signed
        // year, which no AWS client writes.
        let text = std::str::from_utf8(value).map_err(|_| SigV4Error::MalformedDate)?;
        if text.len() != 16 || !text.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(SigV4Error::MalformedDate);
        }
        let at = PrimitiveDateTime::parse(
            text,
            format_description!("[year][month][day]T[hour][minute][second]Z"),
        )
        .map_err(|_| SigV4Error::MalformedDate)?;
        Ok(Timestamp {
            text: text.to_owned(),
            unix: at.assume_utc().unix_timestamp(),
        })
    }

    /// The time as written, `YYYYMMDDTHHMMSSZ`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Seconds since the Unix epoch.
    pub fn unix(&self) -> i64 {
        self.unix
    }

    fn date(&self) -> &str {
        self.text.get(..8).unwrap_or_default()
    }
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 …` header.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthorizationHeader {
    /// `Credential=`.
    pub scope: Scope,
    /// `SignedHeaders=`: lowercase, sorted, no repeats, `host` among them.
    pub signed_headers: Vec<String>,
    signature: [u8; 32],
}

impl fmt::Debug for AuthorizationHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizationHeader")
            .field("scope", &self.scope)
            .field("signed_headers", &self.signed_headers)
            .finish_non_exhaustive()
    }
}

/// Parses an `Authorization` header value: `AWS4-HMAC-SHA256` then `Credential=…`,
/// `SignedHeaders=…` and `Signature=…` separated by commas, in any order, with optional spaces
/// around each (botocore writes `, `, the S3 documentation `,`).
///
/// Stricter than a lenient server where being lenient would make the meaning unclear: each
/// component exactly once and nothing else; `SignedHeaders` lowercase, sorted, without repeats,
/// naming `host` and not naming `authorization`; the signature 64 lowercase hex digits.
///
/// # Errors
/// [`SigV4Error::UnsupportedAlgorithm`] for another algorithm, [`SigV4Error::MalformedAuthorization`]
/// for anything else that is wrong.
///
/// # Example
/// ```
/// use slapenir::aws::sigv4::parse_authorization;
/// let auth = parse_authorization(b"AWS4-HMAC-SHA256 \
///     Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
///     SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,\
///     Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")?;
/// assert_eq!(auth.scope.service, "s3");
/// assert_eq!(auth.signed_headers, ["host", "range", "x-amz-content-sha256", "x-amz-date"]);
/// # Ok::<(), slapenir::aws::sigv4::SigV4Error>(())
/// ```
pub fn parse_authorization(value: &[u8]) -> Result<AuthorizationHeader, SigV4Error> {
    use SigV4Error::MalformedAuthorization as Bad;
    let value = trim_ows(value);
    let Some(rest) = value.strip_prefix(ALGORITHM.as_bytes()) else {
        return Err(
            other_algorithm(value).unwrap_or(Bad("it does not start with AWS4-HMAC-SHA256"))
        );
    };
    let Some((b' ' | b'\t', _)) = rest.split_first() else {
        return Err(Bad("AWS4-HMAC-SHA256 is not followed by a space"));
    };
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for component in rest.split(|&b| b == b',') {
        let component = trim_ows(component);
        let Some(eq) = component.iter().position(|&b| b == b'=') else {
            return Err(Bad("a component is not Name=value"));
        };
        let (name, value) = (&component[..eq], &component[eq + 1..]);
        let slot = match name {
            b"Credential" => &mut credential,
            b"SignedHeaders" => &mut signed,
            b"Signature" => &mut signature,
            _ => {
                return Err(Bad(
                    "a component is not Credential, SignedHeaders or Signature",
                ))
            }
        };
        if slot.replace(value).is_some() {
            return Err(Bad("a component appears twice"));
        }
    }
    let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature) else {
        return Err(Bad("Credential, SignedHeaders or Signature is missing"));
    };
    Ok(AuthorizationHeader {
        scope: Scope::parse(credential).map_err(Bad)?,
        signed_headers: parse_signed_headers(signed).map_err(Bad)?,
        signature: parse_signature(signature).map_err(Bad)?,
    })
}

/// Names a SigV4a or SigV2 signature, which this module cannot re-sign.
fn other_algorithm(value: &[u8]) -> Option<SigV4Error> {
    if value.starts_with(b"AWS4-ECDSA-P256-SHA256") {
        Some(SigV4Error::UnsupportedAlgorithm(
            "AWS4-ECDSA-P256-SHA256 (SigV4a)",
        ))
    } else if value.starts_with(b"AWS4-") {
        Some(SigV4Error::UnsupportedAlgorithm("AWS4-*"))
    } else if value.starts_with(b"AWS ") {
        Some(SigV4Error::UnsupportedAlgorithm(
            "AWS (Signature Version 2)",
        ))
    } else {
        None
    }
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let Some((b' ' | b'\t', rest)) = s.split_first() {
        s = rest;
    }
    while let Some((b' ' | b'\t', rest)) = s.split_last() {
        s = rest;
    }
    s
}

fn parse_signed_headers(value: &[u8]) -> Result<Vec<String>, &'static str> {
    let mut names: Vec<String> = Vec::new();
    for name in value.split(|&b| b == b';') {
        let token_char =
            |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(b);
        if name.is_empty() || !name.iter().all(token_char) {
            return Err("a signed header name is empty or not a lowercase header name");
        }
        let name: String = name.iter().map(|&b| char::from(b)).collect();
        if names.last().is_some_and(|last| *last >= name) {
            return Err("the signed headers are not sorted or repeat a name");
        }
        names.push(name);
    }
    if !names.iter().any(|n| n == "host") {
        return Err("host is not a signed header");
    }
    if names.iter().any(|n| n == HEADER_AUTHORIZATION) {
        return Err("authorization cannot be a signed header");
    }
    Ok(names)
}

fn parse_signature(value: &[u8]) -> Result<[u8; 32], &'static str> {
    let mut out = [0u8; 32];
    if value.iter().any(u8::is_ascii_uppercase) || hex::decode_to_slice(value, &mut out).is_err() {
        return Err("the signature is not 64 lowercase hex digits");
    }
    Ok(out)
}

/// The `X-Amz-*` parameters of a presigned URL.
#[derive(Clone, PartialEq, Eq)]
pub struct PresignedQuery {
    /// `X-Amz-Credential`.
    pub scope: Scope,
    /// `X-Amz-Date`.
    pub timestamp: Timestamp,
    /// `X-Amz-Expires`, 1 to [`MAX_EXPIRES_SECS`].
    pub expires: u32,
    /// `X-Amz-SignedHeaders`.
    pub signed_headers: Vec<String>,
    /// `X-Amz-Security-Token`, decoded.
    pub security_token: Option<Vec<u8>>,
    signature: [u8; 32],
}

impl fmt::Debug for PresignedQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresignedQuery")
            .field("scope", &self.scope)
            .field("timestamp", &self.timestamp)
            .field("expires", &self.expires)
            .field("signed_headers", &self.signed_headers)
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| "[REDACTED]"),
            )
            .finish_non_exhaustive()
    }
}

/// Reads the presigned-URL parameters of a raw query string (without `?`).
///
/// `Ok(None)` when the query has none of the seven `X-Amz-*` authentication parameters. When it
/// has any of them, all of `X-Amz-Algorithm`, `-Credential`, `-Date`, `-Expires`,
/// `-SignedHeaders` and `-Signature` must be there exactly once (`-Security-Token` at most once),
/// spelled with AWS's capitals: a parameter that differs only in case is refused rather than
/// ignored, since the upstream might read it either way.
///
/// # Errors
/// [`SigV4Error::MalformedPresigned`], [`SigV4Error::UnsupportedAlgorithm`],
/// [`SigV4Error::BadPercentEncoding`], [`SigV4Error::MalformedDate`].
///
/// # Example
/// ```
/// use slapenir::aws::sigv4::parse_presigned;
/// let query = b"X-Amz-Algorithm=AWS4-HMAC-SHA256\
///     &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
///     &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
///     &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";
/// let presigned = parse_presigned(query)?.expect("presigned");
/// assert_eq!(presigned.expires, 86400);
/// assert_eq!(parse_presigned(b"list-type=2&prefix=a")?, None);
/// # Ok::<(), slapenir::aws::sigv4::SigV4Error>(())
/// ```
pub fn parse_presigned(query: &[u8]) -> Result<Option<PresignedQuery>, SigV4Error> {
    use SigV4Error::MalformedPresigned as Bad;
    let mut found: [Option<Vec<u8>>; 7] = Default::default();
    for (raw_name, raw_value) in query_params(query) {
        let name = percent_decode(raw_name, "query")?;
        let Some(index) = PRESIGN_PARAMS
            .iter()
            .position(|p| p.as_bytes().eq_ignore_ascii_case(&name))
        else {
            continue;
        };
        if PRESIGN_PARAMS[index].as_bytes() != name.as_slice() {
            return Err(Bad(
                "an X-Amz-* parameter is not spelled with AWS's capitals",
            ));
        }
        if found[index]
            .replace(percent_decode(raw_value, "query")?)
            .is_some()
        {
            return Err(Bad("an X-Amz-* parameter appears twice"));
        }
    }
    if found.iter().all(Option::is_none) {
        return Ok(None);
    }
    let [algorithm, credential, date, expires, signed, signature, token] = found;
    let (
        Some(algorithm),
        Some(credential),
        Some(date),
        Some(expires),
        Some(signed),
        Some(signature),
    ) = (algorithm, credential, date, expires, signed, signature)
    else {
        return Err(Bad(
            "one of X-Amz-Algorithm, -Credential, -Date, -Expires, -SignedHeaders, -Signature is missing",
        ));
    };
    if algorithm != ALGORITHM.as_bytes() {
        return Err(
            other_algorithm(&algorithm).unwrap_or(SigV4Error::UnsupportedAlgorithm(
                "other than AWS4-HMAC-SHA256",
            )),
        );
    }
    let expires = parse_expires(&expires).ok_or(Bad("X-Amz-Expires is not 1 to 604800"))?;
    Ok(Some(PresignedQuery {
        scope: Scope::parse(&credential).map_err(Bad)?,
        timestamp: Timestamp::parse(&date)?,
        expires,
        signed_headers: parse_signed_headers(&signed).map_err(Bad)?,
        security_token: token,
        signature: parse_signature(&signature).map_err(Bad)?,
    }))
}

fn parse_expires(value: &[u8]) -> Option<u32> {
    if value.is_empty() || value.len() > 6 || value.first() == Some(&b'0') {
        return None;
    }
    let n = value.iter().try_fold(0u32, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
    })?;
    (1..=MAX_EXPIRES_SECS).contains(&n).then_some(n)
}

/// Where a request carries its signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// In the `Authorization` header.
    Header,
    /// In the query string (a presigned URL), valid for `expires` seconds.
    Query {
        /// `X-Amz-Expires`.
        expires: u32,
    },
}

/// The SigV4 signature a request carries, wherever it is.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// Header or query.
    pub location: Location,
    /// The credential scope.
    pub scope: Scope,
    /// `X-Amz-Date`.
    pub timestamp: Timestamp,
    /// The signed header names, lowercase and sorted.
    pub signed_headers: Vec<String>,
    signature: [u8; 32],
}

impl fmt::Debug for SignedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedRequest")
            .field("location", &self.location)
            .field("scope", &self.scope)
            .field("timestamp", &self.timestamp)
            .field("signed_headers", &self.signed_headers)
            .finish_non_exhaustive()
    }
}

/// Which payload hash ends the canonical request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// This value, declared by the request (or `UNSIGNED-PAYLOAD` for an S3 presigned URL). A
    /// hex hash is a claim about the body that the body must still be checked against
    /// ([`BodyHasher`]).
    Declared(PayloadHash),
    /// The SHA-256 of the body: a non-S3 request without `x-amz-content-sha256`. The body must
    /// be read whole before the signature can be checked or made.
    HashBody,
}

/// A payload hash as it ends a canonical request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayloadHash {
    /// `UNSIGNED-PAYLOAD`.
    Unsigned,
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: an `aws-chunked` body without chunk signatures.
    StreamingUnsignedTrailer,
    /// The SHA-256 of the body.
    Sha256([u8; 32]),
}

impl PayloadHash {
    /// Reads an `x-amz-content-sha256` value.
    ///
    /// # Errors
    /// [`SigV4Error::SignedChunksUnsupported`] for `STREAMING-AWS4-…-PAYLOAD…` (answer `501`),
    /// [`SigV4Error::MalformedContentSha256`] for anything else unknown.
    pub fn parse(value: &[u8]) -> Result<Self, SigV4Error> {
        if value == UNSIGNED_PAYLOAD.as_bytes() {
            return Ok(PayloadHash::Unsigned);
        }
        if value == STREAMING_UNSIGNED_PAYLOAD_TRAILER.as_bytes() {
            return Ok(PayloadHash::StreamingUnsignedTrailer);
        }
        if SIGNED_CHUNK_PAYLOADS.iter().any(|p| p.as_bytes() == value) {
            return Err(SigV4Error::SignedChunksUnsupported);
        }
        parse_signature(value)
            .map(PayloadHash::Sha256)
            .map_err(|_| SigV4Error::MalformedContentSha256)
    }

    /// The hash of a whole body.
    pub fn of_body(body: &[u8]) -> Self {
        PayloadHash::Sha256(Sha256::digest(body).into())
    }

    /// The text that ends the canonical request and goes into `x-amz-content-sha256`.
    pub fn as_canonical(&self) -> String {
        match self {
            PayloadHash::Unsigned => UNSIGNED_PAYLOAD.to_owned(),
            PayloadHash::StreamingUnsignedTrailer => STREAMING_UNSIGNED_PAYLOAD_TRAILER.to_owned(),
            PayloadHash::Sha256(hash) => to_hex(hash),
        }
    }
}

/// Hashes a body as it streams past, to check a declared hex payload hash or compute a new one.
///
/// Memory is constant whatever the body size.
#[derive(Clone, Default)]
pub struct BodyHasher(Sha256);

impl BodyHasher {
    /// A hasher that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next chunk of the body.
    pub fn update(&mut self, chunk: &[u8]) {
        self.0.update(chunk);
    }

    /// The hash of everything fed.
    pub fn finish(self) -> PayloadHash {
        PayloadHash::Sha256(self.0.finalize().into())
    }
}

/// What to change in a request after [`SignedRequest::resign`].
pub struct Resigned {
    /// Headers to set, each replacing every value of that name.
    pub headers: Vec<HeaderEdit>,
    /// The new query string (without `?`) of a presigned URL.
    pub query: Option<Zeroizing<Vec<u8>>>,
}

impl fmt::Debug for Resigned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resigned")
            .field("headers", &self.headers)
            .field("query", &self.query.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

/// One header to set. The value can hold the real access key id or session token: it prints as
/// `[REDACTED]` and is zeroized when dropped.
pub struct HeaderEdit {
    /// Lowercase header name: `authorization`, `x-amz-security-token` or `x-amz-content-sha256`.
    pub name: &'static str,
    /// The value to send.
    pub value: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for HeaderEdit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: [REDACTED]", self.name)
    }
}

impl SignedRequest {
    /// Finds the SigV4 signature of a request: its `Authorization` header or its presigned query.
    ///
    /// `Ok(None)` when the request carries neither (an anonymous request, or an `Authorization`
    /// of another scheme such as `Bearer`).
    ///
    /// # Errors
    /// [`SigV4Error::AmbiguousAuth`] for both or for two `Authorization` headers,
    /// [`SigV4Error::UnsupportedAlgorithm`] for SigV4a and SigV2, and every error of
    /// [`parse_authorization`] and [`parse_presigned`]. For a header-signed request also
    /// [`SigV4Error::MissingDate`], [`SigV4Error::MalformedDate`], and for either
    /// [`SigV4Error::ScopeDateMismatch`].
    pub fn parse(view: &RequestView<'_>) -> Result<Option<Self>, SigV4Error> {
        let mut authorizations = view.header_values(HEADER_AUTHORIZATION);
        let authorization = authorizations.next();
        if authorizations.next().is_some() {
            return Err(SigV4Error::AmbiguousAuth);
        }
        let presigned = parse_presigned(view.query)?;
        let signed = match (authorization, presigned) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => return Err(SigV4Error::AmbiguousAuth),
            (None, Some(p)) => SignedRequest {
                location: Location::Query { expires: p.expires },
                scope: p.scope,
                timestamp: p.timestamp,
                signed_headers: p.signed_headers,
                signature: p.signature,
            },
            (Some(value), None) => {
                let value = trim_ows(value);
                if !value.starts_with(ALGORITHM.as_bytes()) {
                    return match other_algorithm(value) {
                        Some(err) => Err(err),
                        None => Ok(None),
                    };
                }
                let auth = parse_authorization(value)?;
                let date = view
                    .single_header(HEADER_DATE)?
                    .ok_or(SigV4Error::MissingDate)?;
                SignedRequest {
                    location: Location::Header,
                    scope: auth.scope,
                    timestamp: Timestamp::parse(date)?,
                    signed_headers: auth.signed_headers,
                    signature: auth.signature,
                }
            }
        };
        if signed.scope.date != signed.timestamp.date() {
            return Err(SigV4Error::ScopeDateMismatch);
        }
        Ok(Some(signed))
    }

    /// Which payload hash the signature covers.
    ///
    /// # Errors
    /// [`SigV4Error::DuplicateHeader`], [`SigV4Error::MissingContentSha256`] (S3, header-signed,
    /// no `x-amz-content-sha256`) and the errors of [`PayloadHash::parse`].
    pub fn payload(&self, view: &RequestView<'_>) -> Result<Payload, SigV4Error> {
        if let Some(value) = view.single_header(HEADER_CONTENT_SHA256)? {
            return PayloadHash::parse(value).map(Payload::Declared);
        }
        match (self.location, self.scope.is_s3()) {
            (Location::Query { .. }, true) => Ok(Payload::Declared(PayloadHash::Unsigned)),
            (Location::Header, true) => Err(SigV4Error::MissingContentSha256),
            (_, false) => Ok(Payload::HashBody),
        }
    }

    /// Checks the request against the credential's dummy keys: the access key id, every session
    /// token it carries, then the signature (compared in constant time).
    ///
    /// `view` is the request as the agent sent it and `payload` the hash the signature covers
    /// ([`SignedRequest::payload`]). Call [`SignedRequest::check_time`] as well.
    ///
    /// # Errors
    /// [`SigV4Error::WrongAccessKeyId`], [`SigV4Error::UnexpectedSessionToken`],
    /// [`SigV4Error::WrongSessionToken`], [`SigV4Error::SignatureMismatch`], and the errors of
    /// [`canonical_request`].
    pub fn verify(
        &self,
        view: &RequestView<'_>,
        payload: &PayloadHash,
        dummy: &Keys<'_>,
    ) -> Result<(), SigV4Error> {
        if self.scope.access_key_id != dummy.access_key_id {
            return Err(SigV4Error::WrongAccessKeyId);
        }
        for token in self.session_tokens(view)? {
            match dummy.session_token {
                None => return Err(SigV4Error::UnexpectedSessionToken),
                Some(expected) if !ct_eq(expected, &token) => {
                    return Err(SigV4Error::WrongSessionToken)
                }
                Some(_) => {}
            }
        }
        let canonical = build_canonical(view, &self.scope, &self.signed_headers, payload, &[])?;
        let expected = self.signature_over(&canonical, dummy.secret_access_key);
        if ct_eq(&expected, &self.signature) {
            Ok(())
        } else {
            Err(SigV4Error::SignatureMismatch)
        }
    }

    /// Checks the request's time against the gateway's clock (`now_unix`, seconds since the
    /// epoch): within [`MAX_CLOCK_SKEW_SECS`] for a signed header; for a presigned URL, not more
    /// than that early and not past `X-Amz-Date` + `X-Amz-Expires`. AWS checks the same, but the
    /// gateway should not sign anything with the real key that AWS would refuse anyway.
    ///
    /// # Errors
    /// [`SigV4Error::RequestTimeTooSkewed`], [`SigV4Error::Expired`].
    pub fn check_time(&self, now_unix: i64) -> Result<(), SigV4Error> {
        let t = self.timestamp.unix;
        if now_unix.saturating_sub(t) < -MAX_CLOCK_SKEW_SECS {
            return Err(SigV4Error::RequestTimeTooSkewed);
        }
        match self.location {
            Location::Header if now_unix.saturating_sub(t) > MAX_CLOCK_SKEW_SECS => {
                Err(SigV4Error::RequestTimeTooSkewed)
            }
            Location::Query { expires } if now_unix > t.saturating_add(i64::from(expires)) => {
                Err(SigV4Error::Expired)
            }
            _ => Ok(()),
        }
    }

    /// Signs the request again with the credential's real keys, keeping its time, scope, signed
    /// header names and (for a presigned URL) expiry.
    ///
    /// `upstream` is the request as the upstream will receive it, with the agent's
    /// `Authorization`, `X-Amz-Security-Token` and presigned parameters still in place: this
    /// function decides their new values. `payload` is the hash of the body the upstream will
    /// receive; when it differs from the `x-amz-content-sha256` header, that header is replaced.
    ///
    /// The result names every header to set and, for a presigned URL, the whole new query: the
    /// parameters in their original order and spelling, with `X-Amz-Credential`,
    /// `X-Amz-Security-Token` and `X-Amz-Signature` replaced.
    ///
    /// # Errors
    /// [`SigV4Error::NoRealSessionToken`] when the request carries a token and `real` has none,
    /// [`SigV4Error::MissingSessionToken`] when `real` has a token and the request none, and the
    /// errors of [`canonical_request`].
    pub fn resign(
        &self,
        upstream: &RequestView<'_>,
        payload: &PayloadHash,
        real: &Keys<'_>,
    ) -> Result<Resigned, SigV4Error> {
        let tokens = self.session_tokens(upstream)?;
        let real_token: &[u8] = match (tokens.is_empty(), real.session_token) {
            (true, None) => b"",
            (true, Some(_)) => return Err(SigV4Error::MissingSessionToken),
            (false, None) => return Err(SigV4Error::NoRealSessionToken),
            (false, Some(token)) => token,
        };
        let new_payload = Zeroizing::new(payload.as_canonical().into_bytes());
        let mut overrides: Vec<(&'static str, &[u8])> = Vec::new();
        if upstream.header_values(HEADER_TOKEN).next().is_some() {
            overrides.push((HEADER_TOKEN, real_token));
        }
        if upstream
            .single_header(HEADER_CONTENT_SHA256)?
            .is_some_and(|v| v != new_payload.as_slice())
        {
            overrides.push((HEADER_CONTENT_SHA256, &new_payload));
        }
        let credential = self.scope.with_key(real.access_key_id);
        let presigned = match self.location {
            Location::Header => None,
            Location::Query { .. } => Some(PresignedParams::replace(
                upstream.query,
                &credential,
                real_token,
            )?),
        };
        let unsigned_query = presigned.as_ref().map(|p| p.join(None));
        let view = RequestView {
            query: unsigned_query
                .as_ref()
                .map_or(upstream.query, |q| q.as_slice()),
            ..*upstream
        };
        let canonical = build_canonical(
            &view,
            &self.scope,
            &self.signed_headers,
            payload,
            &overrides,
        )?;
        let signature = to_hex(&self.signature_over(&canonical, real.secret_access_key));

        let mut headers = Vec::new();
        if presigned.is_none() {
            let value = format!(
                "{ALGORITHM} Credential={credential}, SignedHeaders={}, Signature={signature}",
                self.signed_headers.join(";")
            );
            headers.push(HeaderEdit {
                name: HEADER_AUTHORIZATION,
                value: Zeroizing::new(value.into_bytes()),
            });
        }
        headers.extend(overrides.into_iter().map(|(name, value)| HeaderEdit {
            name,
            value: Zeroizing::new(value.to_vec()),
        }));
        Ok(Resigned {
            headers,
            query: presigned.map(|p| p.join(Some(&signature))),
        })
    }

    /// Every session token the request carries, decoded: `X-Amz-Security-Token` headers and,
    /// for a presigned URL, the query parameter.
    fn session_tokens(
        &self,
        view: &RequestView<'_>,
    ) -> Result<Vec<Zeroizing<Vec<u8>>>, SigV4Error> {
        let mut tokens: Vec<Zeroizing<Vec<u8>>> = view
            .header_values(HEADER_TOKEN)
            .map(|v| Zeroizing::new(v.to_vec()))
            .collect();
        if let Location::Query { .. } = self.location {
            for (name, value) in query_params(view.query) {
                if percent_decode(name, "query")? == PRESIGN_TOKEN.as_bytes() {
                    tokens.push(Zeroizing::new(percent_decode(value, "query")?));
                }
            }
        }
        Ok(tokens)
    }

    fn signature_over(&self, canonical: &[u8], secret: &[u8]) -> [u8; 32] {
        let key = signing_key(
            secret,
            &self.scope.date,
            &self.scope.region,
            &self.scope.service,
        );
        sign(
            &key,
            &string_to_sign(&self.timestamp, &self.scope, canonical),
        )
    }
}

/// A presigned query cut into its `&`-separated segments, with `X-Amz-Credential` and
/// `X-Amz-Security-Token` already replaced and the place of `X-Amz-Signature` remembered.
struct PresignedParams {
    segments: Vec<Zeroizing<Vec<u8>>>,
    signature_at: Option<usize>,
}

impl PresignedParams {
    /// Every segment as it was, except the credential and the token, whose values become
    /// `credential` and `token` (encoded), and the signature, which is left for [`Self::join`].
    fn replace(query: &[u8], credential: &str, token: &[u8]) -> Result<Self, SigV4Error> {
        let mut segments = Vec::new();
        let mut signature_at = None;
        for segment in query.split(|&b| b == b'&') {
            let (raw_name, _) = split_param(segment);
            let name = percent_decode(raw_name, "query")?;
            let value = match name.as_slice() {
                n if n == PRESIGN_CREDENTIAL.as_bytes() => uri_encode(credential.as_bytes(), true),
                n if n == PRESIGN_TOKEN.as_bytes() => uri_encode(token, true),
                n if n == PRESIGN_SIGNATURE.as_bytes() => {
                    signature_at = Some(segments.len());
                    String::new()
                }
                _ => {
                    segments.push(Zeroizing::new(segment.to_vec()));
                    continue;
                }
            };
            let mut replaced = Zeroizing::new(Vec::with_capacity(raw_name.len() + 1 + value.len()));
            replaced.extend_from_slice(raw_name);
            replaced.push(b'=');
            replaced.extend_from_slice(value.as_bytes());
            segments.push(replaced);
        }
        Ok(PresignedParams {
            segments,
            signature_at,
        })
    }

    /// The query with `signature` as `X-Amz-Signature`'s value, or without that parameter.
    fn join(&self, signature: Option<&str>) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::new());
        let mut first = true;
        for (i, segment) in self.segments.iter().enumerate() {
            let is_signature = self.signature_at == Some(i);
            if is_signature && signature.is_none() {
                continue;
            }
            if !std::mem::take(&mut first) {
                out.push(b'&');
            }
            out.extend_from_slice(segment);
            if let (true, Some(signature)) = (is_signature, signature) {
                out.extend_from_slice(signature.as_bytes());
            }
        }
        out
    }
}

/// The canonical request of `view` for `service` (the scope's service name), signing the given
/// header names with the given payload hash.
///
/// A query's `X-Amz-Signature` is left out, as a presigned URL requires; a request that also has
/// an `Authorization` header is refused by [`SignedRequest::parse`] before it gets here.
///
/// # Errors
/// [`SigV4Error::BadPercentEncoding`] for a path or query with a bad `%` escape,
/// [`SigV4Error::SignedHeaderMissing`] for a signed header the request lacks.
///
/// # Example
/// ```
/// use slapenir::aws::sigv4::{canonical_request, PayloadHash, RequestView};
/// let headers: &[(&[u8], &[u8])] = &[(b"Host", b"example.amazonaws.com"),
///     (b"My-Header1", b"  a   b  ")];
/// let view = RequestView { method: "GET", path: b"/a/./b//c", query: b"b=2&a=1", headers };
/// let signed = ["host".to_owned(), "my-header1".to_owned()];
/// let creq = canonical_request(&view, "service", &signed, &PayloadHash::Unsigned)?;
/// assert_eq!(String::from_utf8(creq).unwrap(),
///     "GET\n/a/b/c\na=1&b=2\nhost:example.amazonaws.com\nmy-header1:a b\n\nhost;my-header1\n\
///      UNSIGNED-PAYLOAD");
/// # Ok::<(), slapenir::aws::sigv4::SigV4Error>(())
/// ```
pub fn canonical_request(
    view: &RequestView<'_>,
    service: &str,
    signed_headers: &[String],
    payload: &PayloadHash,
) -> Result<Vec<u8>, SigV4Error> {
    let mut out = Vec::new();
    write_canonical(
        &mut out,
        view,
        is_s3_service(service),
        signed_headers,
        payload,
        &[],
    )?;
    Ok(out)
}

fn build_canonical(
    view: &RequestView<'_>,
    scope: &Scope,
    signed_headers: &[String],
    payload: &PayloadHash,
    overrides: &[(&str, &[u8])],
) -> Result<Zeroizing<Vec<u8>>, SigV4Error> {
    // The canonical request holds header values, among them the session token.
    let mut out = Zeroizing::new(Vec::new());
    write_canonical(
        &mut out,
        view,
        scope.is_s3(),
        signed_headers,
        payload,
        overrides,
    )?;
    Ok(out)
}

fn write_canonical(
    out: &mut Vec<u8>,
    view: &RequestView<'_>,
    s3: bool,
    signed_headers: &[String],
    payload: &PayloadHash,
    overrides: &[(&str, &[u8])],
) -> Result<(), SigV4Error> {
    out.extend_from_slice(view.method.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_uri(view.path, s3)?.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_query(view.query)?.as_bytes());
    out.push(b'\n');
    for name in signed_headers {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        let overridden = overrides.iter().find(|(n, _)| *n == name.as_str());
        let values: Vec<&[u8]> = match overridden {
            Some((_, value)) => vec![value],
            None => view.header_values(name).collect(),
        };
        if values.is_empty() {
            return Err(SigV4Error::SignedHeaderMissing(name.clone()));
        }
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_trimmed(out, value);
        }
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(signed_headers.join(";").as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload.as_canonical().as_bytes());
    Ok(())
}

/// Appends `value` without leading and trailing white space and with each inner run of white
/// space as one space (AWS's `Trimall`). White space is ASCII space, tab, CR, LF, VT and FF, as
/// in AWS's C signer; an obsolete folded header line thus joins with one space.
fn push_trimmed(out: &mut Vec<u8>, value: &[u8]) {
    let is_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c);
    let mut pending_space = false;
    let mut started = false;
    for b in value {
        if is_space(b) {
            pending_space = started;
        } else {
            if pending_space {
                out.push(b' ');
                pending_space = false;
            }
            out.push(*b);
            started = true;
        }
    }
}

/// The canonical URI. S3 keeps the path's segments as sent (each decoded and encoded again, so
/// `%2F` inside a segment stays `%2F`); other services remove `.`, `..` and empty segments from
/// the path as sent and encode it (so an escape `%20` becomes `%2520`), as botocore does.
fn canonical_uri(path: &[u8], s3: bool) -> Result<String, SigV4Error> {
    if path.is_empty() {
        return Ok("/".to_owned());
    }
    if s3 {
        let mut out = String::with_capacity(path.len());
        for (i, segment) in path.split(|&b| b == b'/').enumerate() {
            if i > 0 {
                out.push('/');
            }
            out.push_str(&uri_encode(&percent_decode(segment, "path")?, true));
        }
        return Ok(out);
    }
    // Checked even though the escapes are encoded again: a bad one is refused in every service.
    percent_decode(path, "path")?;
    Ok(uri_encode(&remove_dot_segments(path), false))
}

/// RFC 3986 dot-segment removal as AWS services apply it: `.` and empty segments go, `..`
/// removes the segment before it; a leading and a trailing `/` stay.
fn remove_dot_segments(path: &[u8]) -> Vec<u8> {
    let mut kept: Vec<&[u8]> = Vec::new();
    for segment in path.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => {
                kept.pop();
            }
            _ => kept.push(segment),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    if path.first() == Some(&b'/') {
        out.push(b'/');
    }
    out.extend_from_slice(&kept.join(&b'/'));
    if path.last() == Some(&b'/') && !kept.is_empty() {
        out.push(b'/');
    }
    out
}

/// The canonical query: each parameter decoded and encoded again, `X-Amz-Signature` left out,
/// sorted by encoded name then encoded value. A parameter without `=` has an empty value; empty
/// segments (`a=1&&b=2`) are skipped.
fn canonical_query(query: &[u8]) -> Result<String, SigV4Error> {
    let mut pairs = Vec::new();
    for (name, value) in query_params(query) {
        let name = percent_decode(name, "query")?;
        if name == PRESIGN_SIGNATURE.as_bytes() {
            continue;
        }
        pairs.push((
            uri_encode(&name, true),
            uri_encode(&percent_decode(value, "query")?, true),
        ));
    }
    pairs.sort();
    let mut out = String::with_capacity(query.len());
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
    Ok(out)
}

/// The non-empty `name=value` segments of a raw query, split at the first `=`.
fn query_params(query: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    query
        .split(|&b| b == b'&')
        .filter(|s| !s.is_empty())
        .map(split_param)
}

fn split_param(segment: &[u8]) -> (&[u8], &[u8]) {
    match segment.iter().position(|&b| b == b'=') {
        Some(eq) => (&segment[..eq], &segment[eq + 1..]),
        None => (segment, &[]),
    }
}

/// Decodes `%XX` escapes; `+` stays a plus. `place` names the path or the query in the error.
/// A `%` without two hex digits is refused (`percent-encoding` would pass it through as it
/// is, and the upstream may read it otherwise).
fn percent_decode(input: &[u8], place: &'static str) -> Result<Vec<u8>, SigV4Error> {
    let is_hex = |i: usize| input.get(i).is_some_and(u8::is_ascii_hexdigit);
    let malformed = input
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'%' && !(is_hex(i + 1) && is_hex(i + 2)));
    if malformed {
        return Err(SigV4Error::BadPercentEncoding(place));
    }
    Ok(percent_encoding::percent_decode(input).collect())
}

/// AWS's `UriEncode` set: everything but `A-Z a-z 0-9 - _ . ~` (upper-case hex).
const URI_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// [`URI_ENCODE`] without `/`, for paths.
const URI_ENCODE_PATH: &AsciiSet = &URI_ENCODE.remove(b'/');

/// AWS's `UriEncode`, leaving `/` as it is unless `encode_slash`.
fn uri_encode(input: &[u8], encode_slash: bool) -> String {
    let set = if encode_slash {
        URI_ENCODE
    } else {
        URI_ENCODE_PATH
    };
    percent_encode(input, set).to_string()
}

/// The string to sign: algorithm, time, credential scope and the canonical request's hash.
pub fn string_to_sign(timestamp: &Timestamp, scope: &Scope, canonical_request: &[u8]) -> Vec<u8> {
    format!(
        "{ALGORITHM}\n{}\n{}\n{}",
        timestamp.as_str(),
        scope.credential_scope(),
        to_hex(&Sha256::digest(canonical_request))
    )
    .into_bytes()
}

/// The signing key: `HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service),
/// "aws4_request")`. It and every intermediate key are zeroized when dropped.
///
/// # Example
/// ```
/// use slapenir::aws::sigv4::{signing_key, to_hex};
/// // From AWS's documentation of the signing key derivation.
/// let key = signing_key(b"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam");
/// assert_eq!(to_hex(&*key), "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");
/// ```
pub fn signing_key(secret: &[u8], date: &str, region: &str, service: &str) -> Zeroizing<[u8; 32]> {
    let mut k_secret = Zeroizing::new(Vec::with_capacity(secret.len() + 4));
    k_secret.extend_from_slice(b"AWS4");
    k_secret.extend_from_slice(secret);
    let k_date = Zeroizing::new(hmac_sha256(&k_secret, date.as_bytes()));
    let k_region = Zeroizing::new(hmac_sha256(&*k_date, region.as_bytes()));
    let k_service = Zeroizing::new(hmac_sha256(&*k_region, service.as_bytes()));
    Zeroizing::new(hmac_sha256(&*k_service, b"aws4_request"))
}

/// The signature of a string to sign, raw; [`to_hex`] gives the form AWS sends.
pub fn sign(signing_key: &[u8; 32], string_to_sign: &[u8]) -> [u8; 32] {
    hmac_sha256(signing_key, string_to_sign)
}

/// Lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// HMAC-SHA256 (RFC 2104), written out over `sha2` because the `hmac` crate's constructor is
/// fallible in its signature (though never for HMAC), and the request path takes no `unwrap`.
/// Checked against RFC 4231's vectors in the tests.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = Zeroizing::new([0u8; BLOCK]);
    let hashed;
    let key = if key.len() > BLOCK {
        hashed = Zeroizing::new(<[u8; 32]>::from(Sha256::digest(key)));
        &hashed[..]
    } else {
        key
    };
    for (slot, k) in block.iter_mut().zip(key) {
        *slot = *k;
    }
    let mut pad = Zeroizing::new([0u8; BLOCK]);
    for (p, k) in pad.iter_mut().zip(block.iter()) {
        *p = k ^ 0x36;
    }
    let inner: [u8; 32] = Sha256::new()
        .chain_update(&pad[..])
        .chain_update(message)
        .finalize()
        .into();
    for (p, k) in pad.iter_mut().zip(block.iter()) {
        *p = k ^ 0x5c;
    }
    Sha256::new()
        .chain_update(&pad[..])
        .chain_update(inner)
        .finalize()
        .into()
}

/// Equality whose time depends only on the lengths.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

#[cfg(test)]
#[path = "sigv4_suite.rs"]
mod suite;

#[cfg(test)]
#[path = "sigv4_tests.rs"]
mod tests;
