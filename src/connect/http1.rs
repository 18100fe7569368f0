//! The agents' HTTP/1 connections: [`serve_http1`] runs the keep-alive loop that Pingora would
//! run, but reads each request head itself first: the first byte within `idle_timeout`, the
//! whole head within `head_timeout` of its first byte, never more than `header_bytes` buffered,
//! at most `headers` fields — else `431` or `408` and the connection is closed. The head is then
//! replayed to Pingora, with its body-read timeout (`body_idle_timeout`) and write timeout
//! (`send_timeout`) set on the session. A connection the gateway-wide limits refuse is answered
//! here too ([`shed`]).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use pingora::apps::{HttpPersistentSettings, HttpServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::limits::overload::{GATEWAY, RETRY_AFTER};
use crate::pki::ClientIdentity;
use crate::policy::Policy;
use crate::proxy::Gateway;
use crate::refusal::{Limit, Reason};
use crate::stream::PrefixStream;

/// Answers a connection refused by [`crate::limits::overload::admit`] with `503` and closes it.
pub async fn shed(mut stream: Stream, limit: Limit) {
    let identity = identity(&stream);
    crate::metrics::limited(GATEWAY, limit);
    crate::metrics::refusal(Reason::Overloaded);
    crate::audit::log_overload_refusal(identity.as_ref(), 503, limit);
    answer(
        &mut stream,
        503,
        Reason::Overloaded,
        "the gateway is at its connection limit; retry shortly",
        SHED_LINGER,
    )
    .await;
}

fn identity(stream: &Stream) -> Option<ClientIdentity> {
    stream
        .get_ssl_digest()
        .and_then(|d| d.extension.get::<ClientIdentity>().cloned())
}

/// Bytes of a refused request read and dropped after the answer, so that closing with them
/// unread does not reset the connection before the client has read the answer.
const LINGER_BYTES: usize = 256 * 1024;
const LINGER: Duration = Duration::from_secs(1);
/// A shed connection lingers only for what has already arrived: under descriptor pressure
/// every shed connection must give its descriptor back at once.
const SHED_LINGER: Duration = Duration::from_millis(10);

/// Writes a complete refusal on a raw connection and closes it (after a short lingering read).
async fn answer(stream: &mut Stream, status: u16, reason: Reason, message: &str, linger: Duration) {
    let phrase = match status {
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let retry = if status == 503 {
        format!("Retry-After: {RETRY_AFTER}\r\n")
    } else {
        String::new()
    };
    let body = format!("slapenir: {message}\n");
    let resp = format!(
        "HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{retry}X-Slapenir-Refusal: {reason}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(resp.as_bytes()).await;
        let _ = stream.flush().await;
        let _ = stream.shutdown().await;
    })
    .await;
    // On the heap: an array here would be part of every connection's future (this runs inside
    // the listener's loop), 8 KiB held by each idle connection that is never refused.
    let mut sink = vec![0u8; 8192];
    let mut left = LINGER_BYTES;
    let _ = tokio::time::timeout(linger, async {
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// Until when the listener waits for the next bytes of a request head: `idle_timeout` from now
/// before its first byte, else `deadline` (see [`head_started`]).
pub fn head_wait(
    policy: &ArcSwap<Policy>,
    deadline: &mut Option<tokio::time::Instant>,
) -> tokio::time::Instant {
    match deadline {
        Some(d) => *d,
        None => tokio::time::Instant::now() + policy.load().config.limits.idle_timeout,
    }
}

/// After bytes of a head arrived: the head must be complete `head_timeout` after the first.
pub fn head_started(policy: &ArcSwap<Policy>, deadline: &mut Option<tokio::time::Instant>) {
    if deadline.is_none() {
        *deadline = Some(tokio::time::Instant::now() + policy.load().config.limits.head_timeout);
    }
}

/// The listener's wait for a head ran out: before its first byte (`deadline` unset: an idle
/// connection, closed) or after (`408`).
pub async fn head_expired(
    mut stream: Stream,
    deadline: Option<tokio::time::Instant>,
) -> Option<Stream> {
    if deadline.is_none() {
        crate::metrics::limited(GATEWAY, Limit::IdleTimeout);
    } else {
        refuse_head(&mut stream, 408, Limit::HeadTimeout).await;
    }
    None
}

/// The limits one request head is read under (a copy: a reload applies to the next head).
#[derive(Debug, Clone, Copy)]
struct HeadLimits {
    header_bytes: usize,
    headers: usize,
    idle: Duration,
    head: Duration,
    body_idle: Duration,
    send: Duration,
}

impl HeadLimits {
    fn now(policy: &ArcSwap<Policy>) -> Self {
        let p = policy.load();
        let l = &p.config.limits;
        HeadLimits {
            header_bytes: usize::try_from(l.header_bytes).unwrap_or(usize::MAX),
            headers: l.headers as usize,
            idle: l.idle_timeout,
            head: l.head_timeout,
            body_idle: l.body_idle_timeout,
            send: l.send_timeout,
        }
    }
}

/// How reading a head ended when it gives no request.
#[derive(Debug, PartialEq)]
enum NoHead {
    /// The client closed, or sent nothing within `idle_timeout`.
    Closed,
    /// A limit was hit: answer `status`, count `limit`.
    Refused { status: u16, limit: Limit },
}

/// Serves HTTP/1 requests on `stream` (an agent connection, or a tunnel's decrypted stream)
/// through `proxy`, one head at a time under the current limits (see the module docs).
pub async fn serve_http1(
    proxy: &Arc<HttpProxy<Gateway>>,
    policy: &ArcSwap<Policy>,
    stream: Stream,
    mut head_deadline: Option<tokio::time::Instant>,
    shutdown: &ShutdownWatch,
) -> Option<Stream> {
    let mut stream = into_prefix(stream)?;
    let mut settings: Option<HttpPersistentSettings> = None;
    // One receiver for the connection's waits on the shutdown.
    let mut draining = shutdown.clone();
    loop {
        let limits = HeadLimits::now(policy);
        let head = read_head(
            &mut *stream,
            &limits,
            head_deadline.take(),
            Some(&mut draining),
        );
        match head.await {
            Ok(head) => stream.replay(head),
            Err(NoHead::Closed) => return None,
            Err(NoHead::Refused { status, limit }) => {
                let mut raw: Stream = stream;
                refuse_head(&mut raw, status, limit).await;
                return None;
            }
        }
        let mut session = ServerSession::new_http1(stream);
        if let Some(s) = settings.take() {
            s.apply_to_session(&mut session);
        }
        let keepalive = (!*shutdown.borrow()).then(|| limits.idle.as_secs().max(1));
        session.set_keepalive(keepalive);
        session.set_read_timeout(Some(limits.body_idle));
        session.set_write_timeout(Some(limits.send));
        let reused = proxy.process_new_http(session, shutdown).await?;
        if *shutdown.borrow() {
            // Draining: the connection ends with the response that was in flight.
            return None;
        }
        let (next, s) = reused.consume();
        settings = s;
        stream = into_prefix(next)?;
    }
}

/// `stream` as the [`PrefixStream`] it usually is (wrapped in one otherwise).
fn into_prefix(stream: Stream) -> Option<Box<PrefixStream>> {
    if stream.as_any().is::<PrefixStream>() {
        stream.into_any().downcast::<PrefixStream>().ok()
    } else {
        Some(Box::new(PrefixStream::new(stream, Bytes::new())))
    }
}

async fn refuse_head(stream: &mut Stream, status: u16, limit: Limit) {
    crate::metrics::limited(GATEWAY, limit);
    let (reason, message) = if status == 431 {
        (
            Reason::RequestHeaderTooLarge,
            "the request head is larger than this gateway accepts",
        )
    } else {
        (
            Reason::RequestTimeout,
            "the request head took longer than this gateway waits",
        )
    };
    crate::metrics::refusal(reason);
    crate::audit::log_overload_refusal(identity(stream).as_ref(), status, limit);
    answer(stream, status, reason, message, LINGER).await;
}

/// Reads one request head (and whatever follows it in the same reads) under `l`.
/// `deadline`: when the head must be complete, if its first bytes were read before. An idle
/// connection (no byte of a head yet) is closed when `shutdown` says the server is draining.
async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    l: &HeadLimits,
    deadline: Option<tokio::time::Instant>,
    shutdown: Option<&mut ShutdownWatch>,
) -> Result<Bytes, NoHead> {
    let mut buf = BytesMut::with_capacity(1024);
    let room = l.header_bytes.saturating_add(1);
    let mut limited = (&mut *stream).take(room as u64);
    let first = tokio::time::timeout(l.idle, limited.read_buf(&mut buf));
    let first = match shutdown {
        None => first.await,
        Some(watch) => {
            tokio::select! {
                read = first => read,
                _ = watch.wait_for(|down| *down) => return Err(NoHead::Closed),
            }
        }
    };
    match first {
        Err(_) => {
            crate::metrics::limited(GATEWAY, Limit::IdleTimeout);
            return Err(NoHead::Closed);
        }
        Ok(Ok(0)) | Ok(Err(_)) => return Err(NoHead::Closed),
        Ok(Ok(_)) => {}
    }
    let deadline = deadline.unwrap_or_else(|| tokio::time::Instant::now() + l.head);
    let mut scan = HeadScan::default();
    loop {
        let done = scan.scan(&buf);
        if scan.headers() > l.headers {
            return Err(NoHead::Refused {
                status: 431,
                limit: Limit::Headers,
            });
        }
        match done {
            Some(len) if len > l.header_bytes => {
                return Err(NoHead::Refused {
                    status: 431,
                    limit: Limit::HeaderBytes,
                })
            }
            // Pingora parses it (and answers a malformed one).
            Some(_) => return Ok(buf.freeze()),
            None => {}
        }
        if buf.len() > l.header_bytes {
            return Err(NoHead::Refused {
                status: 431,
                limit: Limit::HeaderBytes,
            });
        }
        let more = (room - buf.len()) as u64;
        let mut limited = (&mut *stream).take(more);
        match tokio::time::timeout_at(deadline, limited.read_buf(&mut buf)).await {
            Err(_) => {
                return Err(NoHead::Refused {
                    status: 408,
                    limit: Limit::HeadTimeout,
                })
            }
            Ok(Ok(0)) | Ok(Err(_)) => return Err(NoHead::Closed),
            Ok(Ok(_)) => {}
        }
    }
}

/// How far a request head has been scanned, a read at a time: its lines are only counted (the
/// head is parsed once, by Pingora), which bounds `headers` at least as strictly as a parse
/// would (a header takes a line at least).
#[derive(Debug, Default)]
struct HeadScan {
    /// Whether the request line has started: the empty lines a client may send first are
    /// skipped (as the parser skips them) until a byte other than CR or LF comes.
    started: bool,
    /// Where the current line starts.
    line: usize,
    /// How far the current line has been searched for its end (each byte is looked at once,
    /// however the head is split into reads).
    scanned: usize,
    /// The lines ended so far (the request line, then one per header).
    lines: usize,
}

impl HeadScan {
    /// Scans what `buf` holds beyond the last call: the head's length once its empty line
    /// (CRLF or a bare LF) has come.
    fn scan(&mut self, buf: &[u8]) -> Option<usize> {
        if !self.started {
            let start = buf.iter().position(|&b| b != b'\r' && b != b'\n')?;
            self.started = true;
            self.line = start;
            self.scanned = start;
        }
        loop {
            let Some(i) = buf.get(self.scanned..)?.iter().position(|&b| b == b'\n') else {
                self.scanned = buf.len();
                return None;
            };
            let end = self.scanned + i;
            let empty = end == self.line || (end == self.line + 1 && buf[self.line] == b'\r');
            self.line = end + 1;
            self.scanned = self.line;
            if empty {
                return Some(self.line);
            }
            self.lines += 1;
        }
    }

    /// The header lines seen so far.
    fn headers(&self) -> usize {
        self.lines.saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn limits() -> HeadLimits {
        HeadLimits {
            header_bytes: 64,
            headers: 3,
            idle: Duration::from_secs(5),
            head: Duration::from_secs(5),
            body_idle: Duration::from_secs(5),
            send: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn heads_are_bounded() {
        type Case = (&'static str, &'static [u8], Result<&'static [u8], NoHead>);
        let cases: &[Case] = &[
            ("small head", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Ok(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")),
            ("head with body bytes", b"POST / HTTP/1.1\r\nHost: a\r\n\r\nxy", Ok(b"POST / HTTP/1.1\r\nHost: a\r\n\r\nxy")),
            ("bare LF", b"GET / HTTP/1.1\nHost: a\n\n", Ok(b"GET / HTTP/1.1\nHost: a\n\n")),
            ("too many headers", b"GET / HTTP/1.1\r\na: 1\r\nb: 1\r\nc: 1\r\nd: 1\r\n\r\n", Err(NoHead::Refused { status: 431, limit: Limit::Headers })),
            ("one huge header", b"GET / HTTP/1.1\r\nHost: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n", Err(NoHead::Refused { status: 431, limit: Limit::HeaderBytes })),
            ("closed mid-head", b"GET / HTTP/1.1\r\n", Err(NoHead::Closed)),
            ("closed at once", b"", Err(NoHead::Closed)),
            ("empty lines first", b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", Ok(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")),
            ("empty lines, then closed", b"\r\n\r\n\n", Err(NoHead::Closed)),
            ("too many headers, head not ended", b"GET / HTTP/1.1\r\na: 1\r\nb: 1\r\nc: 1\r\nd: 1\r\n", Err(NoHead::Refused { status: 431, limit: Limit::Headers })),
            ("as many headers as allowed", b"GET / HTTP/1.1\r\na: 1\r\nb: 1\r\nc: 1\r\n\r\n", Ok(b"GET / HTTP/1.1\r\na: 1\r\nb: 1\r\nc: 1\r\n\r\n")),
        ];
        for (name, input, want) in cases {
            let mut r: &[u8] = input;
            let got = read_head(&mut r, &limits(), None, None).await;
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(&g[..], *w, "{name}"),
                (Err(g), Err(w)) => assert_eq!(&g, w, "{name}"),
                (g, w) => panic!("{name}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn a_head_split_into_reads_is_scanned_the_same() {
        let head = b"\r\nGET /x HTTP/1.1\r\nHost: a\r\nB: \r\n\nrest";
        let whole = {
            let mut s = HeadScan::default();
            (s.scan(head), s.headers())
        };
        assert_eq!(whole, (Some(head.len() - 4), 2));
        for split in 0..head.len() {
            let mut s = HeadScan::default();
            let first = s.scan(&head[..split]);
            let got = first.or_else(|| s.scan(head));
            assert_eq!((got, s.headers()), whole, "split at {split}");
        }
        // Byte by byte, each byte is looked at once: the scan position only moves forward.
        let mut s = HeadScan::default();
        let mut got = None;
        for n in 1..=head.len() {
            got = s.scan(&head[..n]);
            assert!(s.scanned <= n, "at {n}");
            if got.is_some() {
                break;
            }
        }
        assert_eq!((got, s.headers()), whole);
    }
}
