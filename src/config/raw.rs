//! The YAML mirror: plain serde structs shaped exactly like the file, with
//! `deny_unknown_fields` so a typo is an error, not a silently ignored key. Nothing here is
//! trusted; `super::validate` turns it into the typed [`super::Config`].

use std::path::PathBuf;

use serde::Deserialize;

/// Top-level keys, in the order the documentation lists them.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "listeners",
    "admin",
    "interception",
    "upstreams",
    "credentials",
    "routes",
    "decoding",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: String,
    pub address: String,
    #[serde(default)]
    pub tls: Option<RawListenerTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// `required` (the default, needs `client_ca`) or `none`.
    #[serde(default)]
    pub client_auth: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub address: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInterception {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: String,
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// `auto` (default), `1.1` or `2`.
    #[serde(default)]
    pub http_version: Option<String>,
    #[serde(default)]
    pub connect_timeout: Option<String>,
    #[serde(default)]
    pub read_timeout: Option<String>,
    /// A client certificate the gateway presents to this upstream (upstream mTLS).
    #[serde(default)]
    pub client_cert: Option<RawClientCert>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A credential: `kind: token` (the default) has `dummy` and `real`; `kind: aws` has
/// `access_key_id`, `secret_access_key` and optionally `session_token`, each a dummy/real pair.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredential {
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub dummy: Option<String>,
    #[serde(default)]
    pub real: Option<RawSecretSource>,
    #[serde(default)]
    pub access_key_id: Option<RawPair>,
    #[serde(default)]
    pub secret_access_key: Option<RawPair>,
    #[serde(default)]
    pub session_token: Option<RawPair>,
    pub upstreams: Vec<String>,
}

/// One dummy/real pair of an `aws` credential.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPair {
    pub dummy: String,
    pub real: RawSecretSource,
}

/// Exactly one of `env` and `file`. There is deliberately no way to write a real secret inline:
/// config files end up in repositories, tickets and logs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecretSource {
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub host: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    pub upstream: String,
    #[serde(default)]
    pub clients: Option<Vec<String>>,
    #[serde(default)]
    pub websocket: Option<bool>,
}

/// Limits on decoding compressed response bodies (`decoding:`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDecoding {
    #[serde(default)]
    pub max_ratio: Option<u64>,
    #[serde(default)]
    pub max_bytes: Option<RawSize>,
}

/// A byte size: a plain number of bytes, or a number and a unit (`512KiB`, `1GiB`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(u64),
    Text(String),
}
