//! `dns:`, `limits:`, `rotation:` and `decoding:`: the settings sections.

use super::*;

/// `dns:`: name servers as socket addresses (port 53 when none is written), durations more
/// than zero, `min_ttl` not above `max_ttl`; every key optional (see [`Dns::default`]).
pub(super) fn check_dns(r: &mut Report<'_>, v: &Value) -> Option<Dns> {
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
        Some(s) => match bounded_duration(&s, true) {
            Ok(d) => Some(d),
            Err(m) => {
                r.error(&p.key("serve_stale"), m);
                None
            }
        },
    };
    let timeout = duration_field(r, &p.key("timeout"), raw.timeout, default.timeout);
    let system_ttl = duration_field(r, &p.key("system_ttl"), raw.system_ttl, default.system_ttl);
    if let (Some(lo), Some(hi)) = (min_ttl, max_ttl)
        && lo > hi
    {
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
pub(super) fn check_limits(r: &mut Report<'_>, v: &Value) -> Option<super::limits::Limits> {
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
pub(super) fn check_rotation(r: &mut Report<'_>, v: &Value) -> Option<Rotation> {
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
pub(super) fn check_decoding(
    r: &mut Report<'_>,
    v: &Value,
) -> Option<crate::rewrite::decode::Budget> {
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
