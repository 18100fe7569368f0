//! `routes:`: hosts, ports, path prefixes, upstreams and clients; duplicates.

use super::*;

pub(super) fn check_routes(
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
        if let Some(clients) = &raw.clients
            && clients.is_empty()
        {
            r.error(
                &p.key("clients"),
                "an empty `clients` list would refuse everyone; remove the key to allow all",
            );
            ok = false;
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
                upstream: UpstreamId(upstream),
                clients: raw.clients,
                websocket: raw.websocket.unwrap_or(false),
            });
        }
    }
    ok.then_some(out)
}

pub(super) fn check_route_host(host: &str) -> Result<(), String> {
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
