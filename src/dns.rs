//! Upstream host names, resolved once and kept for their TTL.
//!
//! Without this module every request would resolve its upstream's name again. Here each name is
//! resolved the first time a request needs it (that request waits; concurrent ones wait for the
//! same answer), then kept in a cache, one entry per upstream host, and refreshed **in the
//! background** when three quarters of its TTL have passed: a request never waits on DNS for a
//! name it has resolved once.
//!
//! - **Where answers come from** (`dns:` in the config, [`crate::config::Dns`]): with `servers`
//!   set, the gateway asks them directly over UDP (`A`, then `AAAA` when there is no `A`) and
//!   keeps each answer for its TTL, clamped to `min_ttl..=max_ttl`. Without `servers`, the
//!   system resolver answers (`/etc/hosts`, `/etc/resolv.conf`...); it reports no TTL, so its
//!   answers are kept for `system_ttl`.
//! - **When a refresh fails**, the last good answer keeps serving for up to `serve_stale` past
//!   its TTL (the failure is logged by upstream name and retried every `min_ttl`); after that
//!   the entry is dropped and the next request resolves again, and fails if DNS still does.
//! - **Bounded**: one entry per upstream host name of the running configuration (a reload drops
//!   the others: [`Resolver::configure`]), at most [`MAX_ENTRIES`]; an entry no request used for
//!   [`IDLE`] is dropped instead of refreshed.
//! - **Reload**: new `dns:` settings apply to refreshes from the reload on, and every cached name
//!   is refreshed at once; requests keep using the old answer until the new one is in.
//! - **Addresses**: each request gets the answer's addresses starting at a rotating index
//!   (round robin); on a connect failure the proxy tries the next one ([`Addresses::get`]).
//! - IP-literal upstreams never reach this module.
//!
//! Metrics: `slapenir_dns_lookups_total{upstream,result}` (one per query sent, cold or
//! refresh). The status page lists the cached answers ([`snapshot`]).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use std::sync::LazyLock;
use tokio::net::UdpSocket;
use tokio::sync::Notify;

use crate::config::Dns;

/// The most names the cache holds; beyond it, names are resolved per request (logged once).
pub const MAX_ENTRIES: usize = 1024;

/// An entry no request used for this long is dropped instead of refreshed.
pub const IDLE: Duration = Duration::from_secs(3600);

/// The addresses one request may try, in order, starting at its round-robin position.
#[derive(Debug, Clone)]
pub struct Addresses {
    list: Arc<[IpAddr]>,
    start: usize,
}

impl Addresses {
    /// The address for connection attempt `attempt` (0 first), or `None` once every address has
    /// been tried.
    pub fn get(&self, attempt: usize) -> Option<IpAddr> {
        if attempt >= self.list.len() {
            return None;
        }
        self.list
            .get((self.start + attempt) % self.list.len())
            .copied()
    }

    /// How many addresses there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none (never the case for a cached answer).
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// One cached name, as the status page shows it.
#[derive(Debug, Clone)]
pub struct CachedName {
    pub upstream: String,
    pub host: String,
    pub addresses: Vec<IpAddr>,
    /// Seconds until the TTL ends (negative: serving stale while refreshing fails).
    pub expires_in_secs: f64,
    /// The TTL the answer is kept for (after clamping).
    pub ttl_secs: f64,
}

struct Entry {
    upstream: String,
    addresses: Arc<[IpAddr]>,
    ttl: Duration,
    refresh_at: Instant,
    expires_at: Instant,
    refreshing: bool,
    last_used: Instant,
    next: Arc<AtomicUsize>,
}

impl Entry {
    fn usable(&self, now: Instant, settings: &Dns) -> bool {
        now < self.expires_at + settings.serve_stale
    }
}

/// A resolved name: addresses and how long to keep them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub addresses: Vec<IpAddr>,
    pub ttl: Duration,
}

/// The cache. One per process ([`global`]); tests may make their own.
#[derive(Default)]
pub struct Resolver {
    entries: Mutex<HashMap<String, Entry>>,
    /// The settings refreshes use: the running configuration's ([`Resolver::configure`]).
    settings: ArcSwap<Dns>,
    configured: AtomicBool,
    /// One async lock per name being resolved cold, so that concurrent requests send one query.
    cold: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    refresher: AtomicBool,
    wake: Notify,
    full_logged: AtomicBool,
}

static GLOBAL: LazyLock<Arc<Resolver>> = LazyLock::new(|| Arc::new(Resolver::default()));

/// The process's resolver.
pub fn global() -> &'static Arc<Resolver> {
    &GLOBAL
}

/// The cached names of the process's resolver, sorted by upstream.
pub fn snapshot() -> Vec<CachedName> {
    GLOBAL.snapshot()
}

impl Resolver {
    /// The addresses of `host` for a request to `upstream`: from the cache when it holds a
    /// usable answer, else resolved now (and cached). An IP literal is returned as it is.
    ///
    /// The first call starts the background refresher on the current tokio runtime.
    ///
    /// # Errors
    /// A message naming the upstream when the name cannot be resolved (never a secret: it holds
    /// the host name and the resolver's error).
    pub async fn addresses(
        self: &Arc<Self>,
        upstream: &str,
        host: &str,
        settings: &Arc<Dns>,
    ) -> Result<Addresses, String> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Addresses {
                list: Arc::from([ip]),
                start: 0,
            });
        }
        if let Some(found) = self.cached(host) {
            return Ok(found);
        }
        let gate = {
            let mut cold = self.cold.lock().map_err(|_| "resolver lock poisoned")?;
            cold.entry(host.to_owned()).or_default().clone()
        };
        let _one_at_a_time = gate.lock().await;
        if let Some(found) = self.cached(host) {
            return Ok(found);
        }
        let answer = lookup(upstream, host, settings).await;
        if let Ok(mut cold) = self.cold.lock() {
            cold.remove(host);
        }
        let answer = answer?;
        let list: Arc<[IpAddr]> = Arc::from(answer.addresses);
        if !self.configured.swap(true, Ordering::AcqRel) {
            // Nobody called `configure` (a test, or a caller that forgot): the first request's
            // settings are the ones refreshes use.
            self.settings.store(settings.clone());
        }
        self.insert(upstream, host, list.clone(), answer.ttl);
        self.start_refresher();
        Ok(Addresses { list, start: 0 })
    }

    /// Applies a (re)loaded configuration: refreshes use its `dns:` settings from now on; when
    /// they changed, every cached name is refreshed at once (requests keep the old answer until
    /// the new one is in); names no upstream uses any more are dropped.
    pub fn configure(&self, config: &crate::config::Config) {
        self.configured.store(true, Ordering::Release);
        let changed = **self.settings.load() != *config.dns;
        self.settings.store(config.dns.clone());
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        entries.retain(|host, _| config.upstreams.iter().any(|u| u.host == *host));
        if changed {
            let now = Instant::now();
            for e in entries.values_mut() {
                e.refresh_at = now;
            }
            drop(entries);
            self.wake.notify_one();
        }
    }

    /// A usable cached answer, advancing the round robin.
    fn cached(&self, host: &str) -> Option<Addresses> {
        let now = Instant::now();
        let settings = self.settings.load();
        let mut entries = self.entries.lock().ok()?;
        let e = entries.get_mut(host)?;
        if !e.usable(now, &settings) {
            return None;
        }
        e.last_used = now;
        let start = e.next.fetch_add(1, Ordering::Relaxed);
        Some(Addresses {
            list: e.addresses.clone(),
            start,
        })
    }

    fn insert(&self, upstream: &str, host: &str, addresses: Arc<[IpAddr]>, ttl: Duration) {
        let now = Instant::now();
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(host) {
            if !self.full_logged.swap(true, Ordering::Relaxed) {
                log::warn!(
                    "DNS cache full ({MAX_ENTRIES} names): upstream `{upstream}` is resolved per request"
                );
            }
            return;
        }
        entries.insert(
            host.to_owned(),
            Entry {
                upstream: upstream.to_owned(),
                addresses,
                ttl,
                refresh_at: now + ttl * 3 / 4,
                expires_at: now + ttl,
                refreshing: false,
                last_used: now,
                next: Arc::new(AtomicUsize::new(1)),
            },
        );
    }

    fn start_refresher(self: &Arc<Self>) {
        if self.refresher.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move { me.refresh_loop().await });
    }

    /// Runs forever: refreshes each entry when it is due, drops idle and dead ones.
    async fn refresh_loop(self: Arc<Self>) {
        loop {
            let (due, next) = self.due(Instant::now());
            for (host, upstream) in due {
                let me = self.clone();
                tokio::spawn(async move { me.refresh(&host, &upstream).await });
            }
            let wait = next
                .map_or(Duration::from_secs(1), |at| {
                    at.saturating_duration_since(Instant::now())
                })
                .min(Duration::from_secs(1));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    /// Marks the due entries as refreshing and returns them, with the next time one is due.
    fn due(&self, now: Instant) -> (Vec<(String, String)>, Option<Instant>) {
        let settings = self.settings.load();
        let Ok(mut entries) = self.entries.lock() else {
            return (Vec::new(), None);
        };
        entries.retain(|host, e| {
            let usable = e.usable(now, &settings);
            let keep = usable && now.duration_since(e.last_used) < IDLE;
            if !keep && usable {
                log::info!(
                    "DNS: `{host}` (upstream `{}`) unused for {}s, no longer refreshed",
                    e.upstream,
                    IDLE.as_secs()
                );
            }
            keep
        });
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        for (host, e) in entries.iter_mut() {
            if e.refreshing {
                continue;
            }
            if e.refresh_at <= now {
                e.refreshing = true;
                due.push((host.clone(), e.upstream.clone()));
            } else {
                next = Some(next.map_or(e.refresh_at, |n| n.min(e.refresh_at)));
            }
        }
        (due, next)
    }

    async fn refresh(&self, host: &str, upstream: &str) {
        let settings = self.settings.load_full();
        let result = lookup(upstream, host, &settings).await;
        let now = Instant::now();
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let Some(e) = entries.get_mut(host) else {
            return;
        };
        e.refreshing = false;
        match result {
            Ok(answer) => {
                if *e.addresses != *answer.addresses {
                    log::info!(
                        "DNS: upstream `{upstream}` ({host}) now resolves to {:?}",
                        answer.addresses
                    );
                }
                e.addresses = Arc::from(answer.addresses);
                e.ttl = answer.ttl;
                e.refresh_at = now + answer.ttl * 3 / 4;
                e.expires_at = now + answer.ttl;
            }
            Err(why) => {
                let left = (e.expires_at + settings.serve_stale).saturating_duration_since(now);
                log::warn!(
                    "DNS: refreshing upstream `{upstream}` failed ({why}); its last answer is used for up to {}s more",
                    left.as_secs()
                );
                e.refresh_at = now + settings.min_ttl;
            }
        }
        drop(entries);
        self.wake.notify_one();
    }

    /// The cached names, sorted by upstream then host.
    pub fn snapshot(&self) -> Vec<CachedName> {
        let now = Instant::now();
        let Ok(entries) = self.entries.lock() else {
            return Vec::new();
        };
        let mut out: Vec<CachedName> = entries
            .iter()
            .map(|(host, e)| CachedName {
                upstream: e.upstream.clone(),
                host: host.clone(),
                addresses: e.addresses.to_vec(),
                expires_in_secs: if e.expires_at >= now {
                    e.expires_at.duration_since(now).as_secs_f64()
                } else {
                    -now.duration_since(e.expires_at).as_secs_f64()
                },
                ttl_secs: e.ttl.as_secs_f64(),
            })
            .collect();
        out.sort_by(|a, b| (&a.upstream, &a.host).cmp(&(&b.upstream, &b.host)));
        out
    }
}

/// Resolves `host` under `settings` and counts the lookup.
async fn lookup(upstream: &str, host: &str, settings: &Dns) -> Result<Answer, String> {
    let result = if settings.servers.is_empty() {
        system_lookup(host, settings).await
    } else {
        query_servers(host, settings).await
    };
    crate::metrics::dns_lookup(upstream, result.is_ok());
    result.map_err(|e| format!("cannot resolve upstream `{upstream}` ({host}): {e}"))
}

/// The system resolver (`getaddrinfo`): IPv4 addresses first (the sandbox networks are IPv4).
async fn system_lookup(host: &str, settings: &Dns) -> Result<Answer, String> {
    let found = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|e| e.to_string())?;
    let mut addresses: Vec<IpAddr> = Vec::new();
    for a in found {
        if !addresses.contains(&a.ip()) {
            addresses.push(a.ip());
        }
    }
    addresses.sort_by_key(|a| a.is_ipv6());
    if addresses.is_empty() {
        return Err("no address".into());
    }
    Ok(Answer {
        addresses,
        ttl: settings.system_ttl,
    })
}

/// Asks each configured server in turn: `A`, then `AAAA` when the name has no `A` record.
async fn query_servers(host: &str, settings: &Dns) -> Result<Answer, String> {
    let mut last = String::from("no name server");
    for server in &settings.servers {
        for qtype in [QTYPE_A, QTYPE_AAAA] {
            match query(*server, host, qtype, settings.timeout).await {
                Ok(Some((addresses, ttl))) => {
                    return Ok(Answer {
                        addresses,
                        ttl: Duration::from_secs(u64::from(ttl))
                            .clamp(settings.min_ttl, settings.max_ttl),
                    })
                }
                // No record of this type: try the next type.
                Ok(None) => last = "no address".into(),
                Err(e) => {
                    last = format!("{server}: {e}");
                    break;
                }
            }
        }
    }
    Err(last)
}

const QTYPE_A: u16 = 1;
const QTYPE_AAAA: u16 = 28;
const QTYPE_CNAME: u16 = 5;

/// One UDP query. `Ok(None)`: the name exists but has no record of this type.
async fn query(
    server: SocketAddr,
    host: &str,
    qtype: u16,
    timeout: Duration,
) -> Result<Option<(Vec<IpAddr>, u32)>, String> {
    let mut id = [0u8; 2];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
        .map_err(|_| "no randomness for the query id")?;
    let id = u16::from_be_bytes(id);
    let packet = encode_query(id, host, qtype)?;
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
    sock.connect(server).await.map_err(|e| e.to_string())?;
    sock.send(&packet).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .map_err(|_| format!("no answer within {}ms", timeout.as_millis()))?
            .map_err(|e| e.to_string())?;
        // A reply to another query (or a forged one with the wrong id) is ignored.
        match parse_response(id, qtype, buf.get(..n).unwrap_or_default()) {
            Err(ParseError::OtherQuery) => continue,
            Err(ParseError::Bad(m)) => return Err(m),
            Ok(r) => return Ok(r),
        }
    }
}

/// A DNS query for `host` (RFC 1035 §4.1), recursion desired.
///
/// # Errors
/// When `host` is not a valid name (an empty label or one over 63 bytes).
pub fn encode_query(id: u16, host: &str, qtype: u16) -> Result<Vec<u8>, String> {
    let mut p = Vec::with_capacity(host.len() + 18);
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in host.trim_end_matches('.').split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| (1..=63).contains(l))
            .ok_or_else(|| format!("`{host}` is not a valid host name"))?;
        p.push(len);
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());
    Ok(p)
}

#[derive(Debug, PartialEq, Eq)]
enum ParseError {
    OtherQuery,
    Bad(String),
}

/// Reads the records of type `qtype` from a response, with the smallest TTL among them and
/// the `CNAME`s that led to them. Records are read from the answer section whatever their owner
/// name: the server asked is trusted to answer the question it was asked.
fn parse_response(
    id: u16,
    qtype: u16,
    msg: &[u8],
) -> Result<Option<(Vec<IpAddr>, u32)>, ParseError> {
    let bad = |m: &str| ParseError::Bad(m.to_string());
    let u16_at = |i: usize| -> Result<u16, ParseError> {
        match (msg.get(i), msg.get(i + 1)) {
            (Some(a), Some(b)) => Ok(u16::from_be_bytes([*a, *b])),
            _ => Err(bad("short answer")),
        }
    };
    if u16_at(0)? != id || msg.get(2).is_none_or(|f| f & 0x80 == 0) {
        return Err(ParseError::OtherQuery);
    }
    let flags = u16_at(2)?;
    if flags & 0x0200 != 0 {
        return Err(bad("answer truncated"));
    }
    match flags & 0x000f {
        0 => {}
        3 => return Err(bad("no such name")),
        rcode => return Err(ParseError::Bad(format!("server error (rcode {rcode})"))),
    }
    let questions = u16_at(4)?;
    let answers = u16_at(6)?;
    let mut i = 12;
    for _ in 0..questions {
        i = skip_name(msg, i).ok_or_else(|| bad("bad question"))? + 4;
    }
    let mut out = Vec::new();
    let mut ttl = u32::MAX;
    for _ in 0..answers {
        i = skip_name(msg, i).ok_or_else(|| bad("bad record"))?;
        let rtype = u16_at(i)?;
        let rttl = u32::from(u16_at(i + 4)?) << 16 | u32::from(u16_at(i + 6)?);
        let len = usize::from(u16_at(i + 8)?);
        let data = msg
            .get(i + 10..i + 10 + len)
            .ok_or_else(|| bad("short record"))?;
        match (rtype, data.len()) {
            (t, 4) if t == qtype && t == QTYPE_A => {
                out.push(IpAddr::from([data[0], data[1], data[2], data[3]]));
                ttl = ttl.min(rttl);
            }
            (t, 16) if t == qtype && t == QTYPE_AAAA => {
                let mut b = [0u8; 16];
                b.copy_from_slice(data);
                out.push(IpAddr::from(b));
                ttl = ttl.min(rttl);
            }
            (QTYPE_CNAME, _) => ttl = ttl.min(rttl),
            _ => {}
        }
        i += 10 + len;
    }
    out.dedup();
    Ok((!out.is_empty()).then_some((out, ttl)))
}

/// The index just past a (possibly compressed) name starting at `i`.
fn skip_name(msg: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let len = *msg.get(i)?;
        match len {
            0 => return Some(i + 1),
            l if l & 0xc0 == 0xc0 => return msg.get(i + 1).map(|_| i + 2),
            l if l & 0xc0 == 0 => i += 1 + usize::from(l),
            _ => return None,
        }
    }
}

#[cfg(test)]
#[path = "dns_tests.rs"]
mod tests;
