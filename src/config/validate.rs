//! Turns YAML text into a [`Config`], collecting every problem instead of stopping at the first.
//!
//! Each section item is deserialized on its own (so one bad route does not hide the next), then
//! checked by small named functions, then cross-referenced (routes → upstreams, credentials →
//! upstreams, duplicate routes and dummies). Messages name the bad value and what is allowed;
//! real secret values are never read into a message.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_yaml::Value;

use super::locate::{LocationIndex, YamlPath};
use super::raw::*;
use super::*;
use crate::secret::{LoadError, SecretSource};

/// Collects diagnostics with their positions.
struct Report<'a> {
    file: &'a str,
    index: LocationIndex,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Report<'_> {
    fn diag(&self, path: &YamlPath, key: bool, message: String) -> Diagnostic {
        let location = if key {
            self.index.key(path)
        } else {
            self.index.value(path)
        };
        Diagnostic {
            file: self.file.to_owned(),
            location,
            path: path.to_string(),
            message,
        }
    }

    fn error(&mut self, path: &YamlPath, message: impl Into<String>) {
        let d = self.diag(path, false, message.into());
        self.errors.push(d);
    }

    fn key_error(&mut self, path: &YamlPath, message: impl Into<String>) {
        let d = self.diag(path, true, message.into());
        self.errors.push(d);
    }

    fn warn(&mut self, path: &YamlPath, message: impl Into<String>) {
        let d = self.diag(path, false, message.into());
        self.warnings.push(d);
    }

    /// Deserializes one item, reporting a serde error at the exact nested path.
    fn item<T: DeserializeOwned>(&mut self, path: &YamlPath, value: &Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(v) => Some(v),
            Err(e) => {
                let mut p = path.clone();
                for seg in e.path().iter() {
                    p = match seg {
                        serde_path_to_error::Segment::Seq { index } => p.index(*index),
                        serde_path_to_error::Segment::Map { key } => p.key(key),
                        serde_path_to_error::Segment::Enum { variant } => p.key(variant),
                        serde_path_to_error::Segment::Unknown => p,
                    };
                }
                let msg = e.inner().to_string();
                // "unknown field `x`": point at the offending key itself.
                if let Some(field) = unknown_field(&msg) {
                    // The path may or may not already end at the unknown key.
                    let at = if p.to_string().ends_with(field) {
                        p
                    } else {
                        p.key(field)
                    };
                    self.key_error(&at, msg);
                } else {
                    self.error(&p, msg);
                }
                None
            }
        }
    }
}

fn unknown_field(msg: &str) -> Option<&str> {
    let rest = msg.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// Entry point: see [`Config::from_source`].
pub(super) fn validate(source: &str, file: &str, base: &Path) -> Result<Loaded, ConfigErrors> {
    let root: Value = match serde_yaml::from_str(source) {
        Ok(v) => v,
        Err(e) => {
            let location = e.location().map(|l| Location {
                line: l.line(),
                column: l.column(),
            });
            return Err(ConfigErrors(vec![Diagnostic {
                file: file.to_owned(),
                location,
                path: YamlPath::root().to_string(),
                message: format!("not valid YAML: {}", strip_location(&e.to_string())),
            }]));
        }
    };
    let mut r = Report {
        file,
        index: LocationIndex::build(source),
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let config = check_document(&mut r, &root, base);
    if r.errors.is_empty() {
        if let Some(config) = config {
            return Ok(Loaded {
                config,
                warnings: r.warnings,
            });
        }
    }
    let mut errors = r.errors;
    errors.sort_by_key(|d| d.location.map(|l| (l.line, l.column)));
    Err(ConfigErrors(errors))
}

fn strip_location(msg: &str) -> &str {
    msg.rsplit_once(" at line ").map_or(msg, |(m, _)| m)
}

fn check_document(r: &mut Report<'_>, root: &Value, base: &Path) -> Option<Config> {
    let top = YamlPath::root();
    let map = match root {
        Value::Mapping(m) => m,
        Value::Null => {
            r.error(
                &top,
                "the file is empty; see conf/slapenir.yaml for the format",
            );
            return None;
        }
        _ => {
            r.error(&top, "the top level must be a mapping of sections");
            return None;
        }
    };
    let mut sections: HashMap<&str, &Value> = HashMap::new();
    for (k, v) in map {
        match k.as_str() {
            Some(name) if TOP_LEVEL_KEYS.contains(&name) => {
                sections.insert(name, v);
            }
            Some(name) => r.key_error(
                &top.key(name),
                format!(
                    "unknown section `{name}`; allowed: {}",
                    TOP_LEVEL_KEYS.join(", ")
                ),
            ),
            None => r.error(&top, "section names must be strings"),
        }
    }

    let listeners = check_listeners(r, sections.get("listeners").copied(), base);
    let admin = sections
        .get("admin")
        .filter(|v| !v.is_null())
        .and_then(|v| check_admin(r, v));
    let interception = sections
        .get("interception")
        .filter(|v| !v.is_null())
        .and_then(|v| check_interception(r, v, base));
    let upstreams = check_upstreams(r, sections.get("upstreams").copied(), base);
    let upstream_names: Vec<String> = upstreams.iter().map(|(n, _)| n.clone()).collect();
    let credentials = check_credentials(
        r,
        sections.get("credentials").copied(),
        &upstream_names,
        base,
    );
    let routes = check_routes(r, sections.get("routes").copied(), &upstream_names);
    let decoding = match sections.get("decoding").filter(|v| !v.is_null()) {
        Some(v) => check_decoding(r, v),
        None => Some(crate::rewrite::decode::Budget::DEFAULT),
    };
    let rotation = match sections.get("rotation").filter(|v| !v.is_null()) {
        Some(v) => check_rotation(r, v),
        None => Some(Rotation::DEFAULT),
    };
    let limits = match sections.get("limits").filter(|v| !v.is_null()) {
        Some(v) => check_limits(r, v),
        None => Some(super::limits::Limits::default_limits()),
    };

    let dns = match sections.get("dns").filter(|v| !v.is_null()) {
        Some(v) => check_dns(r, v),
        None => Some(Dns::default()),
    };

    let upstreams: Vec<Upstream> = upstreams.into_iter().filter_map(|(_, u)| u).collect();
    if upstreams.len() != upstream_names.len() {
        return None;
    }
    for c in credentials.iter().flatten() {
        if c.swap_in.body.is_empty() {
            continue;
        }
        for up in c.upstreams.iter().filter_map(|&u| upstreams.get(u)) {
            if super::swap::looks_like_llm(up) {
                r.warn(
                    &YamlPath::root()
                        .key("credentials")
                        .key(c.aws.as_ref().map_or(&c.name, |a| &a.group))
                        .key("swap_in")
                        .key("body"),
                    format!(
                        "credential `{}` is swapped into request bodies sent to upstream `{}`, which looks like a language-model API: a model can be asked to repeat the real key transformed (reversed, spaced out, translated) where no scrubber finds it; swap it in headers only (docs/agents.md, \"Where a key may go\")",
                        c.name, up.name
                    ),
                );
            }
        }
    }
    Some(Config {
        listeners: listeners?,
        admin,
        interception,
        upstreams,
        credentials: credentials?,
        routes: routes?,
        decoding: decoding?,
        rotation: rotation?,
        limits: limits?,
        dns: Arc::new(dns?),
    })
}

/// `dns:`: name servers as socket addresses (port 53 when none is written), durations more
/// than zero, `min_ttl` not above `max_ttl`; every key optional (see [`Dns::default`]).
fn check_dns(r: &mut Report<'_>, v: &Value) -> Option<Dns> {
    let p = YamlPath::root().key("dns");
    let raw = r.item::<RawDns>(&p, v)?;
    let default = Dns::default();
    let mut servers = Some(Vec::new());
    for (i, s) in raw.servers.unwrap_or_default().iter().enumerate() {
        let parsed = s.parse::<SocketAddr>().ok().or_else(|| {
            s.parse::<std::net::IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 53))
        });
        match (parsed, servers.as_mut()) {
            (Some(a), Some(list)) => list.push(a),
            (Some(_), None) => {}
            (None, _) => {
                r.error(
                    &p.key("servers").index(i),
                    format!("`{s}` is not a name server address; use IP or IP:PORT, like 10.0.0.2 or 127.0.0.1:5353"),
                );
                servers = None;
            }
        }
    }
    let min_ttl = duration_field(r, &p.key("min_ttl"), raw.min_ttl, default.min_ttl);
    let max_ttl = duration_field(r, &p.key("max_ttl"), raw.max_ttl, default.max_ttl);
    let serve_stale = match raw.serve_stale {
        None => Some(default.serve_stale),
        Some(s) => match parse_duration(&s) {
            Ok(d) if d > MAX_TIMEOUT => {
                r.error(&p.key("serve_stale"), "must be at most 7 days");
                None
            }
            Ok(d) => Some(d),
            Err(m) => {
                r.error(&p.key("serve_stale"), m);
                None
            }
        },
    };
    let timeout = duration_field(r, &p.key("timeout"), raw.timeout, default.timeout);
    let system_ttl = duration_field(r, &p.key("system_ttl"), raw.system_ttl, default.system_ttl);
    if let (Some(lo), Some(hi)) = (min_ttl, max_ttl) {
        if lo > hi {
            r.error(
                &p.key("min_ttl"),
                format!(
                    "`min_ttl` ({}) is above `max_ttl` ({})",
                    humantime::format_duration(lo),
                    humantime::format_duration(hi)
                ),
            );
            return None;
        }
    }
    Some(Dns {
        servers: servers?,
        min_ttl: min_ttl?,
        max_ttl: max_ttl?,
        serve_stale: serve_stale?,
        timeout: timeout?,
        system_ttl: system_ttl?,
    })
}

/// `limits:`: see [`super::limits`].
fn check_limits(r: &mut Report<'_>, v: &Value) -> Option<super::limits::Limits> {
    let p = YamlPath::root().key("limits");
    let raw = r.item::<super::limits::RawLimits>(&p, v)?;
    let mut problems = Vec::new();
    let limits = super::limits::check(raw, &p, &mut problems);
    let ok = problems.is_empty();
    for (at, message) in problems {
        r.error(&at, message);
    }
    ok.then_some(limits)
}

/// `rotation:`: `retired_grace` is a duration, zero allowed (drop at once), default
/// [`Rotation::DEFAULT`].
fn check_rotation(r: &mut Report<'_>, v: &Value) -> Option<Rotation> {
    let p = YamlPath::root().key("rotation");
    let raw = r.item::<RawRotation>(&p, v)?;
    let retired_grace = match raw.retired_grace {
        None => Rotation::DEFAULT.retired_grace,
        Some(s) => match parse_duration(&s) {
            Ok(d) => d,
            Err(m) => {
                r.error(&p.key("retired_grace"), m);
                return None;
            }
        },
    };
    Some(Rotation { retired_grace })
}

/// `decoding:`: both keys optional, each defaulting to [`crate::rewrite::decode::Budget::DEFAULT`].
fn check_decoding(r: &mut Report<'_>, v: &Value) -> Option<crate::rewrite::decode::Budget> {
    let p = YamlPath::root().key("decoding");
    let raw = r.item::<RawDecoding>(&p, v)?;
    let default = crate::rewrite::decode::Budget::DEFAULT;
    let max_ratio = match raw.max_ratio {
        None => Some(default.max_ratio),
        Some(0) => {
            r.error(&p.key("max_ratio"), "must be at least 1");
            None
        }
        Some(n) => Some(n),
    };
    let max_bytes = match raw.max_bytes {
        None => Ok(default.max_bytes),
        Some(RawSize::Bytes(n)) => Ok(n),
        Some(RawSize::Text(text)) => parse_size(&text),
    };
    let max_bytes = match max_bytes {
        Ok(0) => {
            r.error(&p.key("max_bytes"), "must be more than zero");
            None
        }
        Ok(n) => Some(n),
        Err(m) => {
            r.error(&p.key("max_bytes"), m);
            None
        }
    };
    Some(crate::rewrite::decode::Budget {
        max_ratio: max_ratio?,
        max_bytes: max_bytes?,
    })
}

/// Iterates a section that must be a sequence.
fn seq_items<'v>(r: &mut Report<'_>, path: &YamlPath, v: Option<&'v Value>) -> Vec<&'v Value> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Sequence(items)) => items.iter().collect(),
        Some(_) => {
            r.error(path, "must be a list (`- ...` items)");
            Vec::new()
        }
    }
}

/// Iterates a section that must be a mapping from names to items.
fn named_items<'v>(
    r: &mut Report<'_>,
    path: &YamlPath,
    v: Option<&'v Value>,
) -> Vec<(String, &'v Value)> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Mapping(m)) => {
            let mut out = Vec::new();
            for (k, v) in m {
                match k.as_str() {
                    Some(name) => {
                        if let Err(msg) = check_name(name) {
                            r.key_error(&path.key(name), msg);
                        }
                        out.push((name.to_owned(), v));
                    }
                    None => r.error(path, "names must be strings"),
                }
            }
            out
        }
        Some(_) => {
            r.error(path, "must be a mapping from names to settings");
            Vec::new()
        }
    }
}

/// Names are used as metric labels and in logs: keep them short and plain.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the name `{name}` is not allowed; use 1-64 letters, digits, `-`, `_` or `.`"
        ))
    }
}

fn parse_addr(r: &mut Report<'_>, path: &YamlPath, s: &str) -> Option<SocketAddr> {
    match s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            r.error(
                path,
                format!(
                    "`{s}` is not a socket address; use IP:PORT, like 0.0.0.0:443 or [::1]:8080"
                ),
            );
            None
        }
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() || base == Path::new(".") {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Reads a PEM file and returns the DER of every certificate in it (at least one).
fn read_certs(r: &mut Report<'_>, path: &YamlPath, file: &Path) -> Option<Vec<Vec<u8>>> {
    let data = match std::fs::read(file) {
        Ok(d) => d,
        Err(e) => {
            r.error(path, format!("cannot read {}: {e}", file.display()));
            return None;
        }
    };
    let mut certs = Vec::new();
    match crate::pki::pem::certs(&data) {
        Ok(found) => certs.extend(found.iter().map(|c| c.as_ref().to_vec())),
        Err(e) => {
            r.error(path, format!("{} is not valid PEM: {e}", file.display()));
            return None;
        }
    }
    if certs.is_empty() {
        r.error(
            path,
            format!(
                "{} holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)",
                file.display()
            ),
        );
        return None;
    }
    Some(certs)
}

/// Checks that a private key file is readable PEM. The key itself is not kept here.
fn check_key_file(r: &mut Report<'_>, path: &YamlPath, file: &Path) -> bool {
    let data = match std::fs::read(file) {
        Ok(d) => zeroize::Zeroizing::new(d),
        Err(e) => {
            r.error(path, format!("cannot read {}: {e}", file.display()));
            return false;
        }
    };
    match crate::pki::pem::private_key(&data) {
        Ok(Some(_)) => true,
        Ok(None) => {
            r.error(path, format!("{} holds no PEM private key", file.display()));
            false
        }
        Err(_) => {
            r.error(
                path,
                format!("{} is not a valid PEM private key", file.display()),
            );
            false
        }
    }
}

fn check_listeners(r: &mut Report<'_>, v: Option<&Value>, base: &Path) -> Option<Vec<Listener>> {
    let path = YamlPath::root().key("listeners");
    let items = seq_items(r, &path, v);
    if items.is_empty() {
        r.error(
            &path,
            "at least one listener is needed, like `- { name: agents, address: 0.0.0.0:443 }`",
        );
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut seen_addr: HashMap<SocketAddr, usize> = HashMap::new();
    for (i, item) in items.into_iter().enumerate() {
        let p = path.index(i);
        let Some(raw) = r.item::<RawListener>(&p, item) else {
            ok = false;
            continue;
        };
        if let Err(msg) = check_name(&raw.name) {
            r.error(&p.key("name"), msg);
            ok = false;
        }
        if let Some(first) = seen.insert(raw.name.clone(), i) {
            r.error(
                &p.key("name"),
                format!(
                    "listener name `{}` is already used by listeners[{first}]",
                    raw.name
                ),
            );
            ok = false;
        }
        let address = parse_addr(r, &p.key("address"), &raw.address);
        if let Some(a) = address {
            if let Some(first) = seen_addr.insert(a, i) {
                r.error(
                    &p.key("address"),
                    format!("address {a} is already used by listeners[{first}]"),
                );
                ok = false;
            }
        }
        let tls = match raw.tls {
            None => {
                r.warn(
                    &p,
                    format!(
                        "listener `{}` has no `tls`: agents connect in plain text and without \
                         client certificates (development only)",
                        raw.name
                    ),
                );
                Some(None)
            }
            Some(t) => check_listener_tls(r, &p.key("tls"), t, base).map(Some),
        };
        match (address, tls) {
            (Some(address), Some(tls)) if ok => out.push(Listener {
                name: raw.name,
                address,
                tls,
            }),
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

fn check_listener_tls(
    r: &mut Report<'_>,
    p: &YamlPath,
    t: RawListenerTls,
    base: &Path,
) -> Option<ListenerTls> {
    let cert = resolve(base, &t.cert);
    let key = resolve(base, &t.key);
    let mut ok = read_certs(r, &p.key("cert"), &cert).is_some();
    ok &= check_key_file(r, &p.key("key"), &key);
    let client_ca = match (t.client_auth.as_deref(), t.client_ca) {
        (None | Some("required"), Some(ca)) => {
            let ca = resolve(base, &ca);
            ok &= read_certs(r, &p.key("client_ca"), &ca).is_some();
            Some(ca)
        }
        (None | Some("required"), None) => {
            r.error(
                p,
                "`client_ca` is missing: clients must present a certificate from this CA. To \
                 accept clients without certificates, say `client_auth: none` explicitly",
            );
            ok = false;
            None
        }
        (Some("none"), None) => {
            r.warn(
                &p.key("client_auth"),
                "`client_auth: none`: any client that can reach this listener may use it",
            );
            None
        }
        (Some("none"), Some(_)) => {
            r.error(
                &p.key("client_auth"),
                "`client_auth: none` contradicts `client_ca`; remove one of them",
            );
            ok = false;
            None
        }
        (Some(other), _) => {
            r.error(
                &p.key("client_auth"),
                format!("`{other}` is not allowed; use `required` (the default) or `none`"),
            );
            ok = false;
            None
        }
    };
    ok.then_some(ListenerTls {
        cert,
        key,
        client_ca,
    })
}

fn check_admin(r: &mut Report<'_>, v: &Value) -> Option<Admin> {
    let p = YamlPath::root().key("admin");
    let raw = r.item::<RawAdmin>(&p, v)?;
    let address = parse_addr(r, &p.key("address"), &raw.address)?;
    if !address.ip().is_loopback() {
        r.warn(
            &p.key("address"),
            format!("the admin address {address} is not loopback: keep it off the agents' network"),
        );
    }
    Some(Admin { address })
}

fn check_interception(r: &mut Report<'_>, v: &Value, base: &Path) -> Option<Interception> {
    let p = YamlPath::root().key("interception");
    let raw = r.item::<RawInterception>(&p, v)?;
    let ca_cert = resolve(base, &raw.ca_cert);
    let ca_key = resolve(base, &raw.ca_key);
    let ok = read_certs(r, &p.key("ca_cert"), &ca_cert).is_some()
        & check_key_file(r, &p.key("ca_key"), &ca_key);
    if ok {
        if let Err(e) = crate::pki::mint::Minter::load(&ca_cert, &ca_key) {
            r.error(&p, format!("the interception CA cannot sign: {e}"));
            return None;
        }
    }
    ok.then_some(Interception { ca_cert, ca_key })
}

fn check_upstreams(
    r: &mut Report<'_>,
    v: Option<&Value>,
    base: &Path,
) -> Vec<(String, Option<Upstream>)> {
    let path = YamlPath::root().key("upstreams");
    let items = named_items(r, &path, v);
    if items.is_empty() {
        r.error(
            &path,
            "at least one upstream is needed, like `openai: { url: https://api.openai.com }`",
        );
    }
    items
        .into_iter()
        .map(|(name, item)| {
            let p = path.key(&name);
            let up = r
                .item::<RawUpstream>(&p, item)
                .and_then(|raw| check_upstream(r, &p, &name, raw, base));
            (name, up)
        })
        .collect()
}

fn check_upstream(
    r: &mut Report<'_>,
    p: &YamlPath,
    name: &str,
    raw: RawUpstream,
    base: &Path,
) -> Option<Upstream> {
    let url_path = p.key("url");
    let parsed = parse_upstream_url(&raw.url);
    if let Err(msg) = &parsed {
        r.error(&url_path, msg.clone());
    }
    let ca = match raw.ca {
        Some(ca) => {
            let ca = resolve(base, &ca);
            let certs = read_certs(r, &p.key("ca"), &ca);
            if let Some(certs) = &certs {
                for (i, der) in certs.iter().enumerate() {
                    let mut store = rustls::RootCertStore::empty();
                    if store
                        .add(rustls::pki_types::CertificateDer::from(der.as_slice()))
                        .is_err()
                    {
                        r.error(
                            &p.key("ca"),
                            format!(
                                "certificate #{} in {} is not a usable CA certificate",
                                i + 1,
                                ca.display()
                            ),
                        );
                    }
                }
            }
            Some(certs.map(Arc::new))
        }
        None => None,
    };
    let http_version = match raw.http_version.as_deref() {
        None | Some("auto") => Some(HttpVersion::Auto),
        Some("1.1") | Some("1") => Some(HttpVersion::Http1),
        Some("2") => Some(HttpVersion::Http2),
        Some(other) => {
            r.error(
                &p.key("http_version"),
                format!("`{other}` is not allowed; use `auto` (the default), `1.1` or `2`"),
            );
            None
        }
    };
    let connect_timeout = duration_field(
        r,
        &p.key("connect_timeout"),
        raw.connect_timeout,
        Duration::from_secs(10),
    )?;
    let read_timeout = match raw.read_timeout {
        None => Some(None),
        Some(s) => match parse_duration(&s) {
            Ok(d) if d > MAX_TIMEOUT => {
                r.error(&p.key("read_timeout"), "must be at most 7 days");
                None
            }
            Ok(d) => Some(Some(d)),
            Err(m) => {
                r.error(&p.key("read_timeout"), m);
                None
            }
        },
    };
    let max_connections = match raw.max_connections {
        None => Some(Upstream::DEFAULT_MAX_CONNECTIONS),
        Some(n @ 1..=65_536) => usize::try_from(n).ok(),
        Some(n) => {
            r.error(
                &p.key("max_connections"),
                format!(
                    "{n} is not allowed; use 1 to 65536 (default {})",
                    Upstream::DEFAULT_MAX_CONNECTIONS
                ),
            );
            None
        }
    };
    let client_cert = match raw.client_cert {
        None => Some(None),
        Some(cc) => load_client_cert(
            r,
            &p.key("client_cert"),
            &resolve(base, &cc.cert),
            &resolve(base, &cc.key),
        )
        .map(|c| Some(Arc::new(c))),
    };
    if let (Ok((false, _, _)), Some(Some(_))) = (&parsed, &client_cert) {
        r.error(
            &p.key("client_cert"),
            "a client certificate needs an https:// upstream",
        );
    }
    let (tls, host, port) = parsed.ok()?;
    let default_port = if tls { 443 } else { 80 };
    let host_part = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    let authority = if port == default_port {
        host_part
    } else {
        format!("{host_part}:{port}")
    };
    let ca = match ca {
        Some(Some(c)) => Some(c),
        Some(None) => return None,
        None => None,
    };
    Some(Upstream {
        name: name.to_owned(),
        tls,
        host,
        port,
        authority,
        ca,
        http_version: http_version?,
        connect_timeout,
        read_timeout: read_timeout?,
        client_cert: client_cert?,
        max_connections: max_connections?,
    })
}

/// Reads an upstream client certificate chain and its key, and checks that they belong together.
fn load_client_cert(
    r: &mut Report<'_>,
    p: &YamlPath,
    cert: &Path,
    key: &Path,
) -> Option<ClientCert> {
    let chain = read_certs(r, &p.key("cert"), cert)?;
    let data = match std::fs::read(key) {
        Ok(d) => zeroize::Zeroizing::new(d),
        Err(e) => {
            r.error(&p.key("key"), format!("cannot read {}: {e}", key.display()));
            return None;
        }
    };
    let key_der = match crate::pki::pem::private_key(&data) {
        Ok(Some(k)) => k,
        _ => {
            r.error(
                &p.key("key"),
                format!("{} holds no valid PEM private key", key.display()),
            );
            return None;
        }
    };
    let certs: Vec<rustls::pki_types::CertificateDer<'static>> = chain
        .iter()
        .map(|c| rustls::pki_types::CertificateDer::from(c.clone()))
        .collect();
    let provider = rustls::crypto::ring::default_provider();
    match rustls::sign::CertifiedKey::from_der(certs, key_der.clone_key(), &provider)
        .and_then(|ck| ck.keys_match().map(|_| ck))
    {
        Ok(_) => Some(ClientCert {
            chain,
            key: zeroize::Zeroizing::new(key_der.secret_der().to_vec()),
        }),
        Err(_) => {
            r.error(
                &p.key("key"),
                format!(
                    "{} does not match the certificate {}",
                    key.display(),
                    cert.display()
                ),
            );
            None
        }
    }
}

fn duration_field(
    r: &mut Report<'_>,
    p: &YamlPath,
    v: Option<String>,
    default: Duration,
) -> Option<Duration> {
    match v {
        None => Some(default),
        Some(s) => match parse_duration(&s) {
            Ok(d) if d.is_zero() => {
                r.error(p, "must be more than zero");
                None
            }
            Ok(d) if d > MAX_TIMEOUT => {
                r.error(p, "must be at most 7 days");
                None
            }
            Ok(d) => Some(d),
            Err(m) => {
                r.error(p, m);
                None
            }
        },
    }
}

/// `https://host[:port]` → (tls, host, port). No user info, path, query or fragment.
fn parse_upstream_url(s: &str) -> Result<(bool, String, u16), String> {
    let allowed = "use scheme://host[:port], like https://api.openai.com or http://127.0.0.1:8080";
    let uri: http::Uri = s
        .parse()
        .map_err(|_| format!("`{s}` is not a URL; {allowed}"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        Some(other) => return Err(format!("scheme `{other}` is not supported; {allowed}")),
        None => return Err(format!("`{s}` has no scheme; {allowed}")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("`{s}` has no host; {allowed}"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "`{s}` has user info; credentials belong in `credentials`, not in the URL"
        ));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "`{s}` has a path or query; routes choose paths, so {allowed}"
        ));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if host.is_empty() {
        return Err(format!("`{s}` has no host; {allowed}"));
    }
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    if port == 0 {
        return Err(format!("`{s}` has port 0"));
    }
    Ok((tls, host, port))
}

fn check_credentials(
    r: &mut Report<'_>,
    v: Option<&Value>,
    upstream_names: &[String],
    base: &Path,
) -> Option<Vec<Credential>> {
    let path = YamlPath::root().key("credentials");
    let items = named_items(r, &path, v);
    let mut out = Vec::new();
    let mut ok = true;
    let mut dummies: HashMap<Vec<u8>, String> = HashMap::new();
    for (name, item) in items {
        let p = path.key(&name);
        if !check_secret_shapes(r, &p, item) {
            ok = false;
            continue;
        }
        let Some(raw) = r.item::<RawCredential>(&p, item) else {
            ok = false;
            continue;
        };
        let mut ups = Vec::new();
        if raw.upstreams.is_empty() {
            r.error(
                &p.key("upstreams"),
                format!("credential `{name}` must be bound to at least one upstream"),
            );
            ok = false;
        }
        for (i, u) in raw.upstreams.iter().enumerate() {
            match upstream_names.iter().position(|n| n == u) {
                Some(idx) if !ups.contains(&idx) => ups.push(idx),
                Some(_) => {
                    r.error(
                        &p.key("upstreams").index(i),
                        format!("upstream `{u}` is listed twice"),
                    );
                    ok = false;
                }
                None => {
                    r.error(
                        &p.key("upstreams").index(i),
                        format!(
                            "upstream `{u}` is not defined; defined upstreams: {}",
                            list(upstream_names)
                        ),
                    );
                    ok = false;
                }
            }
        }
        let aws_kind = raw.kind.as_deref() == Some("aws");
        let mut problems = Vec::new();
        let swap_in = super::swap::swap_in(raw.swap_in, &p, aws_kind, &mut problems);
        let allow = super::swap::allow(raw.allow, &p, aws_kind, &mut problems);
        for (at, msg) in problems {
            r.error(&at, msg);
            ok = false;
        }
        let mut parts: Vec<RawPart> = Vec::new();
        match raw.kind.as_deref().unwrap_or("token") {
            "token" => {
                let aws_keys = [
                    ("access_key_id", raw.access_key_id.is_some()),
                    ("secret_access_key", raw.secret_access_key.is_some()),
                    ("session_token", raw.session_token.is_some()),
                ];
                for (key, present) in aws_keys {
                    if present {
                        r.error(
                            &p.key(key),
                            format!("`{key}` belongs to credentials of `kind: aws`"),
                        );
                        ok = false;
                    }
                }
                match (raw.dummy, raw.real, raw.clients) {
                    (Some(dummy), Some(real), None) => parts.push((
                        name.clone(),
                        p.clone(),
                        dummy,
                        vec![(None, p.key("real"), real)],
                        None,
                    )),
                    (Some(dummy), None, Some(clients)) => {
                        match client_values(r, &p.key("clients"), clients) {
                            Some(values) => {
                                parts.push((name.clone(), p.clone(), dummy, values, None))
                            }
                            None => ok = false,
                        }
                    }
                    (Some(_), Some(_), Some(_)) => {
                        r.key_error(
                            &p.key("clients"),
                            "give `real` (one value for every client) or `clients` (a value per client identity), not both",
                        );
                        ok = false;
                    }
                    (dummy, _, _) => {
                        let missing = if dummy.is_none() {
                            "dummy"
                        } else {
                            "real` (or `clients"
                        };
                        r.error(&p, format!("credential `{name}` needs `{missing}`"));
                        ok = false;
                    }
                }
            }
            "aws" => {
                if raw.dummy.is_some() || raw.real.is_some() {
                    r.error(
                        &p,
                        "a credential of `kind: aws` has `access_key_id`, `secret_access_key` and optionally `session_token`, each with `dummy` and `real`, instead of `dummy` and `real`",
                    );
                    ok = false;
                }
                if raw.clients.is_some() {
                    r.key_error(
                        &p.key("clients"),
                        "`clients` is not supported on `aws` credentials; declare one `aws` credential per client and bind each with a route's `clients`",
                    );
                    ok = false;
                }
                let pairs = [
                    (AwsRole::AccessKeyId, raw.access_key_id, true),
                    (AwsRole::SecretAccessKey, raw.secret_access_key, true),
                    (AwsRole::SessionToken, raw.session_token, false),
                ];
                for (role, pair, required) in pairs {
                    match pair {
                        Some(pair) => parts.push((
                            format!("{name}.{}", role.key()),
                            p.key(role.key()),
                            pair.dummy,
                            vec![(None, p.key(role.key()).key("real"), pair.real)],
                            Some(role),
                        )),
                        None if required => {
                            r.error(
                                &p,
                                format!(
                                    "credential `{name}` of `kind: aws` needs `{}`",
                                    role.key()
                                ),
                            );
                            ok = false;
                        }
                        None => {}
                    }
                }
            }
            other => {
                r.error(
                    &p.key("kind"),
                    format!(
                        "unknown credential kind `{other}`; use `token` (the default) or `aws`"
                    ),
                );
                ok = false;
            }
        }
        for (part_name, pp, dummy, raw_values, role) in parts {
            if out.iter().any(|c: &Credential| c.name == part_name) {
                r.error(&pp, format!("credential name `{part_name}` is used twice"));
                ok = false;
            }
            // The values are checked even when the dummy is bad: every error at once.
            let checked = check_unique_dummy(r, &pp, &part_name, dummy.clone(), &mut dummies);
            ok &= checked.is_some();
            let dummy = checked.unwrap_or_else(|| dummy.into_bytes());
            let mut values = Vec::new();
            for (client, at, raw_real) in raw_values {
                match load_value(r, &at, &part_name, &dummy, raw_real, base) {
                    Some((source, real)) => values.push(RealValue {
                        client,
                        source,
                        real,
                    }),
                    None => ok = false,
                }
            }
            out.push(Credential {
                name: part_name,
                dummy,
                values,
                upstreams: ups.clone(),
                aws: role.map(|role| AwsPart {
                    group: name.clone(),
                    role,
                }),
                swap_in: swap_in.clone(),
                allow: allow.clone(),
            });
        }
    }
    // A real value equal to another credential's dummy would be swapped back and forth.
    for a in &out {
        for b in &out {
            for v in &a.values {
                if let Ok(real) = &v.real {
                    if a.name != b.name && real.ct_eq(&b.dummy) {
                        let at = match &v.client {
                            None => path.key(&a.name).key("real"),
                            Some(c) => path.key(&a.name).key("clients").key(c),
                        };
                        r.error(
                            &at,
                            format!(
                                "the real value of credential `{}` equals the dummy of credential `{}`",
                                a.name, b.name
                            ),
                        );
                        ok = false;
                    }
                }
            }
        }
    }
    ok.then_some(out)
}

/// The containers of a `real` must be maps before serde sees them: its error for a scalar
/// credential (`openai: sk-live-...`) or AWS pair (`access_key_id: AKIA...`) would quote the
/// value. `real` itself never echoes (see [`RawSecretSource`]). False after reporting.
fn check_secret_shapes(r: &mut Report<'_>, p: &YamlPath, item: &Value) -> bool {
    let Value::Mapping(map) = item else {
        r.error(
            p,
            "a credential must be a map with `dummy`, `real` and `upstreams` (or `kind: aws` and \
             its pairs); a value written here is not shown",
        );
        return false;
    };
    let mut ok = true;
    for role in [
        AwsRole::AccessKeyId,
        AwsRole::SecretAccessKey,
        AwsRole::SessionToken,
    ] {
        match map.get(role.key()) {
            None | Some(Value::Mapping(_) | Value::Null) => {}
            Some(_) => {
                r.error(
                    &p.key(role.key()),
                    format!(
                        "`{}` must be a map with `dummy` and `real`; a value written here is not shown",
                        role.key()
                    ),
                );
                ok = false;
            }
        }
    }
    ok
}

/// A credential or `aws` part as written: its name, where it stands in the file, its dummy, its
/// real values and its AWS role.
type RawPart = (String, YamlPath, String, Vec<RawValue>, Option<AwsRole>);

/// A real value as written: the client identity it is for (`None`: every client), where its
/// source stands in the file, and the source.
type RawValue = (Option<String>, YamlPath, RawSecretSource);

/// The values of `clients:` (at `p`): identity names checked. `None` after reporting an error.
fn client_values(
    r: &mut Report<'_>,
    p: &YamlPath,
    clients: std::collections::BTreeMap<String, RawSecretSource>,
) -> Option<Vec<RawValue>> {
    if clients.is_empty() {
        r.error(
            p,
            "an empty `clients` map gives the credential to no one; remove it and use `real`",
        );
        return None;
    }
    let mut ok = true;
    let mut out = Vec::new();
    for (id, source) in clients {
        let valid = !id.is_empty() && id.len() <= 255 && id.bytes().all(|b| b.is_ascii_graphic());
        if !valid {
            // Identity names are labels in metrics; a key pasted here is not quoted.
            r.key_error(
                &p.key(&id),
                "a client identity is a certificate's common name or SAN: 1-255 printable characters without spaces (the name written here is not shown)",
            );
            ok = false;
            continue;
        }
        out.push((Some(id.clone()), p.key(&id), source));
    }
    ok.then_some(out)
}

/// The dummy at `p` checked, and unique among `dummies`. `None` after reporting an error.
fn check_unique_dummy(
    r: &mut Report<'_>,
    p: &YamlPath,
    name: &str,
    dummy: String,
    dummies: &mut HashMap<Vec<u8>, String>,
) -> Option<Vec<u8>> {
    let mut ok = true;
    let dummy = dummy.into_bytes();
    if let Err(msg) = check_dummy(&dummy) {
        r.error(&p.key("dummy"), msg);
        ok = false;
    }
    if let Some(other) = dummies.insert(dummy.clone(), name.to_owned()) {
        r.error(
            &p.key("dummy"),
            format!("credential `{name}` has the same dummy as credential `{other}`; each dummy must be unique"),
        );
        ok = false;
    }
    ok.then_some(dummy)
}

/// A real value's source at `p` (`real` or `clients.ID`) parsed and loaded: the source and the
/// secret, or why it is unavailable. `None` after reporting an error.
fn load_value(
    r: &mut Report<'_>,
    p: &YamlPath,
    name: &str,
    dummy: &[u8],
    raw_real: RawSecretSource,
    base: &Path,
) -> Option<(SecretSource, Result<Arc<crate::secret::Secret>, String>)> {
    let source = match (raw_real.env, raw_real.file) {
        (Some(env), None) => {
            if !is_env_name(&env) {
                // Not quoted: a key pasted here by mistake would be printed.
                r.error(
                    &p.key("env"),
                    "this is not an environment variable name: use letters, digits and `_`, \
                     not starting with a digit (the name written here is not shown)",
                );
                return None;
            }
            SecretSource::Env(env)
        }
        (None, Some(file)) => SecretSource::File(resolve(base, &file)),
        _ => {
            r.error(
                p,
                "give exactly one of `env: VARIABLE` or `file: PATH` (secrets are never written in the config)",
            );
            return None;
        }
    };
    let real = match source.load() {
        Ok(s) => {
            if s.ct_eq(dummy) {
                r.error(
                    p,
                    format!("the real value of credential `{name}` equals its dummy"),
                );
                return None;
            }
            Ok(Arc::new(s))
        }
        Err(LoadError::Missing(msg)) => {
            r.warn(
                p,
                format!(
                    "credential `{name}` is unavailable ({msg}); requests that need it get 503"
                ),
            );
            Err(msg)
        }
        Err(LoadError::Unreadable(msg)) => {
            r.error(p, msg);
            return None;
        }
    };
    Some((source, real))
}

/// `[A-Za-z_][A-Za-z0-9_]*`: the names a shell can set, and never a pasted key like
/// `sk-live-...` (which would then be named in warnings about the unset variable).
fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A dummy goes into headers and URLs and is searched for in every request: it must be long
/// enough not to occur by chance and made of URL- and header-safe characters.
fn check_dummy(d: &[u8]) -> Result<(), String> {
    if d.len() < 8 {
        return Err(format!(
            "a dummy must be at least 8 characters long (this one has {}), so that it never occurs by chance",
            d.len()
        ));
    }
    if d.len() > 1024 {
        return Err("a dummy must be at most 1024 characters long".into());
    }
    if let Some(c) = d.iter().find(|b| !(b.is_ascii_graphic())) {
        return Err(format!(
            "a dummy must be printable ASCII without spaces; found byte 0x{c:02x}"
        ));
    }
    Ok(())
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "(none)".into()
    } else {
        names.join(", ")
    }
}

fn check_routes(
    r: &mut Report<'_>,
    v: Option<&Value>,
    upstream_names: &[String],
) -> Option<Vec<Route>> {
    let path = YamlPath::root().key("routes");
    let items = seq_items(r, &path, v);
    if items.is_empty() {
        r.warn(&path, "no routes: every request is refused with 403");
    }
    let mut out = Vec::new();
    let mut ok = true;
    let mut seen: BTreeMap<(String, Option<u16>, String), usize> = BTreeMap::new();
    for (i, item) in items.into_iter().enumerate() {
        let p = path.index(i);
        let Some(raw) = r.item::<RawRoute>(&p, item) else {
            ok = false;
            continue;
        };
        let host = raw.host.trim().to_ascii_lowercase();
        if let Err(msg) = check_route_host(&host) {
            r.error(&p.key("host"), msg);
            ok = false;
        }
        if raw.port == Some(0) {
            r.error(&p.key("port"), "port 0 is not allowed");
            ok = false;
        }
        let path_prefix = raw.path_prefix.unwrap_or_else(|| "/".into());
        if !path_prefix.starts_with('/')
            || path_prefix
                .bytes()
                .any(|b| b.is_ascii_control() || b == b' ' || b == b'?' || b == b'#')
        {
            r.error(
                &p.key("path_prefix"),
                format!("`{path_prefix}` is not a path prefix; it starts with `/` and has no spaces, `?` or `#`"),
            );
            ok = false;
        }
        let upstream = upstream_names.iter().position(|n| *n == raw.upstream);
        if upstream.is_none() {
            r.error(
                &p.key("upstream"),
                format!(
                    "upstream `{}` is not defined; defined upstreams: {}",
                    raw.upstream,
                    list(upstream_names)
                ),
            );
            ok = false;
        }
        if let Some(clients) = &raw.clients {
            if clients.is_empty() {
                r.error(
                    &p.key("clients"),
                    "an empty `clients` list would refuse everyone; remove the key to allow all",
                );
                ok = false;
            }
        }
        let key = (host.clone(), raw.port, path_prefix.clone());
        if let Some(first) = seen.insert(key, i) {
            r.error(
                &p,
                format!(
                    "duplicate route: routes[{first}] already matches host `{host}`{} and path prefix `{path_prefix}`",
                    raw.port.map(|p| format!(" port {p}")).unwrap_or_default()
                ),
            );
            ok = false;
        }
        if let Some(upstream) = upstream {
            out.push(Route {
                host,
                port: raw.port,
                path_prefix,
                upstream,
                clients: raw.clients,
                websocket: raw.websocket.unwrap_or(false),
            });
        }
    }
    ok.then_some(out)
}

fn check_route_host(host: &str) -> Result<(), String> {
    let allowed =
        "use a host name like api.openai.com or an IP address, without scheme, port or path";
    if host.is_empty() {
        return Err(format!("the host is empty; {allowed}"));
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let valid = host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if valid {
        Ok(())
    } else {
        Err(format!("`{host}` is not a host name; {allowed}"))
    }
}
