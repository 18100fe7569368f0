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
    "rotation",
    "limits",
    "dns",
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
    /// Connections the gateway holds to this upstream at once (pooled and in use).
    #[serde(default)]
    pub max_connections: Option<u64>,
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
    /// Where the dummy is swapped; default: the `Authorization` header.
    #[serde(default)]
    pub swap_in: Option<RawSwapIn>,
    /// The requests the swap happens for; default: all.
    #[serde(default)]
    pub allow: Option<Vec<RawAllow>>,
    /// A real value per client identity, instead of `real`.
    #[serde(default)]
    pub clients: Option<std::collections::BTreeMap<String, RawSecretSource>>,
}

/// `swap_in:` of a credential.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSwapIn {
    #[serde(default)]
    pub headers: Option<Vec<String>>,
    #[serde(default)]
    pub basic: Option<bool>,
    #[serde(default)]
    pub query: Option<Vec<String>>,
    #[serde(default)]
    pub path: Option<bool>,
    #[serde(default)]
    pub body: Option<Vec<String>>,
    #[serde(default)]
    pub websocket: Option<bool>,
}

/// One entry of a credential's `allow:` list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAllow {
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    #[serde(default)]
    pub paths: Option<Vec<String>>,
    #[serde(default)]
    pub query: Option<Vec<String>>,
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
///
/// `real` is a secret position: whatever an operator wrote there by mistake (the key itself,
/// `real: sk-live-...`, a key pasted as a map key or as the variable name) must never be
/// quoted back by `check`, at startup, in a reload failure or by `/reload/plan`. serde's
/// derived errors quote the value (`invalid type: string "sk-live-..."`, `unknown field
/// `sk-live-...``), so this type is deserialized by hand from a YAML value, and every error
/// says what is expected without showing what was found. The variable name is checked (and
/// never quoted either) by validation, which knows where it stands in the file.
#[derive(Debug, Default)]
pub struct RawSecretSource {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

/// The error for anything under `real` that is not `{ env: NAME }` or `{ file: PATH }`.
pub const REAL_SHAPE: &str = "`real` must be a map with `env: VARIABLE` or `file: PATH` \
     (secrets are never written in the config); a value written here is not shown";

impl<'de> Deserialize<'de> for RawSecretSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        use serde_yaml::Value;
        // Reading any YAML into a `Value` cannot fail on content, so no value is quoted here.
        let Value::Mapping(map) = Value::deserialize(d)? else {
            return Err(D::Error::custom(REAL_SHAPE));
        };
        let mut out = RawSecretSource::default();
        for (key, value) in map {
            match (key.as_str(), value) {
                (Some("env"), Value::String(name)) => out.env = Some(name),
                (Some("file"), Value::String(path)) => out.file = Some(PathBuf::from(path)),
                (Some(key @ ("env" | "file")), _) => {
                    return Err(D::Error::custom(format!(
                        "`real.{key}` must be a string; the value written here is not shown"
                    )))
                }
                _ => return Err(D::Error::custom(REAL_SHAPE)),
            }
        }
        Ok(out)
    }
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

/// What happens to a real value that a reload replaced or removed (`rotation:`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRotation {
    /// How long a retired real value stays in the response rules; `0s` drops it at once.
    #[serde(default)]
    pub retired_grace: Option<String>,
}

/// How upstream host names are resolved and cached (`dns:`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    /// Name servers (`IP` or `IP:PORT`); default: the system resolver.
    #[serde(default)]
    pub servers: Option<Vec<String>>,
    #[serde(default)]
    pub min_ttl: Option<String>,
    #[serde(default)]
    pub max_ttl: Option<String>,
    #[serde(default)]
    pub serve_stale: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub system_ttl: Option<String>,
}
