//! What a reload would change: routes added, removed and changed, upstreams and credentials
//! added, removed and changed — credentials *rotated* when their real value differs (compared in
//! constant time, never printed) — and settings changed (limits, DNS, decoding, rotation). Used by the reload log line and by
//! `slapenir check --admin ADDR`, which asks the running gateway for the plan of the file on disk.
//! It also names the credentials whose old real value a reload retires (kept scrubbed from
//! responses for `rotation.retired_grace`) or drops (see [`crate::policy::retired`]).

use std::collections::BTreeMap;
use std::fmt;

use crate::config::Config;

/// The differences between a running configuration and a new one, by name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    pub routes_added: Vec<String>,
    pub routes_removed: Vec<String>,
    pub routes_changed: Vec<String>,
    pub upstreams_added: Vec<String>,
    pub upstreams_removed: Vec<String>,
    pub upstreams_changed: Vec<String>,
    pub credentials_added: Vec<String>,
    pub credentials_removed: Vec<String>,
    /// The real value changed.
    pub credentials_rotated: Vec<String>,
    /// The dummy, the bound upstreams or the availability changed.
    pub credentials_changed: Vec<String>,
    /// Where the dummy is swapped (`swap_in:`) changed.
    pub credentials_placement_changed: Vec<String>,
    /// The requests the swap happens for (`allow:`) changed.
    pub credentials_rules_changed: Vec<String>,
    /// The client identities with values of their own changed: `NAME (+added -removed)`, or
    /// `NAME (values rotated: id, ...)` when only values changed.
    pub credentials_clients_changed: Vec<String>,
    /// Credentials whose old real value is retired: still scrubbed from responses until the
    /// grace ends.
    pub retired: Vec<String>,
    /// Credentials whose retired value is dropped (grace zero, cut or ended, or live again).
    pub retired_dropped: Vec<String>,
    /// Settings changed, by key: `limits.KEY (old → new)`, `limits.per_client`,
    /// `limits.clients.NAME`, `dns`, `decoding`, `rotation`.
    pub settings_changed: Vec<String>,
    /// Parts that only a restart applies (listeners, admin, interception, HTTP/2's header list
    /// bound and idle timeout).
    pub needs_restart: Vec<String>,
}

/// `limits:`'s gateway-wide keys with their values, for [`settings_changed`](Plan).
fn limit_values(l: &crate::config::limits::Limits) -> [(&'static str, String); 9] {
    [
        ("connections", l.connections.to_string()),
        ("fd_reserve", l.fd_reserve.to_string()),
        ("header_bytes", l.header_bytes.to_string()),
        ("headers", l.headers.to_string()),
        ("idle_timeout", format!("{:?}", l.idle_timeout)),
        ("head_timeout", format!("{:?}", l.head_timeout)),
        ("body_idle_timeout", format!("{:?}", l.body_idle_timeout)),
        ("request_timeout", format!("{:?}", l.request_timeout)),
        ("send_timeout", format!("{:?}", l.send_timeout)),
    ]
}

/// What [`Plan::settings_changed`] and the HTTP/2 part of [`Plan::needs_restart`] say.
fn settings(old: &Config, new: &Config, plan: &mut Plan) {
    let (ol, nl) = (&old.limits, &new.limits);
    for ((key, before), (_, after)) in limit_values(ol).into_iter().zip(limit_values(nl)) {
        if before != after {
            plan.settings_changed
                .push(format!("limits.{key} ({before} → {after})"));
            if matches!(key, "header_bytes" | "idle_timeout") {
                plan.needs_restart.push(format!("limits.{key} for HTTP/2"));
            }
        }
    }
    if ol.per_client != nl.per_client {
        plan.settings_changed.push("limits.per_client".into());
    }
    let clients = |c: &Config| -> BTreeMap<String, String> {
        c.limits
            .clients
            .iter()
            .map(|(k, v)| (k.clone(), format!("{v:?}")))
            .collect()
    };
    let (added, removed, changed) = diff(clients(old), clients(new));
    for name in added.iter().chain(&removed).chain(&changed) {
        plan.settings_changed.push(format!("limits.clients.{name}"));
    }
    if old.dns != new.dns {
        plan.settings_changed.push("dns".into());
    }
    if old.decoding != new.decoding {
        plan.settings_changed.push("decoding".into());
    }
    if old.rotation != new.rotation {
        plan.settings_changed.push("rotation".into());
    }
}

fn route_key(c: &Config, i: usize) -> (String, String) {
    let r = &c.routes[i];
    let key = format!(
        "{}{}{}",
        r.host,
        r.port.map(|p| format!(":{p}")).unwrap_or_default(),
        r.path_prefix
    );
    let up = c.upstream(r.upstream).map_or("?", |u| u.name.as_str());
    let value = format!("{up} {:?} {}", r.clients, r.websocket);
    (key, value)
}

fn diff(
    old: BTreeMap<String, String>,
    new: BTreeMap<String, String>,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let added = new
        .keys()
        .filter(|k| !old.contains_key(*k))
        .cloned()
        .collect();
    let removed = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .cloned()
        .collect();
    let changed = new
        .iter()
        .filter(|(k, v)| old.get(*k).is_some_and(|o| o != *v))
        .map(|(k, _)| k.clone())
        .collect();
    (added, removed, changed)
}

impl Plan {
    /// Compares `old` (running) with `new`.
    pub fn between(old: &Config, new: &Config) -> Plan {
        let routes = |c: &Config| (0..c.routes.len()).map(|i| route_key(c, i)).collect();
        let (routes_added, routes_removed, routes_changed) = diff(routes(old), routes(new));
        let ups = |c: &Config| {
            c.upstreams
                .iter()
                .map(|u| {
                    let v = format!(
                        "{} {} {} {:?} {:?} {:?} {:?} {} {}",
                        u.tls,
                        u.host,
                        u.port,
                        u.ca,
                        u.http_version,
                        u.connect_timeout,
                        u.read_timeout,
                        u.client_cert.as_ref().map_or(0, |c| c.chain.len()),
                        u.max_connections
                    );
                    (u.name.clone(), v)
                })
                .collect()
        };
        let (upstreams_added, upstreams_removed, upstreams_changed) = diff(ups(old), ups(new));
        let mut plan = Plan {
            routes_added,
            routes_removed,
            routes_changed,
            upstreams_added,
            upstreams_removed,
            upstreams_changed,
            ..Plan::default()
        };
        for n in &new.credentials {
            match old.credentials.iter().find(|o| o.name == n.name) {
                None => plan.credentials_added.push(n.name.clone()),
                Some(o) => {
                    let names = |c: &Config, ids: &[crate::config::UpstreamId]| -> Vec<String> {
                        ids.iter()
                            .filter_map(|&i| c.upstream(i).map(|u| u.name.clone()))
                            .collect()
                    };
                    let clients = |c: &crate::config::Credential| -> Vec<Option<String>> {
                        c.values.iter().map(|v| v.client.clone()).collect()
                    };
                    let (oc, nc) = (clients(o), clients(n));
                    // Values compared per client identity present on both sides.
                    let mut rotated_for = Vec::new();
                    let mut source_changed = false;
                    for nv in &n.values {
                        let Some(ov) = o.values.iter().find(|v| v.client == nv.client) else {
                            continue;
                        };
                        if let (Ok(a), Ok(b)) = (&ov.real, &nv.real)
                            && !a.ct_eq(b.expose())
                        {
                            rotated_for.push(nv.client.clone().unwrap_or_default());
                        }
                        source_changed |=
                            ov.source != nv.source || ov.real.is_ok() != nv.real.is_ok();
                    }
                    let changed = o.dummy != n.dummy
                        || names(old, &o.upstreams) != names(new, &n.upstreams)
                        || source_changed;
                    if !rotated_for.is_empty() {
                        plan.credentials_rotated.push(n.name.clone());
                    }
                    if changed {
                        plan.credentials_changed.push(n.name.clone());
                    }
                    if o.swap_in != n.swap_in {
                        plan.credentials_placement_changed.push(n.name.clone());
                    }
                    if o.allow != n.allow {
                        plan.credentials_rules_changed.push(n.name.clone());
                    }
                    let ids = |v: &[Option<String>]| -> Vec<String> {
                        v.iter().flatten().cloned().collect()
                    };
                    let added: Vec<String> = ids(&nc)
                        .into_iter()
                        .filter(|c| !ids(&oc).contains(c))
                        .collect();
                    let removed: Vec<String> = ids(&oc)
                        .into_iter()
                        .filter(|c| !ids(&nc).contains(c))
                        .collect();
                    let mut parts: Vec<String> = added.iter().map(|c| format!("+{c}")).collect();
                    parts.extend(removed.iter().map(|c| format!("-{c}")));
                    if oc.contains(&None) != nc.contains(&None) {
                        parts.push(if nc.contains(&None) {
                            "one value for every client".into()
                        } else {
                            "values per client".into()
                        });
                    }
                    let per_client_rotations: Vec<&String> =
                        rotated_for.iter().filter(|c| !c.is_empty()).collect();
                    if !parts.is_empty() {
                        plan.credentials_clients_changed.push(format!(
                            "{} ({})",
                            n.name,
                            parts.join(" ")
                        ));
                    } else if !per_client_rotations.is_empty() {
                        let list: Vec<&str> =
                            per_client_rotations.iter().map(|s| s.as_str()).collect();
                        plan.credentials_clients_changed.push(format!(
                            "{} (values rotated: {})",
                            n.name,
                            list.join(", ")
                        ));
                    }
                }
            }
        }
        for o in &old.credentials {
            if !new.credentials.iter().any(|n| n.name == o.name) {
                plan.credentials_removed.push(o.name.clone());
            }
        }
        let listeners = |c: &Config| {
            format!(
                "{:?}",
                c.listeners
                    .iter()
                    .map(|l| (&l.name, l.address, l.tls.is_some()))
                    .collect::<Vec<_>>()
            )
        };
        if listeners(old) != listeners(new) {
            plan.needs_restart.push("listeners".into());
        }
        if old.admin.as_ref().map(|a| a.address) != new.admin.as_ref().map(|a| a.address) {
            plan.needs_restart.push("admin".into());
        }
        if old.interception.as_ref().map(|i| (&i.ca_cert, &i.ca_key))
            != new.interception.as_ref().map(|i| (&i.ca_cert, &i.ca_key))
        {
            plan.needs_restart.push("interception".into());
        }
        settings(old, new, &mut plan);
        plan
    }

    /// Adds what a reload changes in retired values (see [`crate::policy::retired::Changes`]).
    pub fn with_retirement(mut self, changes: &crate::policy::retired::Changes) -> Plan {
        self.retired = changes.retired.iter().map(|(n, _)| n.clone()).collect();
        self.retired_dropped = changes.dropped.clone();
        for list in [&mut self.retired, &mut self.retired_dropped] {
            list.sort();
            list.dedup();
        }
        self
    }

    /// Whether nothing would change.
    pub fn is_empty(&self) -> bool {
        *self == Plan::default()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no changes");
        }
        let parts: [(&str, &Vec<String>); 17] = [
            ("routes added", &self.routes_added),
            ("routes removed", &self.routes_removed),
            ("routes changed", &self.routes_changed),
            ("upstreams added", &self.upstreams_added),
            ("upstreams removed", &self.upstreams_removed),
            ("upstreams changed", &self.upstreams_changed),
            ("credentials added", &self.credentials_added),
            ("credentials removed", &self.credentials_removed),
            ("credentials rotated", &self.credentials_rotated),
            ("credentials changed", &self.credentials_changed),
            (
                "credential placement changed (swap_in)",
                &self.credentials_placement_changed,
            ),
            (
                "credential rules changed (allow)",
                &self.credentials_rules_changed,
            ),
            (
                "credential clients changed",
                &self.credentials_clients_changed,
            ),
            (
                "old values retired (still scrubbed from responses)",
                &self.retired,
            ),
            ("retired values dropped", &self.retired_dropped),
            ("settings changed", &self.settings_changed),
            (
                "needs a restart (not applied by a reload)",
                &self.needs_restart,
            ),
        ];
        let mut first = true;
        for (label, items) in parts {
            if items.is_empty() {
                continue;
            }
            if !first {
                f.write_str("; ")?;
            }
            first = false;
            write!(f, "{label}: {}", items.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::path::Path;

    fn config(credentials: &str) -> Config {
        with_sections(&format!("credentials:\n{credentials}"))
    }

    /// A listener and upstream `a`, then `sections`.
    fn with_sections(sections: &str) -> Config {
        let text = format!(
            "listeners:\n  - name: l\n    address: 127.0.0.1:1\nupstreams:\n  a:\n    url: http://127.0.0.1:1\n{sections}"
        );
        Config::from_source(&text, "t.yaml", Path::new("."))
            .unwrap()
            .config
    }

    /// Limits, DNS, decoding, rotation and an upstream's `max_connections` show by key, with
    /// the old and new values of gateway-wide limits; the HTTP/2 bounds taken at start are named
    /// as needing a restart.
    #[test]
    fn settings_changes_show_by_key() {
        let old = with_sections("limits:\n  connections: 100\n  clients:\n    agent-1: { streams: 2 }\n    agent-2: { streams: 2 }\n");
        let new = with_sections(
            "limits:\n  connections: 50\n  idle_timeout: 5s\n  per_client: { streams: 8 }\n  clients:\n    agent-1: { streams: 3 }\n    agent-3: { streams: 2 }\n\
             dns:\n  min_ttl: 2s\n\
             rotation:\n  retired_grace: 1h\n",
        );
        let plan = Plan::between(&old, &new);
        assert_eq!(
            plan.settings_changed,
            [
                "limits.connections (100 → 50)",
                "limits.idle_timeout (60s → 5s)",
                "limits.per_client",
                "limits.clients.agent-3",
                "limits.clients.agent-2",
                "limits.clients.agent-1",
                "dns",
                "rotation",
            ]
        );
        assert_eq!(plan.needs_restart, ["limits.idle_timeout for HTTP/2"]);
        let text = plan.to_string();
        assert!(
            text.contains("settings changed: limits.connections (100 → 50), "),
            "{text}"
        );
        assert!(Plan::between(&new, &new).is_empty());

        let base = with_sections("");
        let mut more = base.clone();
        more.upstreams[0].max_connections += 1;
        assert_eq!(Plan::between(&base, &more).upstreams_changed, ["a"]);
    }

    /// Placement, rules and client identities show by credential name.
    #[test]
    fn least_privilege_changes_show_by_name() {
        let old = config(
            "  keep:\n    dummy: dummy-keep-0001\n    real: { env: HOME }\n    upstreams: [a]\n\
             \x20 placed:\n    dummy: dummy-placed-01\n    real: { env: HOME }\n    upstreams: [a]\n\
             \x20 ruled:\n    dummy: dummy-ruled-001\n    real: { env: HOME }\n    upstreams: [a]\n\
             \x20 agents:\n    dummy: dummy-agents-01\n    upstreams: [a]\n    clients:\n      agent-1: { env: HOME }\n      agent-2: { env: PATH }\n",
        );
        let new = config(
            "  keep:\n    dummy: dummy-keep-0001\n    real: { env: HOME }\n    upstreams: [a]\n\
             \x20 placed:\n    dummy: dummy-placed-01\n    real: { env: HOME }\n    upstreams: [a]\n    swap_in: { headers: [x-api-key] }\n\
             \x20 ruled:\n    dummy: dummy-ruled-001\n    real: { env: HOME }\n    upstreams: [a]\n    allow:\n      - methods: [GET]\n\
             \x20 agents:\n    dummy: dummy-agents-01\n    upstreams: [a]\n    clients:\n      agent-1: { env: HOME }\n      agent-3: { env: PATH }\n",
        );
        let plan = Plan::between(&old, &new);
        assert_eq!(plan.credentials_placement_changed, ["placed"]);
        assert_eq!(plan.credentials_rules_changed, ["ruled"]);
        assert_eq!(
            plan.credentials_clients_changed,
            ["agents (+agent-3 -agent-2)"]
        );
        assert!(plan.credentials_changed.is_empty(), "{plan}");
        let text = plan.to_string();
        assert!(
            text.contains("credential placement changed (swap_in): placed"),
            "{text}"
        );
        assert!(
            text.contains("credential rules changed (allow): ruled"),
            "{text}"
        );
        assert!(
            text.contains("credential clients changed: agents (+agent-3 -agent-2)"),
            "{text}"
        );
        assert!(Plan::between(&new, &new).is_empty());
    }
}
