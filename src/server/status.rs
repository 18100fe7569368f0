//! What the status endpoints show: a snapshot of routes, upstream health, credential
//! availability and last use, certificate expiry and reload counts — built from the running
//! policy and small process-wide counters. `GET /status` serves it as JSON and `GET /` as a
//! self-contained HTML page (no scripts, no external assets).
//!
//! This is what a tunnel may expose to the internet, so it holds names and numbers only: never
//! a secret, a dummy value, a header, a path or a client address.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use std::sync::LazyLock;

use crate::connect::tls::ListenerTlsState;
use crate::metrics;
use crate::policy::Policy;
use crate::secret::SecretSource;

static STARTED: LazyLock<Instant> = LazyLock::new(Instant::now);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Starts the uptime clock.
pub fn init() {
    LazyLock::force(&STARTED);
}

/// The snapshot as JSON.
pub fn snapshot(policy: &Policy, tls: &[std::sync::Arc<ListenerTlsState>]) -> Value {
    let c = &policy.config;
    let upstream_stats = metrics::upstream_stats();
    let last_used = metrics::last_used();
    let routes: Vec<Value> = c
        .routes
        .iter()
        .map(|r| {
            json!({
                "host": r.host,
                "port": r.port,
                "path_prefix": r.path_prefix,
                "upstream": c.upstream(r.upstream).map(|u| u.name.as_str()),
                "clients": r.clients,
                "websocket": r.websocket,
            })
        })
        .collect();
    let upstreams: Vec<Value> = c
        .upstreams
        .iter()
        .map(|u| {
            let s = upstream_stats.get(&u.name).cloned().unwrap_or_default();
            json!({
                "name": u.name,
                "url": format!("{}://{}", if u.tls { "https" } else { "http" }, u.authority),
                "health": match s.last_ok { Some(true) => "ok", Some(false) => "failing", None => "unknown" },
                "requests": s.requests,
                "errors": s.errors,
                "max_connections": u.max_connections,
                "connections_in_use": crate::proxy::peer::in_use(&u.name),
            })
        })
        .collect();
    let credentials: Vec<Value> = c
        .credentials
        .iter()
        .map(|cr| {
            let source = |s: &SecretSource| match s {
                SecretSource::Env(_) => "env",
                SecretSource::File(_) => "file",
            };
            let used = |client: &str| last_used.get(&(cr.name.clone(), client.to_owned())).copied();
            let clients: Vec<Value> = cr
                .values
                .iter()
                .filter_map(|v| {
                    let id = v.client.as_deref()?;
                    Some(json!({
                        "identity": id,
                        "available": v.real.is_ok(),
                        "source": source(&v.source),
                        "last_used": used(id),
                    }))
                })
                .collect();
            let last_used = std::iter::once(used(""))
                .chain(cr.values.iter().filter_map(|v| v.client.as_deref().map(used)))
                .flatten()
                .max();
            json!({
                "name": cr.name,
                "available": cr.available(),
                "source": cr.values.first().map(|v| if v.client.is_some() { "per client" } else { source(&v.source) }),
                "clients": clients,
                "upstreams": cr.upstreams.iter().filter_map(|&i| c.upstream(i).map(|u| u.name.as_str())).collect::<Vec<_>>(),
                "last_used": last_used,
            })
        })
        .collect();
    let now = unix_now();
    let certificates: Vec<Value> = tls
        .iter()
        .filter_map(|t| {
            let der = t.leaf_der()?;
            let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
            let not_after = cert.validity().not_after.timestamp();
            Some(json!({
                "listener": t.name,
                "subject": cert.subject().to_string(),
                "not_after": not_after,
                "seconds_left": not_after - now as i64,
            }))
        })
        .collect();
    // Retired real values (see `crate::policy::retired`), by credential name; never a value.
    let instant = std::time::Instant::now();
    let retired: Vec<Value> = policy
        .retired
        .iter()
        .map(|r| {
            json!({
                "credential": r.credential,
                "seconds_left": r.until.saturating_duration_since(instant).as_secs(),
            })
        })
        .collect();
    let (ok, failed) = metrics::reload_counts();
    let dns = dns_section(c);
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": STARTED.elapsed().as_secs(),
        "routes": routes,
        "upstreams": upstreams,
        "credentials": credentials,
        "retired": retired,
        "certificates": certificates,
        "reloads": { "success": ok, "failure": failed },
        "gateway_limits": crate::limits::overload::status(&c.limits),
        "limits": crate::limits::client::status(&c.limits),
        "dns": dns,
    })
}

/// The `dns` section: settings and the cached answers (upstream names, host names, addresses).
fn dns_section(c: &crate::config::Config) -> Value {
    let d = &c.dns;
    let cached: Vec<Value> = crate::dns::snapshot()
        .into_iter()
        .map(|n| {
            // As the socket addresses the gateway connects to (the upstream's port).
            let port = c
                .upstreams
                .iter()
                .find(|u| u.name == n.upstream)
                .map_or(0, |u| u.port);
            json!({
                "upstream": n.upstream,
                "host": n.host,
                "addresses": n.addresses.iter().map(|a| std::net::SocketAddr::new(*a, port).to_string()).collect::<Vec<_>>(),
                "ttl_seconds": n.ttl_secs,
                "expires_in_seconds": (n.expires_in_secs * 10.0).round() / 10.0,
            })
        })
        .collect();
    json!({
        "servers": if d.servers.is_empty() {
            vec!["system".to_string()]
        } else {
            d.servers.iter().map(|s| s.to_string()).collect()
        },
        "min_ttl_seconds": d.min_ttl.as_secs_f64(),
        "max_ttl_seconds": d.max_ttl.as_secs_f64(),
        "serve_stale_seconds": d.serve_stale.as_secs_f64(),
        "cached": cached,
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => esc(s),
        Value::Array(a) => esc(&a
            .iter()
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join(", ")),
        other => esc(&other.to_string()),
    }
}

fn when(v: &Value) -> String {
    match v.as_u64() {
        None => "never".into(),
        Some(t) => {
            let ago = unix_now().saturating_sub(t);
            format!("{ago} s ago")
        }
    }
}

/// The snapshot as a small HTML page.
pub fn html(s: &Value) -> String {
    let mut out = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>SLAPENIR status</title><style>\
         body{font:14px system-ui,sans-serif;margin:2em;color:#222}\
         table{border-collapse:collapse;margin:0 0 2em}\
         th,td{border:1px solid #ccc;padding:4px 10px;text-align:left}\
         th{background:#f3f3f3}.ok{color:#0a7a2f}.bad{color:#b00020}.unk{color:#777}\
         </style></head><body>",
    );
    out.push_str(&format!(
        "<h1>SLAPENIR gateway</h1><p>version {} · up {} s · reloads: {} ok, {} failed</p>",
        text(&s["version"]),
        text(&s["uptime_seconds"]),
        text(&s["reloads"]["success"]),
        text(&s["reloads"]["failure"])
    ));
    out.push_str("<h2>Routes</h2><table><tr><th>host</th><th>port</th><th>path prefix</th><th>upstream</th><th>clients</th><th>websocket</th></tr>");
    for r in s["routes"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            text(&r["host"]),
            text(&r["port"]),
            text(&r["path_prefix"]),
            text(&r["upstream"]),
            if r["clients"].is_null() {
                "all".into()
            } else {
                text(&r["clients"])
            },
            text(&r["websocket"])
        ));
    }
    out.push_str("</table><h2>Upstreams</h2><table><tr><th>name</th><th>url</th><th>health</th><th>requests</th><th>errors</th><th>connections</th></tr>");
    for u in s["upstreams"].as_array().into_iter().flatten() {
        let health = u["health"].as_str().unwrap_or("unknown");
        let class = match health {
            "ok" => "ok",
            "failing" => "bad",
            _ => "unk",
        };
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td class=\"{class}\">{}</td><td>{}</td><td>{}</td><td>{} / {}</td></tr>",
            text(&u["name"]),
            text(&u["url"]),
            esc(health),
            text(&u["requests"]),
            text(&u["errors"]),
            text(&u["connections_in_use"]),
            text(&u["max_connections"])
        ));
    }
    out.push_str("</table><h2>DNS</h2><table><tr><th>upstream</th><th>host</th><th>addresses</th><th>TTL</th><th>expires in</th></tr>");
    for n in s["dns"]["cached"].as_array().into_iter().flatten() {
        let left = n["expires_in_seconds"].as_f64().unwrap_or(0.0);
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}s</td><td class=\"{}\">{left:.1}s</td></tr>",
            text(&n["upstream"]),
            text(&n["host"]),
            text(&n["addresses"]),
            text(&n["ttl_seconds"]),
            if left < 0.0 { "bad" } else { "ok" },
        ));
    }
    out.push_str("</table><h2>Credentials</h2><table><tr><th>name</th><th>state</th><th>source</th><th>upstreams</th><th>last used</th></tr>");
    for c in s["credentials"].as_array().into_iter().flatten() {
        let available = c["available"].as_bool() == Some(true);
        out.push_str(&format!(
            "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            text(&c["name"]),
            if available { "ok" } else { "bad" },
            if available {
                "available"
            } else {
                "unavailable"
            },
            text(&c["source"]),
            text(&c["upstreams"]),
            when(&c["last_used"])
        ));
        // Values per client identity: one row each, under the credential.
        for v in c["clients"].as_array().into_iter().flatten() {
            let ok = v["available"].as_bool() == Some(true);
            out.push_str(&format!(
                "<tr><td>&nbsp;&nbsp;client {}</td><td class=\"{}\">{}</td><td>{}</td><td></td><td>{}</td></tr>",
                text(&v["identity"]),
                if ok { "ok" } else { "bad" },
                if ok { "available" } else { "unavailable" },
                text(&v["source"]),
                when(&v["last_used"])
            ));
        }
    }
    out.push_str("</table><h2>Certificates</h2><table><tr><th>listener</th><th>subject</th><th>expires in</th></tr>");
    for c in s["certificates"].as_array().into_iter().flatten() {
        let left = c["seconds_left"].as_i64().unwrap_or(0);
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td class=\"{}\">{:.1} days</td></tr>",
            text(&c["listener"]),
            text(&c["subject"]),
            if left < 86_400 { "bad" } else { "ok" },
            left as f64 / 86_400.0
        ));
    }
    out.push_str("</table></body></html>\n");
    out
}
