//! `limits:`: what the gateway as a whole, and each client identity, may hold at once — checked
//! into typed values with their defaults. Enforcement lives with the listener and the proxy;
//! this module only says what the numbers are.
//!
//! A client identity is the name the mTLS certificate gives (its common name, or the first SAN
//! named in `limits.clients`), or the source IP address on a listener without client
//! certificates. Per-client limits are `per_client:`, overridden key by key for the identities
//! named in `clients:`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::raw::RawSize;
use super::swap::Problems;
use super::{bounded_duration, parse_size, YamlPath};

/// The gateway's limits (`limits:`).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Agent connections open at once, over all listeners; beyond it a new connection gets 503.
    pub connections: u32,
    /// File descriptors kept free: while fewer remain under `RLIMIT_NOFILE`, new connections
    /// get 503 (or are closed unread when not even that is possible).
    pub fd_reserve: u32,
    /// The largest request head (request line and headers); beyond it: 431.
    pub header_bytes: u64,
    /// The most header fields in one request head; beyond it: 431.
    pub headers: u32,
    /// How long a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// How long a request head may take to arrive, from its first byte.
    pub head_timeout: Duration,
    /// The longest pause allowed inside a request body.
    pub body_idle_timeout: Duration,
    /// How long a whole request (head and body) may take to arrive.
    pub request_timeout: Duration,
    /// The longest a response write to the agent may stall (a client that stops reading).
    pub send_timeout: Duration,
    /// Limits of every client identity not named in `clients`.
    pub per_client: ClientLimits,
    /// Per-identity limits: `per_client` with this identity's keys overriding it.
    pub clients: BTreeMap<String, ClientLimits>,
}

/// What one client identity may hold at once. `None`: unlimited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientLimits {
    /// Connections open at once (tunnels included: each is a connection).
    pub connections: Option<u32>,
    /// `CONNECT` tunnels open at once.
    pub tunnels: Option<u32>,
    /// Requests per second, refilled continuously (a token bucket of `burst` tokens).
    pub requests_per_second: Option<f64>,
    /// Requests allowed at once above the rate (the bucket's size), at least 1.
    pub burst: u32,
    /// Responses being streamed to this client at once.
    pub streams: Option<u32>,
    /// Request body bytes per second, over all of its requests; a faster upload is slowed down
    /// to this rate, never cut.
    pub body_bytes_per_second: Option<u64>,
}

impl ClientLimits {
    /// The defaults: bounded connections, tunnels and streams; rates unlimited.
    pub const DEFAULT: ClientLimits = ClientLimits {
        connections: Some(256),
        tunnels: Some(64),
        requests_per_second: None,
        burst: 1,
        streams: Some(64),
        body_bytes_per_second: None,
    };
}

impl Limits {
    /// The defaults, used when `limits:` is absent.
    pub fn default_limits() -> Limits {
        Limits {
            connections: 10_000,
            fd_reserve: 64,
            header_bytes: 64 * 1024,
            headers: 100,
            idle_timeout: Duration::from_secs(60),
            head_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10 * 60),
            send_timeout: Duration::from_secs(60),
            per_client: ClientLimits::DEFAULT,
            clients: BTreeMap::new(),
        }
    }

    /// The limits of client identity `id`.
    pub fn for_client(&self, id: &str) -> &ClientLimits {
        self.clients.get(id).unwrap_or(&self.per_client)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::default_limits()
    }
}

/// `limits:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default)]
    pub connections: Option<u64>,
    #[serde(default)]
    pub fd_reserve: Option<u64>,
    #[serde(default)]
    pub header_bytes: Option<RawSize>,
    #[serde(default)]
    pub headers: Option<u64>,
    #[serde(default)]
    pub idle_timeout: Option<String>,
    #[serde(default)]
    pub head_timeout: Option<String>,
    #[serde(default)]
    pub body_idle_timeout: Option<String>,
    #[serde(default)]
    pub request_timeout: Option<String>,
    #[serde(default)]
    pub send_timeout: Option<String>,
    #[serde(default)]
    pub per_client: Option<RawClientLimits>,
    #[serde(default)]
    pub clients: Option<BTreeMap<String, RawClientLimits>>,
}

/// One client's limits as written: numbers, sizes, or `unlimited`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientLimits {
    #[serde(default)]
    pub connections: Option<RawLimit>,
    #[serde(default)]
    pub tunnels: Option<RawLimit>,
    #[serde(default)]
    pub requests_per_second: Option<RawLimit>,
    #[serde(default)]
    pub burst: Option<u64>,
    #[serde(default)]
    pub streams: Option<RawLimit>,
    #[serde(default)]
    pub body_bytes_per_second: Option<RawLimit>,
}

/// A limit as written: a number, or text (`unlimited`, or a size with its unit).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawLimit {
    Number(f64),
    Text(String),
}

const UNLIMITED: &str = "unlimited";

/// Checks `limits:` at `p`, filling defaults.
pub fn check(raw: RawLimits, p: &YamlPath, problems: &mut Problems) -> Limits {
    let d = Limits::default_limits();
    let count = |v: Option<u64>, key: &str, default: u32, problems: &mut Problems| match v {
        None => default,
        Some(0) => {
            problems.push((p.key(key), "must be at least 1".into()));
            default
        }
        Some(n) => match u32::try_from(n) {
            Ok(n) => n,
            Err(_) => {
                problems.push((p.key(key), format!("must be at most {}", u32::MAX)));
                default
            }
        },
    };
    let duration =
        |v: Option<String>, key: &str, default: Duration, problems: &mut Problems| match v {
            None => default,
            Some(s) => match bounded_duration(&s, false) {
                Ok(z) => z,
                Err(m) => {
                    problems.push((p.key(key), m));
                    default
                }
            },
        };
    let header_bytes = match raw.header_bytes {
        None => d.header_bytes,
        Some(size) => {
            let n = match size {
                RawSize::Bytes(n) => Ok(n),
                RawSize::Text(t) => parse_size(&t),
            };
            match n {
                Ok(n) if (MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&n) => n,
                Ok(_) => {
                    problems.push((
                        p.key("header_bytes"),
                        format!(
                            "must be between {} KiB and {} KiB",
                            MIN_HEADER_BYTES / 1024,
                            MAX_HEADER_BYTES / 1024
                        ),
                    ));
                    d.header_bytes
                }
                Err(m) => {
                    problems.push((p.key("header_bytes"), m));
                    d.header_bytes
                }
            }
        }
    };
    let headers = match raw.headers {
        None => d.headers,
        Some(n) if (1..=MAX_HEADERS).contains(&n) => n as u32,
        Some(_) => {
            problems.push((
                p.key("headers"),
                format!("must be between 1 and {MAX_HEADERS}"),
            ));
            d.headers
        }
    };
    let per_client = client(
        raw.per_client.unwrap_or_default(),
        &ClientLimits::DEFAULT,
        &p.key("per_client"),
        problems,
    );
    let mut clients = BTreeMap::new();
    for (id, c) in raw.clients.unwrap_or_default() {
        let cp = p.key("clients").key(&id);
        if id.is_empty() || id.len() > 253 || id.bytes().any(|b| !b.is_ascii_graphic()) {
            problems.push((
                cp.clone(),
                "a client identity is a certificate name or an IP address: 1-253 visible ASCII characters".into(),
            ));
            continue;
        }
        let c = client(c, &per_client, &cp, problems);
        clients.insert(id, c);
    }
    Limits {
        connections: count(raw.connections, "connections", d.connections, problems),
        fd_reserve: count(raw.fd_reserve, "fd_reserve", d.fd_reserve, problems),
        header_bytes,
        headers,
        idle_timeout: duration(raw.idle_timeout, "idle_timeout", d.idle_timeout, problems),
        head_timeout: duration(raw.head_timeout, "head_timeout", d.head_timeout, problems),
        body_idle_timeout: duration(
            raw.body_idle_timeout,
            "body_idle_timeout",
            d.body_idle_timeout,
            problems,
        ),
        request_timeout: duration(
            raw.request_timeout,
            "request_timeout",
            d.request_timeout,
            problems,
        ),
        send_timeout: duration(raw.send_timeout, "send_timeout", d.send_timeout, problems),
        per_client,
        clients,
    }
}

/// The bounds of `header_bytes`: a head must fit a long URL and a few tokens, and stay below
/// what the HTTP/1 parser underneath reads (1 MiB).
const MIN_HEADER_BYTES: u64 = 1024;
const MAX_HEADER_BYTES: u64 = 1024 * 1024 - 1;
/// The HTTP/1 parser underneath reads at most 256 header fields.
const MAX_HEADERS: u64 = 256;

/// One client's limits at `p`: each key overrides `base`.
fn client(
    raw: RawClientLimits,
    base: &ClientLimits,
    p: &YamlPath,
    problems: &mut Problems,
) -> ClientLimits {
    let count = |v: Option<RawLimit>, key: &str, base: Option<u32>, problems: &mut Problems| match v
    {
        None => base,
        Some(RawLimit::Text(t)) if t == UNLIMITED => None,
        Some(RawLimit::Number(n)) if n >= 1.0 && n <= f64::from(u32::MAX) && n.fract() == 0.0 => {
            Some(n as u32)
        }
        Some(_) => {
            problems.push((
                p.key(key),
                format!("must be a whole number of at least 1, or `{UNLIMITED}`"),
            ));
            base
        }
    };
    let rate_written = raw.requests_per_second.is_some();
    let requests_per_second = match raw.requests_per_second {
        None => base.requests_per_second,
        Some(RawLimit::Text(t)) if t == UNLIMITED => None,
        Some(RawLimit::Number(n)) if n.is_finite() && (0.001..=1e9).contains(&n) => Some(n),
        Some(_) => {
            problems.push((
                p.key("requests_per_second"),
                format!("must be a number from 0.001 to 1e9 (fractions allowed), or `{UNLIMITED}`"),
            ));
            base.requests_per_second
        }
    };
    let burst = match raw.burst {
        None if rate_written => {
            // A rate without a burst: one second's worth, at least one request.
            requests_per_second.map_or(base.burst, |r| {
                r.ceil().clamp(1.0, f64::from(u32::MAX)) as u32
            })
        }
        None => base.burst,
        Some(n) if (1..=u64::from(u32::MAX)).contains(&n) => n as u32,
        Some(_) => {
            problems.push((p.key("burst"), "must be at least 1".into()));
            base.burst
        }
    };
    let body_bytes_per_second = match raw.body_bytes_per_second {
        None => base.body_bytes_per_second,
        Some(RawLimit::Text(t)) if t == UNLIMITED => None,
        Some(v) => {
            let n = match v {
                RawLimit::Number(n) if n >= 1.0 && n.fract() == 0.0 && n < 9.0e18 => Ok(n as u64),
                RawLimit::Number(_) => Err("must be a whole number of bytes".to_string()),
                RawLimit::Text(t) => parse_size(&t),
            };
            match n {
                Ok(n) if n >= MIN_BODY_RATE => Some(n),
                Ok(_) => {
                    problems.push((
                        p.key("body_bytes_per_second"),
                        format!(
                            "must be at least {} KiB, or `{UNLIMITED}`",
                            MIN_BODY_RATE / 1024
                        ),
                    ));
                    base.body_bytes_per_second
                }
                Err(m) => {
                    problems.push((
                        p.key("body_bytes_per_second"),
                        format!("{m}, or `{UNLIMITED}`"),
                    ));
                    base.body_bytes_per_second
                }
            }
        }
    };
    ClientLimits {
        connections: count(raw.connections, "connections", base.connections, problems),
        tunnels: count(raw.tunnels, "tunnels", base.tunnels, problems),
        requests_per_second,
        burst,
        streams: count(raw.streams, "streams", base.streams, problems),
        body_bytes_per_second,
    }
}

/// A slower body rate would let one pause outlast `body_idle_timeout` by itself.
const MIN_BODY_RATE: u64 = 1024;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn parse(yaml: &str) -> (Limits, Vec<String>) {
        let raw: RawLimits = serde_yaml::from_str(yaml).unwrap();
        let mut problems = Vec::new();
        let l = check(raw, &YamlPath::root().key("limits"), &mut problems);
        (
            l,
            problems
                .into_iter()
                .map(|(p, m)| format!("{p}: {m}"))
                .collect(),
        )
    }

    #[test]
    fn absent_keys_take_the_defaults() {
        let (l, problems) = parse("{}");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(l, Limits::default_limits());
    }

    #[test]
    fn a_client_overrides_only_its_own_keys() {
        let (l, problems) = parse(
            "per_client: { connections: 10, requests_per_second: 5 }\n\
             clients:\n  agent-1: { requests_per_second: 0.5, burst: 3 }\n  10.0.0.7: { connections: unlimited }\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(l.per_client.connections, Some(10));
        assert_eq!(l.per_client.requests_per_second, Some(5.0));
        assert_eq!(
            l.per_client.burst, 5,
            "a rate without a burst: one second's worth"
        );
        let a = l.for_client("agent-1");
        assert_eq!(
            (a.connections, a.requests_per_second, a.burst),
            (Some(10), Some(0.5), 3)
        );
        let ip = l.for_client("10.0.0.7");
        assert_eq!((ip.connections, ip.requests_per_second), (None, Some(5.0)));
        assert_eq!(l.for_client("agent-2"), &l.per_client);
    }

    #[test]
    fn bad_values_are_named_at_their_key() {
        let cases: &[(&str, &str)] = &[
            ("connections: 0", "limits.connections: must be at least 1"),
            ("headers: 1000", "limits.headers: must be between 1 and 256"),
            (
                "header_bytes: 2MiB",
                "limits.header_bytes: must be between 1 KiB and 1023 KiB",
            ),
            (
                "head_timeout: 0s",
                "limits.head_timeout: must be more than zero",
            ),
            (
                "send_timeout: soon",
                "limits.send_timeout: `soon` is not a duration",
            ),
            (
                "request_timeout: 30d",
                "limits.request_timeout: must be at most 7 days",
            ),
            (
                "per_client: { tunnels: 1.5 }",
                "limits.per_client.tunnels: must be a whole number",
            ),
            (
                "per_client: { streams: none }",
                "limits.per_client.streams: must be a whole number",
            ),
            (
                "per_client: { requests_per_second: 0 }",
                "limits.per_client.requests_per_second: must be a number from 0.001",
            ),
            (
                "per_client: { burst: 0 }",
                "limits.per_client.burst: must be at least 1",
            ),
            (
                "per_client: { body_bytes_per_second: 10 }",
                "limits.per_client.body_bytes_per_second: must be at least 1 KiB",
            ),
            (
                "per_client: { body_bytes_per_second: fast }",
                "limits.per_client.body_bytes_per_second: `fast` is not a size",
            ),
            (
                "clients: { 'a b': {} }",
                "limits.clients.a b: a client identity is",
            ),
        ];
        for (yaml, want) in cases {
            let (_, problems) = parse(yaml);
            assert!(
                problems.iter().any(|p| p.starts_with(want)),
                "{yaml}: want {want}, got {problems:?}"
            );
        }
    }

    #[test]
    fn sizes_and_unlimited_are_read() {
        let (l, problems) = parse(
            "header_bytes: 16KiB\nper_client: { body_bytes_per_second: 1MiB, streams: unlimited }\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(l.header_bytes, 16 * 1024);
        assert_eq!(l.per_client.body_bytes_per_second, Some(1 << 20));
        assert_eq!(l.per_client.streams, None);
    }
}
