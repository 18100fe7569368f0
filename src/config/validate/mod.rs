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

mod credentials;
mod listeners;
mod routes;
mod settings;
mod upstreams;

use credentials::*;
use listeners::*;
use routes::*;
use settings::*;
use upstreams::*;

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
    if r.errors.is_empty()
        && let Some(config) = config
    {
        return Ok(Loaded {
            config,
            warnings: r.warnings,
        });
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
        for up in c.upstreams.iter().filter_map(|&u| upstreams.get(u.0)) {
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

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "(none)".into()
    } else {
        names.join(", ")
    }
}
