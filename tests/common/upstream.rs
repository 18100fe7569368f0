//! Real upstream HTTP servers for end-to-end tests, recording every request they receive.
//!
//! [`Upstream::start`] binds `127.0.0.1:0` before it returns (so the server is ready: the kernel
//! queues connections from then on), then serves on a small runtime of its own, which makes it
//! usable from plain `#[test]` functions and from `#[tokio::test]` alike. Dropping the
//! [`Upstream`] stops it.
//!
//! # Kinds
//!
//! | [`UpstreamKind`] | protocol                                     | [`Upstream::url`]          |
//! |------------------|----------------------------------------------|----------------------------|
//! | `Plain`          | HTTP/1.1                                     | `http://127.0.0.1:PORT`    |
//! | `Tls`            | HTTP/1.1 over TLS, ALPN `http/1.1`           | `https://localhost:PORT`   |
//! | `H2Tls`          | HTTP/2 over TLS, ALPN `h2` only              | `https://localhost:PORT`   |
//! | `H2c`            | cleartext HTTP/2 with prior knowledge        | `http://127.0.0.1:PORT`    |
//!
//! TLS kinds serve a certificate from a [`TestPki`] (their own, or one shared through
//! [`Upstream::start_with_pki`]); [`Upstream::ca_path`] is its root. Connections are kept alive
//! and served concurrently, with `TCP_NODELAY` so each flush leaves at once.
//!
//! # Behaviours by path
//!
//! Query values are percent-decoded (`%XX`; `+` stays `+`). [`percent_encode`] builds them.
//! Every request body is read to its end and recorded before the response starts, except for
//! `/echo`, which streams it back as it arrives.
//!
//! - `/echo`: `200`, chunked; the body is the request line (`METHOD URI VERSION\n`), each
//!   header as `name: value\n` (names lowercase, in the order of [`RecordedRequest::headers`]),
//!   a blank line, then the request body, forwarded chunk by chunk as it arrives.
//! - `/echo-header?name=X&value=Y`: `200`, header `X: Y`, body `ok`.
//! - `/redirect?to=URL`: `302` with `Location: URL` and `Set-Cookie: session=URL`.
//! - `/body?text=T[&len=N]`: `200` with `Content-Length`; the body is `T`, or `T` repeated and cut
//!   to exactly `N` bytes when `len` is given.
//! - `/chunked?text=T&parts=K`: `200`, chunked; `T` in `K` parts (split at `i * len / K`, so
//!   splits fall at different offsets of `T`), each flushed on its own.
//! - `/gzip?text=T`, `/deflate?text=T[&raw=1]`, `/br?text=T`, `/zstd?text=T`: `200`; `T`
//!   compressed, with the matching `Content-Encoding`, whatever the request's `Accept-Encoding`.
//!   `deflate` is zlib-wrapped, or raw deflate with `raw=1`.
//! - `/sse?n=N&interval_ms=M&text=T[&gzip=1]`: `200`, `text/event-stream`, chunked; `N` events
//!   `data: T <i>\n\n` (`i` from 0), the first at once and then one every `M` ms, each flushed.
//!   With `gzip=1` the stream is gzip-encoded with a sync flush after each event. The instant
//!   each event is handed to the connection is recorded: [`Upstream::sse_streams`].
//! - `/big?bytes=N[&needle=T&every=K]`: `200`, chunked; `N` bytes generated in 64 KiB chunks
//!   (never stored): a period of `K` bytes is filler followed by `T`, so the body holds
//!   `N / K` needles (`K >= len(T)`). Filler is lines of 63 `.` and a `\n`. [`big_body`] yields
//!   the same bytes for a test to compare with.
//! - `/sink`: reads the request body, `200` with text `bytes=N\ncrc32=HEX\n` then
//!   `needle<i>=C\n` for each needle set with [`Upstream::count_needles`] (by index, so a
//!   secret used as a needle is never echoed).
//! - `/status/NNN`: responds with status `NNN` (200..=599) and an empty body.
//! - anything else: `404`.
//!
//! # Recording
//!
//! Each request is recorded once its body has ended, normally or not ([`RecordedBody::complete`]).
//! Bodies up to [`KEEP_BODY_LIMIT`] are kept; every body, whatever its size, gets its length,
//! CRC-32 and a count of each needle (occurrences at every offset, overlapping ones included,
//! found across chunk boundaries), so gigabyte bodies never sit in memory.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use aho_corasick::{AhoCorasick, MatchKind};
use bytes::Bytes;
use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio_rustls::TlsAcceptor;

use super::pki::{TestPki, ALPN_H2, ALPN_HTTP11};

/// Request bodies up to this size are kept whole in [`RecordedBody::bytes`].
pub const KEEP_BODY_LIMIT: usize = 1 << 20;

/// Chunk size of `/big` bodies.
pub const BIG_CHUNK: usize = 64 * 1024;

/// One line of `/big` filler.
const FILLER_LINE: &[u8; 64] = b"...............................................................\n";

/// Which protocol an [`Upstream`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamKind {
    /// HTTP/1.1 over TCP.
    Plain,
    /// HTTP/1.1 over TLS (ALPN `http/1.1`).
    Tls,
    /// HTTP/2 over TLS (ALPN `h2` only).
    H2Tls,
    /// HTTP/2 over TCP, prior knowledge.
    H2c,
}

impl UpstreamKind {
    /// Whether the kind speaks TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, UpstreamKind::Tls | UpstreamKind::H2Tls)
    }

    /// Whether the kind speaks HTTP/2.
    pub fn is_h2(self) -> bool {
        matches!(self, UpstreamKind::H2Tls | UpstreamKind::H2c)
    }
}

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Arrival order across the upstream's life, from 0.
    pub seq: u64,
    /// Which accepted connection carried it (from 0): equal ids mean a reused connection.
    pub connection: u64,
    /// The method.
    pub method: Method,
    /// The target as received (absolute-form stays absolute; HTTP/2 has scheme and authority).
    pub uri: Uri,
    /// Path and query, `/` if the target had none.
    pub path: String,
    /// The protocol version.
    pub version: Version,
    /// Headers as (lowercase name, value) bytes, in the order hyper's `HeaderMap` yields them:
    /// names in first-seen order, repeated values of one name together, in received order.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// The body, or what was kept of it.
    pub body: RecordedBody,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.as_slice())
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of header `name` as text (lossy).
    pub fn header_str(&self, name: &str) -> Option<String> {
        self.header(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// What was recorded of a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedBody {
    /// Bytes received.
    pub len: u64,
    /// The whole body if it was at most [`KEEP_BODY_LIMIT`] bytes, else `None`.
    pub bytes: Option<Vec<u8>>,
    /// Occurrences of each needle (in [`Upstream::count_needles`] order) at every offset.
    pub needle_counts: Vec<u64>,
    /// CRC-32 (the gzip polynomial) of the whole body; compare with [`crc32`].
    pub crc32: u32,
    /// The body ended normally (`false`: the connection or stream broke first).
    pub complete: bool,
}

impl RecordedBody {
    /// The kept body as text (lossy); `None` if it was too large to keep.
    pub fn text(&self) -> Option<String> {
        self.bytes
            .as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }
}

/// Send instants of one `/sse` response.
#[derive(Debug, Clone)]
pub struct SseLog {
    /// The `text` parameter of the request.
    pub text: String,
    /// When each event was handed to the connection, in order.
    pub sent: Vec<Instant>,
}

/// A running upstream server; stops when dropped.
pub struct Upstream {
    kind: UpstreamKind,
    addr: SocketAddr,
    pki: Option<Arc<TestPki>>,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
    /// Holds the PKI files of an upstream that generated its own.
    _pki_dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("kind", &self.kind)
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Not a blocking shutdown: the upstream may be dropped inside an async test.
            runtime.shutdown_background();
        }
    }
}

impl Upstream {
    /// Starts an upstream of `kind` on `127.0.0.1:0`. A TLS kind gets a fresh [`TestPki`] in a
    /// temporary directory that lives as long as the upstream.
    ///
    /// # Panics
    ///
    /// If the socket cannot be bound or the runtime cannot start.
    pub fn start(kind: UpstreamKind) -> Upstream {
        if kind.is_tls() {
            let dir = tempfile::tempdir().expect("PKI temp dir");
            let pki = Arc::new(TestPki::new(dir.path()));
            let mut upstream = Upstream::launch(kind, Some(pki));
            upstream._pki_dir = Some(dir);
            upstream
        } else {
            Upstream::launch(kind, None)
        }
    }

    /// Starts an upstream of `kind` whose TLS certificate comes from `pki`, so a gateway and its
    /// upstreams can share one root. For plain kinds the PKI is only kept for
    /// [`Upstream::ca_path`].
    pub fn start_with_pki(kind: UpstreamKind, pki: Arc<TestPki>) -> Upstream {
        Upstream::launch(kind, Some(pki))
    }

    fn launch(kind: UpstreamKind, pki: Option<Arc<TestPki>>) -> Upstream {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local address");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-upstream")
            .enable_all()
            .build()
            .expect("upstream runtime");
        let shared = Arc::new(Shared::default());
        let acceptor = match (kind, &pki) {
            (UpstreamKind::Tls, Some(pki)) => Some(pki.acceptor(&[ALPN_HTTP11])),
            (UpstreamKind::H2Tls, Some(pki)) => Some(pki.acceptor(&[ALPN_H2])),
            _ => None,
        };
        let server = Server {
            kind,
            acceptor,
            shared: shared.clone(),
        };
        {
            let _guard = runtime.enter();
            let listener = TcpListener::from_std(listener).expect("register listener");
            runtime.spawn(server.accept_loop(listener));
        }
        Upstream {
            kind,
            addr,
            pki,
            shared,
            runtime: Some(runtime),
            _pki_dir: None,
        }
    }

    /// The kind this upstream speaks.
    pub fn kind(&self) -> UpstreamKind {
        self.kind
    }

    /// The bound address (`127.0.0.1:PORT`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL: `http://127.0.0.1:PORT` or, for TLS kinds, `https://localhost:PORT` (the
    /// certificate is also valid for `127.0.0.1`). The server listens on IPv4 only: a client
    /// that resolves `localhost` to `::1` alone will not reach it.
    pub fn url(&self) -> String {
        if self.kind.is_tls() {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// The root certificate the server certificate chains to.
    ///
    /// # Panics
    ///
    /// For a plain upstream started without a PKI.
    pub fn ca_path(&self) -> &Path {
        self.pki().ca_path()
    }

    /// The PKI behind the server certificate.
    ///
    /// # Panics
    ///
    /// For a plain upstream started without a PKI.
    pub fn pki(&self) -> &TestPki {
        self.pki
            .as_deref()
            .expect("a plain upstream has no PKI; use a TLS kind or start_with_pki")
    }

    /// Sets the needles whose occurrences are counted in request bodies that start after this
    /// call (see [`RecordedBody::needle_counts`] and `/sink`).
    pub fn count_needles<I, N>(&self, needles: I)
    where
        I: IntoIterator<Item = N>,
        N: AsRef<[u8]>,
    {
        let needles = Needles::new(needles.into_iter().map(|n| n.as_ref().to_vec()).collect());
        *lock(&self.shared.needles) = Arc::new(needles);
    }

    /// A snapshot of every request recorded so far, in the order their bodies ended.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// How many connections have been accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Send instants of every `/sse` response so far, in the order the responses started.
    pub fn sse_streams(&self) -> Vec<SseLog> {
        lock(&self.shared.sse).clone()
    }

    /// Waits until at least `n` requests are recorded and returns the snapshot.
    ///
    /// # Panics
    ///
    /// If `timeout` passes first (the message says how many arrived).
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<RecordedRequest> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            // Register before checking, so a request recorded in between still wakes us.
            notified.as_mut().enable();
            let requests = self.requests();
            if requests.len() >= n {
                return requests;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "upstream recorded {} of {n} requests within {timeout:?}",
                    self.requests().len()
                );
            }
        }
    }

    /// [`Upstream::wait_for_requests`] for synchronous tests (blocks the calling thread).
    ///
    /// # Panics
    ///
    /// If `timeout` passes first.
    pub fn wait_for_requests_blocking(&self, n: usize, timeout: Duration) -> Vec<RecordedRequest> {
        let guard = lock(&self.shared.requests);
        let (guard, result) = self
            .shared
            .recorded
            .wait_timeout_while(guard, timeout, |r| r.len() < n)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        assert!(
            !result.timed_out(),
            "upstream recorded {} of {n} requests within {timeout:?}",
            guard.len()
        );
        guard.clone()
    }
}

/// CRC-32 of `bytes`, as [`RecordedBody::crc32`] computes it.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(bytes);
    crc.sum()
}

/// Percent-encodes `text` for a query value: everything but unreserved characters.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A query parameter `name` carrying `text` reversed (`name.rev=...`), which the upstream turns
/// back: how a test has an upstream answer with a real value that the agent may not send.
pub fn reversed(name: &str, text: &str) -> String {
    let rev: String = text.chars().rev().collect();
    format!("{name}.rev={}", percent_encode(&rev))
}

/// The chunks of a `/big?bytes=N&needle=T&every=K` body (`every == 0` or an empty needle: filler
/// only).
///
/// # Panics
///
/// If `every` is non-zero and shorter than the needle.
pub fn big_body(bytes: u64, needle: &[u8], every: u64) -> impl Iterator<Item = Bytes> {
    let mut body = BigBody::new(bytes, needle.to_vec(), every).expect("every >= needle length");
    std::iter::from_fn(move || body.next_chunk())
}

#[derive(Default)]
struct Shared {
    needles: Mutex<Arc<Needles>>,
    requests: Mutex<Vec<RecordedRequest>>,
    recorded: Condvar,
    notify: Notify,
    sse: Mutex<Vec<SseLog>>,
    connections: AtomicU64,
    seq: AtomicU64,
}

impl Shared {
    fn record(&self, request: RecordedRequest) {
        lock(&self.requests).push(request);
        self.recorded.notify_all();
        self.notify.notify_waiters();
    }
}

/// Locks a mutex, ignoring poisoning (a panicking test thread must not hide the records).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Default)]
struct Needles {
    patterns: Vec<Vec<u8>>,
    /// Automaton over the non-empty needles (an empty one would match at every offset).
    matcher: Option<AhoCorasick>,
    /// Automaton pattern id -> index in `patterns`.
    index: Vec<usize>,
    /// Bytes to carry across a chunk boundary: the longest needle minus one.
    carry: usize,
}

impl Needles {
    fn new(patterns: Vec<Vec<u8>>) -> Needles {
        let index: Vec<usize> = (0..patterns.len())
            .filter(|&i| !patterns[i].is_empty())
            .collect();
        let matcher = (!index.is_empty()).then(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::Standard)
                .build(index.iter().map(|&i| &patterns[i]))
                .expect("needle automaton")
        });
        let carry = patterns
            .iter()
            .map(Vec::len)
            .max()
            .unwrap_or(0)
            .saturating_sub(1);
        Needles {
            patterns,
            matcher,
            index,
            carry,
        }
    }
}

/// Records a body as it streams past: length, CRC-32, needle counts, and the bytes while they
/// fit in [`KEEP_BODY_LIMIT`]. The upstream records request bodies with it; tests may use it on
/// response bodies too.
pub struct BodyRecorder {
    needles: Arc<Needles>,
    /// Last `needles.carry` bytes seen, for matches that span chunks.
    tail: Vec<u8>,
    len: u64,
    kept: Option<Vec<u8>>,
    counts: Vec<u64>,
    crc: flate2::Crc,
}

impl BodyRecorder {
    /// A recorder counting `needles` (empty needles never match).
    pub fn new<I, N>(needles: I) -> BodyRecorder
    where
        I: IntoIterator<Item = N>,
        N: AsRef<[u8]>,
    {
        let needles = needles.into_iter().map(|n| n.as_ref().to_vec()).collect();
        BodyRecorder::with_needles(Arc::new(Needles::new(needles)))
    }

    fn with_needles(needles: Arc<Needles>) -> BodyRecorder {
        let counts = vec![0; needles.patterns.len()];
        BodyRecorder {
            needles,
            tail: Vec::new(),
            len: 0,
            kept: Some(Vec::new()),
            counts,
            crc: flate2::Crc::new(),
        }
    }

    /// Records the next chunk.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.len += chunk.len() as u64;
        self.crc.update(chunk);
        if let Some(kept) = &mut self.kept {
            if kept.len() + chunk.len() <= KEEP_BODY_LIMIT {
                kept.extend_from_slice(chunk);
            } else {
                self.kept = None;
            }
        }
        let Some(matcher) = &self.needles.matcher else {
            return;
        };
        // Matches that start in the carried tail and end in this chunk.
        let head = &chunk[..chunk.len().min(self.needles.carry)];
        let mut seam = Vec::with_capacity(self.tail.len() + head.len());
        seam.extend_from_slice(&self.tail);
        seam.extend_from_slice(head);
        for m in matcher.find_overlapping_iter(&seam) {
            if m.start() < self.tail.len() && m.end() > self.tail.len() {
                self.counts[self.needles.index[m.pattern().as_usize()]] += 1;
            }
        }
        // Matches inside this chunk.
        for m in matcher.find_overlapping_iter(chunk) {
            self.counts[self.needles.index[m.pattern().as_usize()]] += 1;
        }
        // Keep the last `carry` bytes of everything seen.
        seam.extend_from_slice(&chunk[head.len()..]);
        let keep_from = seam.len().saturating_sub(self.needles.carry);
        self.tail.clear();
        self.tail.extend_from_slice(&seam[keep_from..]);
    }

    /// The record, with `complete` saying whether the body ended normally.
    pub fn finish(self, complete: bool) -> RecordedBody {
        RecordedBody {
            len: self.len,
            bytes: self.kept,
            needle_counts: self.counts,
            crc32: self.crc.sum(),
            complete,
        }
    }
}

/// The request's head, taken before its body is consumed.
struct Head {
    seq: u64,
    connection: u64,
    method: Method,
    uri: Uri,
    path: String,
    version: Version,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Head {
    fn of(req: &Request<Incoming>, seq: u64, connection: u64) -> Head {
        Head {
            seq,
            connection,
            method: req.method().clone(),
            uri: req.uri().clone(),
            path: req
                .uri()
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned()),
            version: req.version(),
            headers: req
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    fn into_record(self, body: RecordedBody) -> RecordedRequest {
        RecordedRequest {
            seq: self.seq,
            connection: self.connection,
            method: self.method,
            uri: self.uri,
            path: self.path,
            version: self.version,
            headers: self.headers,
            body,
        }
    }

    /// The `/echo` preamble: request line, headers, blank line.
    fn echo_preamble(&self) -> Vec<u8> {
        let mut out = format!("{} {} {:?}\n", self.method, self.uri, self.version).into_bytes();
        for (name, value) in &self.headers {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.push(b'\n');
        }
        out.push(b'\n');
        out
    }
}

/// Reads `body` to its end through a recorder, sending each data chunk to `forward` as it
/// arrives (if given, and until the receiver is gone).
async fn consume(
    mut body: Incoming,
    needles: Arc<Needles>,
    mut forward: Option<mpsc::Sender<Bytes>>,
) -> RecordedBody {
    let mut recorder = BodyRecorder::with_needles(needles);
    let complete = loop {
        match body.frame().await {
            None => break true,
            Some(Err(_)) => break false,
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                recorder.feed(&data);
                if let Some(tx) = &forward
                    && tx.send(data).await.is_err()
                {
                    // The response is gone (client hung up): keep recording.
                    forward = None;
                }
            }
        }
    };
    recorder.finish(complete)
}

#[derive(Clone)]
struct Server {
    kind: UpstreamKind,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
}

impl Server {
    async fn accept_loop(self, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let id = self.shared.connections.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(self.clone().serve_connection(stream, id));
                }
                // Out of file descriptors and the like: back off rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    async fn serve_connection(self, stream: TcpStream, connection: u64) {
        let _ = stream.set_nodelay(true);
        match &self.acceptor {
            Some(acceptor) => {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                self.serve_io(TokioIo::new(tls), connection).await;
            }
            None => self.serve_io(TokioIo::new(stream), connection).await,
        }
    }

    async fn serve_io<I>(self, io: TokioIo<I>, connection: u64)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let shared = self.shared.clone();
        let service = hyper::service::service_fn(move |req| {
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(handle(shared, req, connection).await) }
        });
        // Connection errors (a client that hangs up) end the connection; tests see them through
        // `RecordedBody::complete` and their own client.
        if self.kind.is_h2() {
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, service)
                .await;
        } else {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        }
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>, connection: u64) -> Response<Out> {
    let seq = shared.seq.fetch_add(1, Ordering::SeqCst);
    let head = Head::of(&req, seq, connection);
    let needles = lock(&shared.needles).clone();
    let query = Query::parse(req.uri().query().unwrap_or(""));
    let path = req.uri().path().to_owned();

    if path == "/echo" {
        return echo(shared, head, req.into_body(), needles);
    }

    let body = consume(req.into_body(), needles, None).await;
    let sink_report = sink_report(&body);
    shared.record(head.into_record(body));

    let route = path.as_str();
    match route {
        "/echo-header" => echo_header(&query),
        "/redirect" => {
            let to = query.text("to");
            respond(StatusCode::FOUND)
                .header_bytes("location", to.as_bytes())
                .header_bytes("set-cookie", format!("session={to}").as_bytes())
                .full(Bytes::new())
        }
        "/body" => body_route(&query),
        "/chunked" => chunked_route(&query),
        "/gzip" | "/deflate" | "/br" | "/zstd" => compressed_route(route, &query),
        "/sse" => sse_route(&shared, &query),
        "/big" => big_route(&query),
        "/sink" => respond(StatusCode::OK).full(Bytes::from(sink_report)),
        _ => match route.strip_prefix("/status/").map(str::parse::<u16>) {
            Some(Ok(code)) if (200..=599).contains(&code) => match StatusCode::from_u16(code) {
                Ok(status) => respond(status).full(Bytes::new()),
                Err(_) => bad_request("status out of range"),
            },
            Some(_) => bad_request("status must be 200..=599"),
            None => respond(StatusCode::NOT_FOUND).full(Bytes::from_static(b"not found\n")),
        },
    }
}

fn sink_report(body: &RecordedBody) -> String {
    let mut report = format!("bytes={}\ncrc32={:08x}\n", body.len, body.crc32);
    for (i, count) in body.needle_counts.iter().enumerate() {
        let _ = writeln!(report, "needle{i}={count}");
    }
    report
}

fn echo(shared: Arc<Shared>, head: Head, body: Incoming, needles: Arc<Needles>) -> Response<Out> {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let preamble = Bytes::from(head.echo_preamble());
    tokio::spawn(async move {
        let forward = tx.send(preamble).await.is_ok().then_some(tx);
        let body = consume(body, needles, forward).await;
        shared.record(head.into_record(body));
    });
    respond(StatusCode::OK)
        .header("content-type", "text/plain")
        .body(Out::Channel(rx))
}

fn echo_header(query: &Query) -> Response<Out> {
    let name = query.bytes("name");
    let value = query.bytes("value");
    match (
        HeaderName::from_bytes(&name),
        HeaderValue::from_bytes(&value),
    ) {
        (Ok(name), Ok(value)) => {
            let mut response = respond(StatusCode::OK).full(Bytes::from_static(b"ok"));
            response.headers_mut().append(name, value);
            response
        }
        _ => bad_request("name and value must form a valid header"),
    }
}

fn body_route(query: &Query) -> Response<Out> {
    let text = query.bytes("text");
    let body = match query.get("len").map(|l| l.parse::<usize>()) {
        None => text,
        Some(Ok(len)) if !text.is_empty() || len == 0 => {
            text.iter().copied().cycle().take(len).collect()
        }
        Some(_) => return bad_request("len must be a number, and text non-empty"),
    };
    respond(StatusCode::OK)
        .header("content-length", &body.len().to_string())
        .full(Bytes::from(body))
}

fn chunked_route(query: &Query) -> Response<Out> {
    let text = Bytes::from(query.bytes("text"));
    let Ok(parts) = query.get("parts").unwrap_or("1").parse::<usize>() else {
        return bad_request("parts must be a number");
    };
    let parts = parts.max(1);
    let len = text.len();
    let pieces: VecDeque<Bytes> = (0..parts)
        .map(|i| text.slice(i * len / parts..(i + 1) * len / parts))
        .filter(|piece| !piece.is_empty())
        .collect();
    respond(StatusCode::OK).body(Out::Parts {
        pieces,
        yielded: false,
    })
}

fn compressed_route(route: &str, query: &Query) -> Response<Out> {
    let text = query.bytes("text");
    let level = flate2::Compression::default();
    let (coding, body) = match route {
        "/gzip" => (
            "gzip",
            encode(GzEncoder::new(Vec::new(), level), &text, GzEncoder::finish),
        ),
        "/deflate" if query.get("raw") == Some("1") => (
            "deflate",
            encode(
                DeflateEncoder::new(Vec::new(), level),
                &text,
                DeflateEncoder::finish,
            ),
        ),
        "/deflate" => (
            "deflate",
            encode(
                ZlibEncoder::new(Vec::new(), level),
                &text,
                ZlibEncoder::finish,
            ),
        ),
        "/br" => {
            let mut out = Vec::new();
            let params = brotli::enc::BrotliEncoderParams::default();
            let _ = brotli::BrotliCompress(&mut &text[..], &mut out, &params);
            ("br", out)
        }
        _ => ("zstd", zstd::encode_all(&text[..], 3).unwrap_or_default()),
    };
    respond(StatusCode::OK)
        .header("content-encoding", coding)
        .header("content-length", &body.len().to_string())
        .full(Bytes::from(body))
}

/// Compresses `text` with a flate2 encoder writing into a `Vec`.
fn encode<W: io::Write>(
    mut encoder: W,
    text: &[u8],
    finish: fn(W) -> io::Result<Vec<u8>>,
) -> Vec<u8> {
    let _ = encoder.write_all(text);
    finish(encoder).unwrap_or_default()
}

fn sse_route(shared: &Arc<Shared>, query: &Query) -> Response<Out> {
    let (Ok(n), Ok(interval_ms)) = (
        query.get("n").unwrap_or("1").parse::<usize>(),
        query.get("interval_ms").unwrap_or("0").parse::<u64>(),
    ) else {
        return bad_request("n and interval_ms must be numbers");
    };
    let text = query.text("text");
    let gzip = query.get("gzip") == Some("1");
    let index = {
        let mut sse = lock(&shared.sse);
        sse.push(SseLog {
            text: text.clone(),
            sent: Vec::new(),
        });
        sse.len() - 1
    };
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let shared = shared.clone();
    tokio::spawn(async move {
        let mut encoder = gzip.then(|| GzEncoder::new(Vec::new(), flate2::Compression::default()));
        let mut ticker = tokio::time::interval(Duration::from_millis(interval_ms.max(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for i in 0..n {
            if interval_ms > 0 {
                ticker.tick().await;
            }
            let event = format!("data: {text} {i}\n\n").into_bytes();
            let bytes = match &mut encoder {
                Some(gz) => {
                    let _ = gz.write_all(&event);
                    let _ = gz.flush();
                    std::mem::take(gz.get_mut())
                }
                None => event,
            };
            lock(&shared.sse)[index].sent.push(Instant::now());
            if tx.send(Bytes::from(bytes)).await.is_err() {
                return;
            }
        }
        if let Some(gz) = encoder {
            let _ = tx.send(Bytes::from(gz.finish().unwrap_or_default())).await;
        }
    });
    let mut builder = respond(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache");
    if gzip {
        builder = builder.header("content-encoding", "gzip");
    }
    builder.body(Out::Channel(rx))
}

fn big_route(query: &Query) -> Response<Out> {
    let Ok(bytes) = query.get("bytes").unwrap_or("0").parse::<u64>() else {
        return bad_request("bytes must be a number");
    };
    let Ok(every) = query.get("every").unwrap_or("0").parse::<u64>() else {
        return bad_request("every must be a number");
    };
    match BigBody::new(bytes, query.bytes("needle"), every) {
        Some(body) => respond(StatusCode::OK)
            .header("content-type", "text/plain")
            .body(Out::Big(body)),
        None => bad_request("every must be at least the needle's length"),
    }
}

fn bad_request(why: &'static str) -> Response<Out> {
    respond(StatusCode::BAD_REQUEST).full(Bytes::from(format!("{why}\n")))
}

/// A small response builder that cannot fail (invalid headers are skipped).
struct Respond {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
}

fn respond(status: StatusCode) -> Respond {
    Respond {
        status,
        headers: Vec::new(),
    }
}

impl Respond {
    fn header(self, name: &'static str, value: &str) -> Respond {
        self.header_bytes(name, value.as_bytes())
    }

    fn header_bytes(mut self, name: &'static str, value: &[u8]) -> Respond {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            self.headers.push((HeaderName::from_static(name), value));
        }
        self
    }

    fn full(self, body: Bytes) -> Response<Out> {
        self.body(Out::Full(Some(body)))
    }

    fn body(self, body: Out) -> Response<Out> {
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        for (name, value) in self.headers {
            response.headers_mut().append(name, value);
        }
        response
    }
}

/// Every response body the upstream sends.
enum Out {
    /// One buffer (length known).
    Full(Option<Bytes>),
    /// Chunks from a task, each sent as it comes.
    Channel(mpsc::Receiver<Bytes>),
    /// Parts sent one per poll, returning `Pending` once in between so the connection flushes
    /// each part before the next is taken.
    Parts {
        pieces: VecDeque<Bytes>,
        yielded: bool,
    },
    /// Generated `/big` chunks.
    Big(BigBody),
}

impl Body for Out {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let data = match self.get_mut() {
            Out::Full(body) => body.take().filter(|b| !b.is_empty()),
            Out::Channel(rx) => match rx.poll_recv(cx) {
                Poll::Ready(data) => data,
                Poll::Pending => return Poll::Pending,
            },
            Out::Parts { pieces, yielded } => {
                if !*yielded && !pieces.is_empty() {
                    *yielded = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                *yielded = false;
                pieces.pop_front()
            }
            Out::Big(body) => body.next_chunk(),
        };
        Poll::Ready(data.map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Out::Full(body) => body.as_ref().is_none_or(Bytes::is_empty),
            Out::Parts { pieces, .. } => pieces.is_empty(),
            Out::Big(body) => body.remaining == 0,
            Out::Channel(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Out::Full(body) => SizeHint::with_exact(body.as_ref().map_or(0, |b| b.len() as u64)),
            _ => SizeHint::default(),
        }
    }
}

/// A request or response body fed from a channel, for clients that stream a body piece by piece.
pub struct ChannelBody(mpsc::Receiver<Bytes>);

impl ChannelBody {
    /// A body and the sender that feeds it; dropping the sender ends the body.
    pub fn channel(capacity: usize) -> (mpsc::Sender<Bytes>, ChannelBody) {
        let (tx, rx) = mpsc::channel(capacity);
        (tx, ChannelBody(rx))
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|data| data.map(|d| Ok(Frame::data(d))))
    }
}

/// Generates a `/big` body: periods of filler then needle, cut to `remaining` bytes.
struct BigBody {
    remaining: u64,
    /// Offset within the current period.
    offset: u64,
    period: u64,
    needle: Vec<u8>,
    /// `FILLER_LINE` repeated to `BIG_CHUNK + 64` bytes, so any filler run is one slice.
    filler: Bytes,
}

impl BigBody {
    fn new(bytes: u64, needle: Vec<u8>, every: u64) -> Option<BigBody> {
        let (period, needle) = if every == 0 || needle.is_empty() {
            (u64::MAX, Vec::new())
        } else if every < needle.len() as u64 {
            return None;
        } else {
            (every, needle)
        };
        let filler: Vec<u8> = FILLER_LINE
            .iter()
            .copied()
            .cycle()
            .take(BIG_CHUNK + FILLER_LINE.len())
            .collect();
        Some(BigBody {
            remaining: bytes,
            offset: 0,
            period,
            needle,
            filler: Bytes::from(filler),
        })
    }

    fn next_chunk(&mut self) -> Option<Bytes> {
        if self.remaining == 0 {
            return None;
        }
        let size = self.remaining.min(BIG_CHUNK as u64) as usize;
        let mut chunk = Vec::with_capacity(size);
        let filler_len = self.period - self.needle.len() as u64;
        while chunk.len() < size {
            let want = (size - chunk.len()) as u64;
            if self.offset < filler_len {
                let run = want.min(filler_len - self.offset) as usize;
                let start = (self.offset % FILLER_LINE.len() as u64) as usize;
                chunk.extend_from_slice(&self.filler[start..start + run]);
                self.offset += run as u64;
            } else {
                let at = (self.offset - filler_len) as usize;
                let run = (want as usize).min(self.needle.len() - at);
                chunk.extend_from_slice(&self.needle[at..at + run]);
                self.offset += run as u64;
            }
            if self.offset == self.period {
                self.offset = 0;
            }
        }
        self.remaining -= size as u64;
        Some(Bytes::from(chunk))
    }
}

/// A parsed query string: `name=value` pairs, values percent-decoded.
struct Query(Vec<(String, Vec<u8>)>);

impl Query {
    fn parse(query: &str) -> Query {
        Query(
            query
                .split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                    let value = super::decode::percent_decode(value.as_bytes());
                    // `NAME.rev=...`: the value arrives reversed and is turned back here, as a
                    // hostile upstream would: the agent cannot send a real value the gateway
                    // recognises (it is refused), but it can send one transformed.
                    match name.strip_suffix(".rev") {
                        Some(n) => (n.to_owned(), value.into_iter().rev().collect()),
                        None => (name.to_owned(), value),
                    }
                })
                .collect(),
        )
    }

    fn bytes(&self, name: &str) -> Vec<u8> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    fn text(&self, name: &str) -> String {
        String::from_utf8_lossy(&self.bytes(name)).into_owned()
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}
