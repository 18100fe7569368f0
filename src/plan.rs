//! What a reload would change: routes added, removed and changed, upstreams and credentials
//! added, removed and changed — credentials *rotated* when their real value differs (compared in
//! constant time, never printed). Used by the reload log line and by
//! `slapenir check --admin ADDR`, which asks the running gateway for the plan of the file on disk.
//! It also names the credentials whose old real value a reload retires (kept scrubbed from
//! responses for `rotation.retired_grace`) or drops (see [`crate::retired`]).

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
    /// Credentials whose old real value is retired: still scrubbed from responses until the
    /// grace ends.
    pub retired: Vec<String>,
    /// Credentials whose retired value is dropped (grace zero, cut or ended, or live again).
    pub retired_dropped: Vec<String>,
    /// Parts that only a restart applies (listeners, admin, interception).
    pub needs_restart: Vec<String>,
}

fn route_key(c: &Config, i: usize) -> (String, String) {
    let r = &c.routes[i];
    let key = format!(
        "{}{}{}",
        r.host,
        r.port.map(|p| format!(":{p}")).unwrap_or_default(),
        r.path_prefix
    );
    let up = c.upstreams.get(r.upstream).map_or("?", |u| u.name.as_str());
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
                        "{} {} {} {:?} {:?} {:?} {:?} {}",
                        u.tls,
                        u.host,
                        u.port,
                        u.ca,
                        u.http_version,
                        u.connect_timeout,
                        u.read_timeout,
                        u.client_cert.as_ref().map_or(0, |c| c.chain.len())
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
                    let names = |c: &Config, ids: &[usize]| -> Vec<String> {
                        ids.iter()
                            .filter_map(|&i| c.upstreams.get(i).map(|u| u.name.clone()))
                            .collect()
                    };
                    let rotated = match (&o.real, &n.real) {
                        (Ok(a), Ok(b)) => !a.ct_eq(b.expose()),
                        _ => false,
                    };
                    let changed = o.dummy != n.dummy
                        || names(old, &o.upstreams) != names(new, &n.upstreams)
                        || o.real.is_ok() != n.real.is_ok()
                        || o.source != n.source;
                    if rotated {
                        plan.credentials_rotated.push(n.name.clone());
                    }
                    if changed {
                        plan.credentials_changed.push(n.name.clone());
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
        plan
    }

    /// Adds what a reload changes in retired values (see [`crate::retired::Changes`]).
    pub fn with_retirement(mut self, changes: &crate::retired::Changes) -> Plan {
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
        let parts: [(&str, &Vec<String>); 13] = [
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
                "old values retired (still scrubbed from responses)",
                &self.retired,
            ),
            ("retired values dropped", &self.retired_dropped),
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
