//! Every Prometheus metric the gateway exports, in one place. Base units (`_seconds`,
//! `_bytes`, `_total`); labels are bounded sets taken from the configuration or from fixed
//! lists — never a secret, a dummy, a path, a header or anything else the client chooses.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `slapenir_requests_total` | counter | `route`, `upstream`, `status_class` | requests answered, by route (`host` + path prefix from the config, `none` when unrouted), upstream name and status class (`2xx`...`5xx`, `none` when the connection failed before an answer) |
//! | `slapenir_request_duration_seconds` | histogram | `route`, `upstream` | time from request start to the end of logging |
//! | `slapenir_body_bytes_total` | counter | `direction` (`in`: from the agent, `out`: to the agent) | body bytes |
//! | `slapenir_replacements_total` | counter | `credential`, `client` (the configured client identity whose value was swapped in, for credentials with values per client; empty otherwise and for responses), `direction` (`request`: dummy→real, `response`: real→dummy) | credential swaps |
//! | `slapenir_misplaced_dummies_total` | counter | `credential` | dummies found in a request to one of the credential's upstreams outside the places it is swapped in (`swap_in`), forwarded unchanged |
//! | `slapenir_limited_total` | counter | `client`, `limit` | connections and requests refused (429/503), shed or slowed by a limit; `client` is a configured identity, `other`, or `gateway` for the gateway-wide limits; `limit` is one of `refusal::Limit` |
//! | `slapenir_refusals_total` | counter | `reason` | refused requests or connections; `reason` is one of `refusal::Reason`, each with its meaning in `docs/api.md` |
//! | `slapenir_upstream_duration_seconds` | histogram | `upstream` | time from choosing the upstream to its response header (connect, TLS, request, upstream's think time) |
//! | `slapenir_upstream_errors_total` | counter | `upstream`, `kind` (`connect`, `tls`, `timeout`, `other`) | failed upstream connections or exchanges |
//! | `slapenir_certificate_expiry_timestamp_seconds` | gauge | `listener` | notAfter of the listener's server certificate (unix time), updated on reload |
//! | `slapenir_in_flight_requests` | gauge | — | requests being served |
//! | `slapenir_config_reloads_total` | counter | `result` (`success`, `failure`) | configuration reloads (`SIGHUP` or a watched file changed); a failure keeps the old configuration |
//! | `slapenir_dns_lookups_total` | counter | `upstream`, `result` (`ok`, `error`) | DNS queries for an upstream's host name: the first one and each background refresh (a request answered from the cache sends none); see `crate::dns` |
//! | `slapenir_upstream_connections_total` | counter | `upstream`, `reused` (`true`: taken from the keep-alive pool or an HTTP/2 connection already open; `false`: newly opened) | connections a request used |
//! | `slapenir_upstream_connections_in_use` | gauge | `upstream` | requests holding one of the upstream's `max_connections` slots |
//! | `slapenir_build_info` | gauge (1) | `version` | the running version |
//! | `slapenir_allocator_bytes` | gauge | `kind` (`allocated`: held by live blocks, `active`: in pages holding them, `metadata`: the allocator's own, `resident`: in physically resident pages the allocator maps, `mapped`: in its mapped chunks, `retained`: unmapped from use but kept for reuse — the process does not pay for it in RSS) | the heap allocator's statistics, read when `/metrics` is scraped |

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{
    register_gauge_vec, register_histogram_vec, register_int_counter_vec, register_int_gauge,
    register_int_gauge_vec, Encoder, GaugeVec, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    TextEncoder,
};
use std::sync::LazyLock;

use crate::refusal::{Limit, Reason};

#[allow(clippy::expect_used)] // registration of static, well-formed metrics cannot fail
mod defs {
    use super::*;

    pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
        register_int_counter_vec!(
            "slapenir_requests_total",
            "Requests answered, by route, upstream and status class.",
            &["route", "upstream", "status_class"]
        )
        .expect("register slapenir_requests_total")
    });
    pub static DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
        register_histogram_vec!(
            "slapenir_request_duration_seconds",
            "Time from request start to the end of the response, by route and upstream.",
            &["route", "upstream"],
            vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0
            ]
        )
        .expect("register slapenir_request_duration_seconds")
    });
    pub static UPSTREAM_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
        register_histogram_vec!(
            "slapenir_upstream_duration_seconds",
            "Time from choosing the upstream to its response header, by upstream.",
            &["upstream"],
            vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0
            ]
        )
        .expect("register slapenir_upstream_duration_seconds")
    });
    pub static UPSTREAM_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
        register_int_counter_vec!(
            "slapenir_upstream_errors_total",
            "Failed upstream connections or exchanges, by upstream and kind (connect, tls, timeout, other).",
            &["upstream", "kind"]
        )
        .expect("register slapenir_upstream_errors_total")
    });
    pub static DNS_LOOKUPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
        register_int_counter_vec!(
            "slapenir_dns_lookups_total",
            "DNS queries for an upstream's host name (first lookup and background refreshes), by upstream and result (ok, error).",
            &["upstream", "result"]
        )
        .expect("register slapenir_dns_lookups_total")
    });
    pub static UPSTREAM_CONNECTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
        register_int_counter_vec!(
            "slapenir_upstream_connections_total",
            "Upstream connections used by requests, by upstream and whether the connection was reused (true) or newly opened (false).",
            &["upstream", "reused"]
        )
        .expect("register slapenir_upstream_connections_total")
    });
    pub static UPSTREAM_IN_USE: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
        prometheus::register_int_gauge_vec!(
            "slapenir_upstream_connections_in_use",
            "Requests holding one of the upstream's max_connections slots.",
            &["upstream"]
        )
        .expect("register slapenir_upstream_connections_in_use")
    });
    pub static CERT_EXPIRY: LazyLock<GaugeVec> = LazyLock::new(|| {
        register_gauge_vec!(
            "slapenir_certificate_expiry_timestamp_seconds",
            "notAfter of each listener's server certificate, unix time.",
            &["listener"]
        )
        .expect("register slapenir_certificate_expiry_timestamp_seconds")
    });
    pub static BODY_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
        register_int_counter_vec!(
            "slapenir_body_bytes_total",
            "Body bytes, by direction (in: from the agent, out: to the agent).",
            &["direction"]
        )
        .expect("register slapenir_body_bytes_total")
    });
    pub static REPLACEMENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
        register_int_counter_vec!(
            "slapenir_replacements_total",
            "Credential swaps, by credential name and direction (request: dummy to real, response: real to dummy).",
            &["credential", "client", "direction"]
        )
        .expect("register slapenir_replacements_total")
    });
    pub static MISPLACED: LazyLock<IntCounterVec> = LazyLock::new(|| {
        register_int_counter_vec!(
            "slapenir_misplaced_dummies_total",
            "Dummies found outside the places their credential is swapped in, forwarded unchanged.",
            &["credential"]
        )
        .expect("register slapenir_misplaced_dummies_total")
    });
    pub static REFUSALS: LazyLock<IntCounterVec> = LazyLock::new(|| {
        register_int_counter_vec!(
            "slapenir_refusals_total",
            "Refused requests or connections, by reason.",
            &["reason"]
        )
        .expect("register slapenir_refusals_total")
    });
    pub static LIMITED: LazyLock<IntCounterVec> = LazyLock::new(|| {
        register_int_counter_vec!(
            "slapenir_limited_total",
            "Connections and requests refused, shed or slowed by a limit, by client (a configured identity, or `other`; `gateway` for the gateway's own limits) and limit (see `refusal::Limit`).",
            &["client", "limit"]
        )
        .expect("register slapenir_limited_total")
    });
    pub static IN_FLIGHT: LazyLock<IntGauge> = LazyLock::new(|| {
        register_int_gauge!("slapenir_in_flight_requests", "Requests being served.")
            .expect("register slapenir_in_flight_requests")
    });
    pub static RELOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
        register_int_counter_vec!(
            "slapenir_config_reloads_total",
            "Configuration reloads by result (success, failure); a failure keeps the old configuration.",
            &["result"]
        )
        .expect("register slapenir_config_reloads_total")
    });
    pub static ALLOCATOR: LazyLock<IntGaugeVec> = LazyLock::new(|| {
        register_int_gauge_vec!(
            "slapenir_allocator_bytes",
            "The heap allocator's statistics, read when scraped.",
            &["kind"]
        )
        .expect("register slapenir_allocator_bytes")
    });
    pub static BUILD: LazyLock<GaugeVec> = LazyLock::new(|| {
        register_gauge_vec!(
            "slapenir_build_info",
            "The running version (always 1).",
            &["version"]
        )
        .expect("register slapenir_build_info")
    });
}

/// Touches every metric so that all appear on `/metrics` from the start.
pub fn init() {
    defs::BUILD
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1.0);
    LazyLock::force(&defs::REQUESTS);
    LazyLock::force(&defs::DURATION);
    for d in ["in", "out"] {
        defs::BODY_BYTES.with_label_values(&[d]);
    }
    LazyLock::force(&defs::REPLACEMENTS);
    LazyLock::force(&defs::MISPLACED);
    for r in Reason::ALL {
        defs::REFUSALS.with_label_values(&[r.as_str()]);
    }
    // The gateway's own limits appear at zero from the start (client labels appear with use).
    for l in Limit::GATEWAY {
        defs::LIMITED.with_label_values(&["gateway", l.as_str()]);
    }
    LazyLock::force(&defs::IN_FLIGHT);
    LazyLock::force(&defs::UPSTREAM_DURATION);
    LazyLock::force(&defs::UPSTREAM_ERRORS);
    LazyLock::force(&defs::CERT_EXPIRY);
    LazyLock::force(&defs::DNS_LOOKUPS);
    LazyLock::force(&defs::UPSTREAM_CONNECTIONS);
    LazyLock::force(&defs::UPSTREAM_IN_USE);
    for r in ["success", "failure"] {
        defs::RELOADS.with_label_values(&[r]);
    }
    allocator_refresh();
}

/// Observes the time until an upstream's response header.
pub fn upstream_duration(upstream: &str, seconds: f64) {
    defs::UPSTREAM_DURATION
        .with_label_values(&[upstream])
        .observe(seconds);
}

/// Counts an upstream failure (`kind`: connect, tls, timeout, other).
pub fn upstream_error(upstream: &str, kind: &'static str) {
    defs::UPSTREAM_ERRORS
        .with_label_values(&[upstream, kind])
        .inc();
}

/// Counts a DNS query for `upstream`'s host name.
pub fn dns_lookup(upstream: &str, ok: bool) {
    defs::DNS_LOOKUPS
        .with_label_values(&[upstream, if ok { "ok" } else { "error" }])
        .inc();
}

/// Counts a connection a request to `upstream` used: `reused` from the pool, or new.
pub fn upstream_connection(upstream: &str, reused: bool) {
    defs::UPSTREAM_CONNECTIONS
        .with_label_values(&[upstream, if reused { "true" } else { "false" }])
        .inc();
}

/// Moves the count of `upstream`'s `max_connections` slots in use by `delta`.
pub fn upstream_in_use(upstream: &str, delta: i64) {
    defs::UPSTREAM_IN_USE
        .with_label_values(&[upstream])
        .add(delta);
}

/// Sets a listener certificate's expiry (unix seconds).
pub fn certificate_expiry(listener: &str, not_after: i64) {
    defs::CERT_EXPIRY
        .with_label_values(&[listener])
        .set(not_after as f64);
}

/// (successful, failed) configuration reloads so far.
pub fn reload_counts() -> (u64, u64) {
    (
        defs::RELOADS.with_label_values(&["success"]).get(),
        defs::RELOADS.with_label_values(&["failure"]).get(),
    )
}

/// Counts a configuration reload.
pub fn config_reload(ok: bool) {
    defs::RELOADS
        .with_label_values(&[if ok { "success" } else { "failure" }])
        .inc();
}

/// The class of a status code: `2xx`; `none` when no answer was sent.
pub fn status_class(status: Option<u16>) -> &'static str {
    match status {
        Some(100..=199) => "1xx",
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        _ => "none",
    }
}

/// Records a finished request.
pub fn request_done(route: &str, upstream: &str, status: Option<u16>, seconds: f64) {
    defs::REQUESTS
        .with_label_values(&[route, upstream, status_class(status)])
        .inc();
    defs::DURATION
        .with_label_values(&[route, upstream])
        .observe(seconds);
}

/// Adds body bytes (`direction`: `in` or `out`).
pub fn body_bytes(direction: &'static str, n: usize) {
    defs::BODY_BYTES
        .with_label_values(&[direction])
        .inc_by(n as u64);
}

/// Counts swaps of one credential (`direction`: `request` or `response`; `client`: the
/// configured client identity whose value was used, or `""`).
pub fn replacements(credential: &str, client: &str, direction: &'static str, n: u64) {
    defs::REPLACEMENTS
        .with_label_values(&[credential, client, direction])
        .inc_by(n);
}

/// Counts dummies of one credential forwarded unchanged because they were outside its
/// `swap_in` places.
pub fn misplaced(credential: &str, n: u64) {
    defs::MISPLACED.with_label_values(&[credential]).inc_by(n);
}

/// Counts a refusal (its label is one of `Reason`'s closed list).
pub fn refusal(reason: Reason) {
    defs::REFUSALS.with_label_values(&[reason.as_str()]).inc();
}

/// Counts a client certificate that failed verification.
pub fn mtls_failure() {
    refusal(Reason::MtlsFailure);
}

/// Counts a limit hit by `client` (a label from `crate::limits::client_label`, or `gateway`).
pub fn limited(client: &str, limit: Limit) {
    defs::LIMITED
        .with_label_values(&[client, limit.as_str()])
        .inc();
}

/// A request started / ended.
pub fn in_flight(delta: i64) {
    defs::IN_FLIGHT.add(delta);
}

/// The heap allocator's statistics, in bytes: `(kind, value)` for each `kind` of
/// `slapenir_allocator_bytes`. Empty when the allocator cannot report (statistics are cached by
/// the allocator and refreshed here).
pub fn allocator_stats() -> Vec<(&'static str, u64)> {
    use tikv_jemalloc_ctl::{epoch, stats};
    if epoch::advance().is_err() {
        return Vec::new();
    }
    type Read = fn() -> tikv_jemalloc_ctl::Result<usize>;
    let read: [(&'static str, Read); 6] = [
        ("allocated", stats::allocated::read),
        ("active", stats::active::read),
        ("metadata", stats::metadata::read),
        ("resident", stats::resident::read),
        ("mapped", stats::mapped::read),
        ("retained", stats::retained::read),
    ];
    read.iter()
        .filter_map(|(kind, f)| f().ok().map(|v| (*kind, v as u64)))
        .collect()
}

fn allocator_refresh() {
    for (kind, v) in allocator_stats() {
        defs::ALLOCATOR
            .with_label_values(&[kind])
            .set(i64::try_from(v).unwrap_or(i64::MAX));
    }
}

/// The text exposition of every metric.
pub fn render() -> String {
    allocator_refresh();
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&prometheus::gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

// What the status page shows besides these metrics: each upstream's request and error counts
// and its last outcome, and when each credential was last used (a time, which a counter is not).

/// An upstream's requests, errors and last outcome since the start.
#[derive(Default, Clone)]
pub struct UpstreamStats {
    pub requests: u64,
    pub errors: u64,
    /// Whether the last attempt got an answer.
    pub last_ok: Option<bool>,
}

static UPSTREAMS: LazyLock<Mutex<HashMap<String, UpstreamStats>>> = LazyLock::new(Default::default);
/// (credential, client identity or `""`) → unix time of the last swap.
static LAST_USED: LazyLock<Mutex<HashMap<(String, String), u64>>> = LazyLock::new(Default::default);

/// An upstream answered (`ok`) or failed to.
pub fn upstream_outcome(upstream: &str, ok: bool) {
    if let Ok(mut m) = UPSTREAMS.lock() {
        // Look up by &str first: the key is allocated once per upstream, not per request.
        if !m.contains_key(upstream) {
            m.insert(upstream.to_owned(), UpstreamStats::default());
        }
        let Some(s) = m.get_mut(upstream) else { return };
        s.requests += 1;
        if !ok {
            s.errors += 1;
        }
        s.last_ok = Some(ok);
    }
}

/// A credential was swapped (either direction); `client` is the configured client identity whose
/// value was used, or `""`.
pub fn credential_used(name: &str, client: &str) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    if let Ok(mut m) = LAST_USED.lock() {
        m.insert((name.to_owned(), client.to_owned()), now);
    }
}

/// Every upstream's counts, by name.
pub fn upstream_stats() -> HashMap<String, UpstreamStats> {
    UPSTREAMS.lock().map(|m| m.clone()).unwrap_or_default()
}

/// When each (credential, client) was last used, in seconds since the Unix epoch.
pub fn last_used() -> HashMap<(String, String), u64> {
    LAST_USED.lock().map(|m| m.clone()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn allocator_gauges_are_exported_when_scraped() {
        let kinds: Vec<&str> = allocator_stats().iter().map(|(k, _)| *k).collect();
        assert_eq!(
            kinds,
            [
                "allocated",
                "active",
                "metadata",
                "resident",
                "mapped",
                "retained"
            ]
        );
        let text = render();
        for kind in kinds {
            let line = format!("slapenir_allocator_bytes{{kind=\"{kind}\"}} ");
            assert!(text.contains(&line), "{line} missing from /metrics");
        }
    }

    #[test]
    fn every_refusal_reason_and_limit_has_its_series_from_the_start() {
        init();
        let text = render();
        for r in Reason::ALL {
            let series = format!("slapenir_refusals_total{{reason=\"{r}\"}} ");
            assert!(text.contains(&series), "{series} missing from /metrics");
        }
        for l in Limit::GATEWAY {
            let series = format!("slapenir_limited_total{{client=\"gateway\",limit=\"{l}\"}} ");
            assert!(text.contains(&series), "{series} missing from /metrics");
        }
    }
}
