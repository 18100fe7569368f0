//! Per-client limits at run time: what each client key holds now (connections, tunnels,
//! streams), its request token bucket and its body-rate pacer, kept in a process-wide registry
//! so that they survive a reload. The numbers are read from the running policy each time they
//! are checked, so a reload changes them for the next connection or request at once, and
//! nothing already admitted is dropped.
//!
//! A hold ([`Hold`]) gives its slot back when dropped, so every path that ends a connection,
//! tunnel or request releases what it took. The over-limit path is cheap: a map lookup, an
//! atomic and, at most once a second per client, an audit line (with the count of the hits it
//! stands for); a refused plain connection gets a pre-built answer.
//!
//! Memory is bounded: a client key with nothing held and an idle bucket is forgotten once the
//! registry holds [`MAX_TRACKED`] keys, so a flood of source addresses cannot grow it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use pingora::server::ShutdownWatch;
use serde_json::{json, Value};
use std::sync::LazyLock;

use super::Limit;
use crate::config::limits::{ClientLimits, Limits};
use crate::pki::ClientIdentity;
use crate::policy::Policy;

/// Client keys kept before idle ones are forgotten.
pub const MAX_TRACKED: usize = 4096;
/// How long a key must be idle before it may be forgotten (its bucket is full again by then for
/// any rate above 1/60 per second; a slower rate's bucket may restart full, which only errs
/// towards the client by one burst).
const FORGET_AFTER: Duration = Duration::from_secs(60);
/// At most one audit line per client per this long; the next one counts the hits in between.
const AUDIT_EVERY: Duration = Duration::from_secs(1);
/// The tarpit: a refusal is answered no sooner than [`OVER_LIMIT_DELAY`] after it was made,
/// and one client's refusals are answered at most this many a second, one after the other in
/// the order they were made. A client that retries each refusal at once (reconnecting, with a
/// TLS handshake, when it was a connection) therefore costs the gateway at most this many
/// handshakes or 429s a second, spread evenly rather than in bursts, however many connections
/// it opens.
pub const TARPIT_RELEASES_PER_SECOND: u32 = 8;
/// No refusal is held longer than this (a client flooding with thousands of connections must
/// not keep them all open in the tarpit for minutes).
pub const TARPIT_MAX: Duration = Duration::from_secs(10);

/// The counters a client holds at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Connections,
    Tunnels,
    Streams,
}

impl Counter {
    /// The limit it counts under.
    pub fn limit(self) -> Limit {
        match self {
            Counter::Connections => Limit::Connections,
            Counter::Tunnels => Limit::Tunnels,
            Counter::Streams => Limit::Streams,
        }
    }

    fn max(self, l: &ClientLimits) -> Option<u32> {
        match self {
            Counter::Connections => l.connections,
            Counter::Tunnels => l.tunnels,
            Counter::Streams => l.streams,
        }
    }
}

/// A token bucket (`tokens` may go negative: a debt, for pacing).
#[derive(Debug, Default)]
struct Bucket {
    tokens: f64,
    /// When `tokens` was last brought up to date; `None`: never used (full).
    at: Option<Instant>,
}

impl Bucket {
    fn refill(&mut self, rate: f64, cap: f64, now: Instant) {
        self.tokens = match self.at {
            None => cap,
            Some(at) => {
                (self.tokens + now.saturating_duration_since(at).as_secs_f64() * rate).min(cap)
            }
        };
        self.at = Some(now);
    }

    /// Takes one token, or says how long until one is back.
    fn take(&mut self, rate: f64, burst: f64, now: Instant) -> Result<(), Duration> {
        self.refill(rate, burst, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }

    /// Spends `n` tokens, going into debt if need be: how long the spender must wait for the
    /// debt to be paid back (the bucket holds one second's worth).
    fn spend(&mut self, rate: f64, n: f64, now: Instant) -> Duration {
        self.refill(rate, rate, now);
        self.tokens -= n;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / rate)
        }
    }
}

#[derive(Debug, Default)]
struct Timed {
    requests: Bucket,
    body: Bucket,
    /// When the last audit line for this client was written, and the hits since.
    audited: Option<Instant>,
    unaudited: u64,
    /// Last time anything was asked of this client.
    touched: Option<Instant>,
    /// When the client's last refusal is answered (the tarpit's queue).
    released: Option<Instant>,
}

impl Timed {
    /// When a refusal made at `now` is answered: [`OVER_LIMIT_DELAY`] later, or a
    /// [`TARPIT_RELEASES_PER_SECOND`] step after the previous one, whichever is later, and
    /// never more than [`TARPIT_MAX`] from now.
    fn tarpit(&mut self, now: Instant) -> Instant {
        let step = Duration::from_secs(1) / TARPIT_RELEASES_PER_SECOND;
        let earliest = now + OVER_LIMIT_DELAY;
        let queued = self
            .released
            .map_or(earliest, |at| (at + step).max(earliest));
        let at = queued.min(now + TARPIT_MAX);
        self.released = Some(at);
        at
    }
}

/// What one client key holds now.
#[derive(Debug, Default)]
pub struct ClientState {
    connections: AtomicU32,
    tunnels: AtomicU32,
    streams: AtomicU32,
    timed: Mutex<Timed>,
}

impl ClientState {
    fn counter(&self, c: Counter) -> &AtomicU32 {
        match c {
            Counter::Connections => &self.connections,
            Counter::Tunnels => &self.tunnels,
            Counter::Streams => &self.streams,
        }
    }

    /// How many of `c` this client holds now.
    pub fn held(&self, c: Counter) -> u32 {
        self.counter(c).load(Ordering::Relaxed)
    }

    fn with_timed<T>(&self, f: impl FnOnce(&mut Timed, Instant) -> T) -> T {
        let now = Instant::now();
        let mut t = self.timed.lock().unwrap_or_else(|e| e.into_inner());
        t.touched = Some(now);
        f(&mut t, now)
    }

    fn idle(&self, now: Instant) -> bool {
        self.connections.load(Ordering::Relaxed) == 0
            && self.tunnels.load(Ordering::Relaxed) == 0
            && self.streams.load(Ordering::Relaxed) == 0
            && self.timed.lock().is_ok_and(|t| {
                t.touched
                    .is_none_or(|at| now.saturating_duration_since(at) >= FORGET_AFTER)
            })
    }
}

/// One slot of a counter, given back when dropped.
#[derive(Debug)]
pub struct Hold {
    state: Arc<ClientState>,
    counter: Counter,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.state
            .counter(self.counter)
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Takes one slot of `counter` unless `max` are already held.
fn hold(state: &Arc<ClientState>, counter: Counter, max: Option<u32>) -> Option<Hold> {
    let c = state.counter(counter);
    let taken = match max {
        None => {
            c.fetch_add(1, Ordering::Relaxed);
            true
        }
        Some(max) => c
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok(),
    };
    taken.then(|| Hold {
        state: state.clone(),
        counter,
    })
}

static CLIENTS: LazyLock<Mutex<HashMap<Box<str>, Arc<ClientState>>>> =
    LazyLock::new(Default::default);

/// The live state of client `key` (created on first use).
pub fn state(key: &str) -> Arc<ClientState> {
    let mut m = CLIENTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = m.get(key) {
        return s.clone();
    }
    if m.len() >= MAX_TRACKED {
        let now = Instant::now();
        m.retain(|_, s| Arc::strong_count(s) > 1 || !s.idle(now));
    }
    let s = Arc::new(ClientState::default());
    m.insert(key.into(), s.clone());
    s
}

fn peek(key: &str) -> Option<Arc<ClientState>> {
    CLIENTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(key)
        .cloned()
}

/// A limit that refused a connection or a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Which limit.
    pub limit: Limit,
    /// Whole seconds after which a retry may succeed (at least 1).
    pub retry_after: u64,
    /// When the refusal is answered: the tarpit (see [`TARPIT_RELEASES_PER_SECOND`]).
    pub answer_at: Instant,
}

impl Limited {
    fn new(limit: Limit, wait: Duration, answer_at: Instant) -> Limited {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Limited {
            limit,
            retry_after: secs.max(1),
            answer_at,
        }
    }

    /// The answer's body: what the client is told (no secret, no address).
    pub fn body(&self) -> &'static str {
        match self.limit {
            Limit::Connections => {
                "slapenir: too many connections from this client (limit `connections`)\n"
            }
            Limit::Tunnels => {
                "slapenir: too many CONNECT tunnels open from this client (limit `tunnels`)\n"
            }
            Limit::RequestsPerSecond => {
                "slapenir: too many requests from this client (limit `requests_per_second`)\n"
            }
            Limit::Streams => {
                "slapenir: too many responses streaming to this client at once (limit `streams`)\n"
            }
            _ => "slapenir: a limit of this client was reached\n",
        }
    }
}

/// Counts a hit that refuses something: the refusal, answered when the client's tarpit says.
fn refused(
    state: &ClientState,
    key: &str,
    policy: &Policy,
    limit: Limit,
    wait: Duration,
) -> Limited {
    hit(state, key, policy, limit);
    let answer_at = state.with_timed(|t, now| t.tarpit(now));
    Limited::new(limit, wait, answer_at)
}

/// Counts a hit: the metric, and an audit line at most once a second per client.
fn hit(state: &ClientState, key: &str, policy: &Policy, limit: Limit) {
    let label = super::client_label(key, &policy.config.limits, &policy.clients);
    crate::metrics::limited(label, limit);
    if let Some(hits) = state.with_timed(audit_due) {
        crate::audit::log_limited(key, limit, hits);
    }
}

/// Counts one hit towards the client's next audit line: the hits to write now, if one is due.
fn audit_due(t: &mut Timed, now: Instant) -> Option<u64> {
    t.unaudited += 1;
    let due = t
        .audited
        .is_none_or(|at| now.saturating_duration_since(at) >= AUDIT_EVERY);
    if !due {
        return None;
    }
    t.audited = Some(now);
    Some(std::mem::take(&mut t.unaudited))
}

/// A connection's slot under its client's `connections` limit.
pub struct ConnectionUse {
    state: Arc<ClientState>,
    key: Box<str>,
    _hold: Hold,
}

/// Admits a new connection from `identity` / `peer`: its slot, or the limit it hit (counted
/// and audited).
///
/// # Errors
/// [`Limited`] (`connections`) when the client already holds its limit.
pub fn admit_connection(
    policy: &Policy,
    identity: Option<&ClientIdentity>,
    peer: Option<IpAddr>,
) -> Result<ConnectionUse, Limited> {
    let limits = &policy.config.limits;
    let key = super::client_key(identity, peer, limits);
    let state = state(&key);
    let max = Counter::Connections.max(limits.for_client(&key));
    match hold(&state, Counter::Connections, max) {
        Some(h) => Ok(ConnectionUse {
            key: key.into_owned().into_boxed_str(),
            state,
            _hold: h,
        }),
        None => Err(refused(
            &state,
            &key,
            policy,
            Limit::Connections,
            Duration::ZERO,
        )),
    }
}

impl ConnectionUse {
    /// Takes a tunnel slot for this connection's client (read from `policy`, the running one).
    ///
    /// # Errors
    /// [`Limited`] (`tunnels`) when the client already holds its limit.
    pub fn open_tunnel(&self, policy: &Policy) -> Result<Hold, Limited> {
        let max = Counter::Tunnels.max(policy.config.limits.for_client(&self.key));
        hold(&self.state, Counter::Tunnels, max).ok_or_else(|| {
            refused(
                &self.state,
                &self.key,
                policy,
                Limit::Tunnels,
                Duration::ZERO,
            )
        })
    }
}

/// The answer to a plain (HTTP/1) connection refused by a limit, written raw and the
/// connection closed: built once, so a flood of refusals costs no formatting.
pub fn refusal_bytes(limited: &Limited) -> &'static [u8] {
    match limited.limit {
        Limit::Tunnels => TUNNELS_ANSWER,
        _ => CONNECTIONS_ANSWER,
    }
}

const CONNECTIONS_ANSWER: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 70\r\nRetry-After: 1\r\nX-Slapenir-Refusal: client_limit\r\nConnection: close\r\n\r\nslapenir: too many connections from this client (limit `connections`)\n";
const TUNNELS_ANSWER: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 75\r\nRetry-After: 1\r\nX-Slapenir-Refusal: client_limit\r\nConnection: close\r\n\r\nslapenir: too many CONNECT tunnels open from this client (limit `tunnels`)\n";

/// Marks an HTTP/2 connection over its client's `connections` limit: raw bytes cannot answer
/// it, so it is handed to the proxy carrying this, and each of its requests is answered `429`
/// until [`OVER_LIMIT_H2_GRACE`] has passed and the connection is closed.
#[derive(Debug, Clone, Copy)]
pub struct OverLimit;

/// How long an HTTP/2 connection over the limit is kept to answer its requests `429`.
pub const OVER_LIMIT_H2_GRACE: Duration = Duration::from_secs(2);

/// The least time a refusal waits for its answer in the tarpit: its `Retry-After`.
pub const OVER_LIMIT_DELAY: Duration = Duration::from_secs(1);

/// The server's shutdown signal, for the tarpit in the proxy's hooks (which get no
/// `ShutdownWatch`): the listener notes the watch it is given with each connection.
#[derive(Clone, Default)]
pub struct Shutdown(Arc<OnceLock<ShutdownWatch>>);

impl Shutdown {
    /// Keeps `watch` (the first one: every listener is given the same).
    pub fn note(&self, watch: &ShutdownWatch) {
        if self.0.get().is_none() {
            let _ = self.0.set(watch.clone());
        }
    }

    /// Waits for a refusal's turn in the tarpit (`answer_at`), or until the server begins to
    /// shut down: the refusal is answered then, not cut off when the process exits.
    pub async fn tarpit(&self, answer_at: Instant) {
        tarpit(answer_at, self.0.get()).await;
    }
}

/// [`Shutdown::tarpit`] with the watch at hand.
pub async fn tarpit(answer_at: Instant, shutdown: Option<&ShutdownWatch>) {
    let sleep = tokio::time::sleep_until(answer_at.into());
    let Some(watch) = shutdown else {
        return sleep.await;
    };
    let mut watch = watch.clone();
    tokio::select! {
        () = sleep => {}
        // Also when the server is gone (its sender dropped): nothing to wait for then.
        _ = watch.wait_for(|down| *down) => {}
    }
}

/// What one request holds and how it is paced, kept in the proxy's per-request context. Its
/// stream slot is released by [`RequestUse::release`] before the response's last bytes are
/// written (so a client that sends its next request as soon as it has read a response finds
/// the slot free), in `logging`, or, on any other path, when the context is dropped.
#[derive(Default)]
pub struct RequestUse {
    client: Option<(Arc<ClientState>, Box<str>)>,
    stream: Option<Hold>,
    paced: bool,
}

impl RequestUse {
    /// Admits a request: the `connections` marker of an HTTP/2 connection over the limit, then
    /// the client's request token bucket, then a `streams` slot (held until
    /// [`RequestUse::release`]). Each hit is counted and audited.
    ///
    /// # Errors
    /// The [`Limited`] that refused the request.
    pub fn admit(
        &mut self,
        policy: &Policy,
        identity: Option<&ClientIdentity>,
        peer: Option<IpAddr>,
        over_limit: bool,
    ) -> Result<(), Limited> {
        let limits = &policy.config.limits;
        let key = super::client_key(identity, peer, limits);
        let state = state(&key);
        if over_limit {
            return Err(refused(
                &state,
                &key,
                policy,
                Limit::Connections,
                Duration::ZERO,
            ));
        }
        let l = limits.for_client(&key);
        if let Some(rate) = l.requests_per_second {
            let burst = f64::from(l.burst.max(1));
            if let Err(wait) = state.with_timed(|t, now| t.requests.take(rate, burst, now)) {
                return Err(refused(
                    &state,
                    &key,
                    policy,
                    Limit::RequestsPerSecond,
                    wait,
                ));
            }
        }
        match hold(&state, Counter::Streams, l.streams) {
            Some(h) => self.stream = Some(h),
            None => {
                return Err(refused(
                    &state,
                    &key,
                    policy,
                    Limit::Streams,
                    Duration::ZERO,
                ));
            }
        }
        self.client = Some((state, key.into_owned().into_boxed_str()));
        Ok(())
    }

    /// How long to hold back `bytes` of request body under the client's
    /// `body_bytes_per_second` (shared by all of its requests); the first wait of a request is
    /// counted as a hit.
    pub fn body_wait(&mut self, policy: &Policy, bytes: usize) -> Duration {
        let Some((state, key)) = self.client.as_ref() else {
            return Duration::ZERO;
        };
        let Some(rate) = policy.config.limits.for_client(key).body_bytes_per_second else {
            return Duration::ZERO;
        };
        let wait = state.with_timed(|t, now| t.body.spend(rate as f64, bytes as f64, now));
        if !wait.is_zero() && !self.paced {
            self.paced = true;
            hit(state, key, policy, Limit::BodyBytesPerSecond);
        }
        wait
    }

    /// Gives back the request's `streams` slot.
    pub fn release(&mut self) {
        self.stream = None;
    }
}

/// `/status`'s `limits`: the configured numbers, each configured client's current use, and how
/// many other clients hold anything (with their totals), so the section stays bounded.
pub fn status(limits: &Limits) -> Value {
    let numbers = |l: &ClientLimits| {
        json!({
            "connections": l.connections,
            "tunnels": l.tunnels,
            "requests_per_second": l.requests_per_second,
            "burst": l.burst,
            "streams": l.streams,
            "body_bytes_per_second": l.body_bytes_per_second,
        })
    };
    let usage = |s: Option<&ClientState>| {
        json!({
            "connections": s.map_or(0, |s| s.held(Counter::Connections)),
            "tunnels": s.map_or(0, |s| s.held(Counter::Tunnels)),
            "streams": s.map_or(0, |s| s.held(Counter::Streams)),
        })
    };
    let clients: serde_json::Map<String, Value> = limits
        .clients
        .iter()
        .map(|(id, l)| {
            let s = peek(id);
            (
                id.clone(),
                json!({ "limits": numbers(l), "use": usage(s.as_deref()) }),
            )
        })
        .collect();
    let (mut n, mut conns, mut tunnels, mut streams) = (0u64, 0u64, 0u64, 0u64);
    if let Ok(m) = CLIENTS.lock() {
        for (k, s) in m.iter() {
            if limits.clients.contains_key(&**k) {
                continue;
            }
            let held = [Counter::Connections, Counter::Tunnels, Counter::Streams]
                .map(|c| u64::from(s.held(c)));
            if held.iter().any(|h| *h > 0) {
                n += 1;
                conns += held[0];
                tunnels += held[1];
                streams += held[2];
            }
        }
    }
    json!({
        "per_client": numbers(&limits.per_client),
        "clients": clients,
        "others": {
            "clients": n,
            "use": { "connections": conns, "tunnels": tunnels, "streams": streams },
        },
    })
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
