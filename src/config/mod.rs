//! Configuration: the YAML file an operator edits, turned once into typed values.
//!
//! Loading has three layers:
//! 1. [`raw`]: serde structs that mirror the file (`deny_unknown_fields`).
//! 2. [`locate`]: where each value stands, so that every error names `file:line:column`.
//! 3. [`validate`]: every check at once — addresses, URLs, files, cross references, secrets —
//!    producing the typed [`Config`] that the proxy uses. Nothing string-typed survives.
//!
//! Errors and warnings never contain a secret value: real values are only ever read from an
//! environment variable or a file, and messages name the credential and its source.
//!
//! Relative file paths in a config file are resolved against the current working directory of
//! the process (so `certs/gateway.crt` means the same for `--config conf/x.yaml` and for the
//! embedded default); deployments use absolute paths.

pub mod limits;
pub mod locate;
pub mod raw;
pub mod swap;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use crate::pki::upstream::ClientCert;
use crate::secret::{Secret, SecretSource};
pub use locate::{Location, YamlPath};

/// The documented example, compiled in: `slapenir run` without `--config` serves it.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../conf/slapenir.yaml");

/// The name the embedded default is reported under.
pub const EMBEDDED_NAME: &str = "<embedded conf/slapenir.yaml>";

/// A validated configuration. Cloning it shares its secrets (`Arc`s), never copies them.
#[derive(Debug, Clone)]
pub struct Config {
    pub listeners: Vec<Listener>,
    pub admin: Option<Admin>,
    pub interception: Option<Interception>,
    pub upstreams: Vec<Upstream>,
    pub credentials: Vec<Credential>,
    pub routes: Vec<Route>,
    /// How far a compressed response body may expand while it is decoded for scanning.
    pub decoding: crate::rewrite::decode::Budget,
    /// What happens to real values that a reload retires.
    pub rotation: Rotation,
    /// `limits:`: connections, rates and timeouts, globally and per client identity.
    pub limits: limits::Limits,
    /// How upstream host names are resolved and cached (see `crate::dns`).
    pub dns: Arc<Dns>,
}

/// `dns:`: how upstream host names are resolved and how long answers are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dns {
    /// Name servers asked directly (answers carry their TTL); empty: the system resolver
    /// (`/etc/hosts`, `/etc/resolv.conf`...), whose answers carry no TTL and are kept for
    /// [`Self::system_ttl`].
    pub servers: Vec<SocketAddr>,
    /// An answer's TTL is raised to at least this...
    pub min_ttl: Duration,
    /// ...and cut to at most this.
    pub max_ttl: Duration,
    /// How long after its TTL the last good answer is still used while refreshing it fails.
    pub serve_stale: Duration,
    /// How long one query to one name server may take.
    pub timeout: Duration,
    /// How long an answer of the system resolver is kept.
    pub system_ttl: Duration,
}

impl Default for Dns {
    fn default() -> Self {
        Dns {
            servers: Vec::new(),
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(300),
            serve_stale: Duration::from_secs(60),
            timeout: Duration::from_secs(2),
            system_ttl: Duration::from_secs(30),
        }
    }
}

/// `rotation:`: how long a retired real value (replaced or removed by a reload) stays scrubbed
/// from responses. See `crate::policy::retired`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Zero drops a retired value at the reload that retires it.
    pub retired_grace: Duration,
}

impl Rotation {
    /// The default: a retired value stays scrubbed for 24 hours (or until a restart).
    pub const DEFAULT: Rotation = Rotation {
        retired_grace: Duration::from_secs(24 * 60 * 60),
    };
}

impl Config {
    /// The client identities that have values of their own in some credential (`clients:`),
    /// sorted: the only identities metrics and the status page name.
    pub fn client_identities(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .credentials
            .iter()
            .flat_map(|c| c.values.iter().filter_map(|v| v.client.clone()))
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub address: SocketAddr,
    pub tls: Option<ListenerTls>,
}

#[derive(Debug, Clone)]
pub struct ListenerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `None` only when the file says `client_auth: none`.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub address: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct Interception {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    /// The CA as loaded by validation (which proves it can sign): the server mints tunnel
    /// leaves with this one rather than reading the files again.
    pub minter: std::sync::Arc<crate::pki::mint::Minter>,
}

/// Which HTTP version the gateway speaks to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    /// TLS: offer h2 and http/1.1 by ALPN; plain: HTTP/1.1.
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only (over TLS by ALPN; over plain TCP with prior knowledge, "h2c").
    Http2,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub tls: bool,
    /// Host name or IP literal, lower case, without brackets.
    pub host: String,
    pub port: u16,
    /// What goes into the `Host` header: the host, plus the port unless it is the default.
    pub authority: String,
    /// Extra trust roots (DER), added to the system roots; `None` uses the system roots only.
    pub ca: Option<Arc<Vec<Vec<u8>>>>,
    pub http_version: HttpVersion,
    pub connect_timeout: Duration,
    pub read_timeout: Option<Duration>,
    /// The certificate chain (DER, leaf first) and key (DER) presented to this upstream.
    pub client_cert: Option<Arc<ClientCert>>,
    /// Connections the gateway holds to this upstream at once (see `crate::proxy::peer`).
    pub max_connections: usize,
}

impl Upstream {
    /// The default of `upstreams.NAME.max_connections`.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
}

#[derive(Debug, Clone)]
pub struct Credential {
    pub name: String,
    /// The placeholder the agent holds. Not a secret, but still never shown on status pages.
    pub dummy: Vec<u8>,
    /// The real value (`real:`, one entry with no client), or one per client identity
    /// (`clients:`), each with its source and the value or why it is unavailable.
    pub values: Vec<RealValue>,
    /// Indexes into [`Config::upstreams`]: the only upstreams this secret may be sent to.
    pub upstreams: Vec<UpstreamId>,
    /// For a part of an `aws` credential (named `NAME.access_key_id`, `NAME.secret_access_key`,
    /// `NAME.session_token`): which part, and the credential's name.
    pub aws: Option<AwsPart>,
    /// Where in a request the dummy is swapped for the real value.
    pub swap_in: SwapIn,
    /// The requests the swap happens for (`allow:`); `None` allows every request.
    pub allow: Option<Vec<AllowRule>>,
}

impl Credential {
    /// Whether the real values are per client identity (`clients:`): a client without one of
    /// its own is refused.
    pub fn per_client(&self) -> bool {
        self.values.iter().any(|v| v.client.is_some())
    }

    /// The value for a client identity slot: the shared value, or the client's own.
    pub fn value_for(&self, client: Option<&str>) -> Option<&RealValue> {
        self.values
            .iter()
            .find(|v| v.client.is_none() || v.client.as_deref() == client)
    }

    /// Whether every real value is loaded.
    pub fn available(&self) -> bool {
        self.values.iter().all(|v| v.real.is_ok())
    }
}

/// A real value of a credential: for every client, or for one client identity.
#[derive(Debug, Clone)]
pub struct RealValue {
    /// The client identity this value is for; `None` for every client.
    pub client: Option<String>,
    pub source: SecretSource,
    /// The real value, or why it is unavailable (a message naming the source, never a value).
    pub real: Result<Arc<Secret>, String>,
}

/// Where a credential's dummy is swapped for its real value (`swap_in:`). A dummy found
/// anywhere else in a request to one of its upstreams is forwarded unchanged, and counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapIn {
    /// Header values, by name (lower case). `proxy-authorization` is never one.
    pub headers: Vec<http::HeaderName>,
    /// The credentials inside `Basic` values of those headers.
    pub basic: bool,
    /// Query parameter values, by parameter name (as written, case-sensitive).
    pub query: Vec<String>,
    /// The path.
    pub path: bool,
    /// The request body, when its media type matches one of these (`type/subtype`,
    /// `type/*` or `*/*`, lower case).
    pub body: Vec<String>,
    /// WebSocket messages from the agent.
    pub websocket: bool,
}

impl SwapIn {
    /// The default: the `Authorization` header, `Basic` credentials included.
    pub fn authorization() -> SwapIn {
        SwapIn {
            headers: vec![http::header::AUTHORIZATION],
            basic: true,
            query: Vec::new(),
            path: false,
            body: Vec::new(),
            websocket: false,
        }
    }

    /// Whether the body list matches `media_type` (lower case, without parameters).
    pub fn body_matches(&self, media_type: &str) -> bool {
        self.body.iter().any(|p| media_type_matches(p, media_type))
    }
}

/// Whether the pattern `type/subtype`, `type/*` or `*/*` matches `media_type`.
pub fn media_type_matches(pattern: &str, media_type: &str) -> bool {
    match pattern.split_once('/') {
        Some(("*", "*")) => true,
        Some((ty, "*")) => media_type.split_once('/').is_some_and(|(t, _)| t == ty),
        _ => pattern == media_type,
    }
}

/// One entry of a credential's `allow:` list: the swap happens for a request whose method, path
/// and query parameters all match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    /// Upper case; empty allows every method.
    pub methods: Vec<String>,
    /// Empty allows every path.
    pub paths: Vec<PathPattern>,
    /// Parameter names the query may hold; `None` allows any.
    pub query: Option<Vec<String>>,
}

impl AllowRule {
    /// Whether a request matches: `path` as used for routing (see `proxy::request::match_path`),
    /// `query` the raw query (after `?`), whose parameter names must all be allowed.
    pub fn matches(&self, method: &str, path: &[u8], query: &[u8]) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
            && (self.paths.is_empty() || self.paths.iter().any(|p| p.matches(path)))
            && self.query.as_ref().is_none_or(|allowed| {
                query
                    .split(|&b| b == b'&')
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| pair.split(|&b| b == b'=').next().unwrap_or_default())
                    .all(|n| allowed.iter().any(|a| a.as_bytes() == n))
            })
    }
}

/// A path pattern: `*` matches within one segment (never `/`, nor an encoded `/` or `\`), `**`
/// as a whole last segment matches the rest of the path (one or more segments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern(pub String);

impl PathPattern {
    /// Checks a pattern written in the file.
    ///
    /// # Errors
    /// What is wrong with it.
    pub fn parse(s: &str) -> Result<PathPattern, String> {
        if !s.starts_with('/') {
            return Err(format!("`{s}` is not a path pattern: it starts with `/`"));
        }
        if s.bytes()
            .any(|b| b.is_ascii_control() || matches!(b, b' ' | b'?' | b'#'))
        {
            return Err(format!(
                "`{s}` is not a path pattern: no spaces, `?` or `#` (query parameters go in `query`)"
            ));
        }
        let segments: Vec<&str> = s.split('/').collect();
        for (i, seg) in segments.iter().enumerate() {
            if seg.contains("**") && (*seg != "**" || i + 1 != segments.len()) {
                return Err(format!(
                    "`{s}`: `**` stands alone as the last segment (`/repos/**`); use `*` within a segment"
                ));
            }
            if *seg == "." || *seg == ".." {
                return Err(format!(
                    "`{s}`: dot segments never match (they are refused)"
                ));
            }
        }
        Ok(PathPattern(s.to_owned()))
    }

    /// Whether `path` (no query) matches.
    pub fn matches(&self, path: &[u8]) -> bool {
        let pat = self.0.as_bytes();
        match pat.strip_suffix(b"/**") {
            Some(prefix) => (0..path.len()).any(|cut| {
                path[cut] == b'/' && cut + 1 < path.len() && glob_segmented(prefix, &path[..cut])
            }),
            None => glob_segmented(pat, path),
        }
    }
}

/// `*` matches any run of bytes within a segment; everything else literally.
fn glob_segmented(pat: &[u8], text: &[u8]) -> bool {
    match pat.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => {
            let mut i = 0;
            loop {
                if glob_segmented(rest, &text[i..]) {
                    return true;
                }
                match text.get(i) {
                    None | Some(b'/') => return false,
                    Some(b'%') if is_encoded_separator(&text[i..]) => return false,
                    Some(_) => i += 1,
                }
            }
        }
        Some((&c, rest)) => text
            .split_first()
            .is_some_and(|(&t, tail)| t == c && glob_segmented(rest, tail)),
    }
}

/// `%2F`, `%5C` (any case): an upstream may decode them into a separator.
fn is_encoded_separator(text: &[u8]) -> bool {
    matches!(
        text.get(..3).map(|t| t.to_ascii_uppercase()).as_deref(),
        Some(b"%2F" | b"%5C")
    )
}

/// Which part of an `aws` credential a [`Credential`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsPart {
    /// The name of the `aws` credential in the file.
    pub group: String,
    pub role: AwsRole,
}

/// The parts of an AWS key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsRole {
    /// Sent in `Authorization` and presigned URLs; swapped when the request is signed again.
    AccessKeyId,
    /// Never sent: requests are signed with it.
    SecretAccessKey,
    /// `X-Amz-Security-Token` of temporary credentials.
    SessionToken,
}

impl AwsRole {
    /// The key of this part in the file.
    pub fn key(self) -> &'static str {
        match self {
            AwsRole::AccessKeyId => "access_key_id",
            AwsRole::SecretAccessKey => "secret_access_key",
            AwsRole::SessionToken => "session_token",
        }
    }
}

/// An upstream: its place in [`Config::upstreams`]. Routes, credentials, rule tables and
/// requests name an upstream by it, so an upstream index is never mistaken for another index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpstreamId(pub usize);

/// A route: its place in [`Config::routes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteId(pub usize);

impl Config {
    /// The upstream `id` names.
    pub fn upstream(&self, id: UpstreamId) -> Option<&Upstream> {
        self.upstreams.get(id.0)
    }

    /// Every upstream with its id.
    pub fn upstream_ids(&self) -> impl Iterator<Item = (UpstreamId, &Upstream)> {
        self.upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| (UpstreamId(i), u))
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    /// Lower-case host name or IP literal.
    pub host: String,
    /// Matches only requests for this port when set; any port otherwise.
    pub port: Option<u16>,
    /// A plain prefix of the request path; `/` by default.
    pub path_prefix: String,
    pub upstream: UpstreamId,
    /// Certificate identities allowed on this route; `None` allows every authenticated client.
    pub clients: Option<Vec<String>>,
    pub websocket: bool,
}

impl Config {
    /// Loads and validates `path`.
    ///
    /// # Errors
    /// Every problem found, each with its location; see [`ConfigErrors`].
    pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
        let source = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![Diagnostic {
                file: path.display().to_string(),
                location: None,
                path: YamlPath::root().to_string(),
                message: format!("cannot read the config file: {e}"),
            }])
        })?;
        Self::from_source(&source, &path.display().to_string(), Path::new("."))
    }

    /// Loads the embedded default.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn embedded() -> Result<Loaded, ConfigErrors> {
        Self::from_source(EMBEDDED_DEFAULT, EMBEDDED_NAME, Path::new("."))
    }

    /// Validates YAML text; `file` names it in messages, `base` resolves relative paths.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_source(source: &str, file: &str, base: &Path) -> Result<Loaded, ConfigErrors> {
        validate::validate(source, file, base)
    }
}

/// A configuration and the warnings produced while loading it.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
}

/// One error or warning, pointing at the file, line and column, and the YAML path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub location: Option<Location>,
    /// The YAML path, e.g. `routes[2].upstream`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some(loc) => write!(f, "{}:{}: {}: {}", self.file, loc, self.path, self.message),
            None => write!(f, "{}: {}: {}", self.file, self.path, self.message),
        }
    }
}

/// Every error found in a configuration, in file order.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<Diagnostic>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The longest duration any key takes (timeouts, TTLs): longer ones are mistakes, and would
/// overflow the deadlines computed from them (a request would fail, unanswered).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Parses a duration key's value: at most [`MAX_TIMEOUT`], and more than zero unless
/// `allow_zero`.
///
/// # Errors
/// A message saying what is allowed.
pub fn bounded_duration(s: &str, allow_zero: bool) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() && !allow_zero => Err("must be more than zero".into()),
        d if d > MAX_TIMEOUT => Err("must be at most 7 days".into()),
        d => Ok(d),
    }
}

/// Parses a duration such as `5s`, `250ms` or `2m`.
///
/// # Errors
/// A message saying what is allowed.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|_| format!("`{s}` is not a duration; use a number and a unit, like 5s or 250ms"))
}

/// Parses a byte size: a number of bytes (`1048576`), or a number and a binary unit (`B`,
/// `KiB`, `MiB`, `GiB`, `TiB`; `512KiB`, `1 GiB`).
///
/// # Errors
/// A message saying what is allowed.
pub fn parse_size(s: &str) -> Result<u64, String> {
    const UNITS: [(&str, u64); 5] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("B", 1),
    ];
    let text = s.trim();
    let (number, scale) = UNITS
        .iter()
        .find_map(|(unit, scale)| text.strip_suffix(unit).map(|n| (n.trim_end(), *scale)))
        .unwrap_or((text, 1));
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| {
            format!("`{s}` is not a size; use a number of bytes, or a number and a unit (B, KiB, MiB, GiB, TiB), like 1GiB")
        })
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
