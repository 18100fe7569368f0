//! A stream that first replays bytes already read from the connection (the sniffed start of a
//! request, or what a client sent right after `CONNECT`), then reads on; it may also carry the
//! tunnel's [`TunnelInfo`] as Pingora's proxy digest, which the TLS layer inside the tunnel
//! passes through to the HTTP session.
//!
//! It also coalesces the end of a chunked response into one write: Pingora flushes the header
//! of a response without `Content-Length`, every chunk and the last chunk separately (each a
//! system call and a TCP segment), which is right while a response streams but wasteful once the
//! rest of it is in hand. When the proxy knows that (see [`PrefixStream::coalesce_to_end`]),
//! flushes are deferred until the last chunk (`0\r\n\r\n`) has been written.
//! That is what makes the difference on a plain listener (a three-chunk response: three
//! `sendto` calls without it, one with it). Over TLS — an mTLS listener, or the decrypted
//! stream of a tunnel, where this stream sits above the TLS layer — the same response already
//! leaves in one `sendto` with or without it (measured with `strace`): the deferred flush costs
//! nothing there and is kept for one code path.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::{Buf, Bytes};
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::pki::ClientIdentity;

/// The last chunk of a chunked body: after it, a response is complete.
const LAST_CHUNK: &[u8; 5] = b"0\r\n\r\n";

/// See the module documentation.
pub struct PrefixStream {
    inner: Stream,
    prefix: Bytes,
    proxy_digest: Option<Arc<ProxyDigest>>,
    /// Set by the proxy when the rest of a chunked response is in hand; cleared by the flush
    /// that follows its last chunk.
    coalescing: AtomicBool,
    /// The last bytes written while coalescing (most recent last).
    tail: [u8; LAST_CHUNK.len()],
}

impl std::fmt::Debug for PrefixStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefixStream")
            .field("prefix_len", &self.prefix.len())
            .finish_non_exhaustive()
    }
}

impl PrefixStream {
    /// `inner` with `prefix` replayed first.
    pub fn new(inner: Stream, prefix: Bytes) -> Self {
        Self {
            inner,
            prefix,
            proxy_digest: None,
            coalescing: AtomicBool::new(false),
            tail: [0; LAST_CHUNK.len()],
        }
    }

    /// Replays `prefix` before reading on (the next request head, read by the listener).
    pub fn replay(&mut self, prefix: Bytes) {
        self.prefix = prefix;
    }

    /// Defers every flush until the last chunk of the current chunked response has been
    /// written, so that what remains of the response leaves in one write. For the proxy, once
    /// the end of a chunked response has been read from the upstream; never for a response
    /// that is not chunked, whose end would then wait for the next write.
    pub fn coalesce_to_end(&self) {
        self.coalescing.store(true, Ordering::Relaxed);
    }

    fn remember(&mut self, written: &[u8]) {
        let n = written.len().min(self.tail.len());
        self.tail.rotate_left(n);
        let keep = self.tail.len() - n;
        self.tail[keep..].copy_from_slice(&written[written.len() - n..]);
    }

    /// As [`Self::new`], carrying `tunnel` as the proxy digest.
    ///
    /// # Errors
    /// Gives `inner` back if the digest cannot be built.
    pub fn with_tunnel(inner: Stream, prefix: Bytes, tunnel: TunnelInfo) -> Result<Self, Stream> {
        let Ok(resp) = pingora::http::ResponseHeader::build(200, Some(0)) else {
            return Err(inner);
        };
        let mut stream = Self::new(inner, prefix);
        stream.proxy_digest = Some(Arc::new(ProxyDigest::new(
            Box::new(resp),
            Some(Box::new(tunnel)),
        )));
        Ok(stream)
    }

    /// `inner` carrying `mark` as the proxy digest's user data, for the proxy to find on each
    /// request of the connection (see `crate::limits::client::OverLimit`).
    pub fn with_mark(
        inner: Stream,
        mark: Box<dyn std::any::Any + Send + Sync>,
    ) -> Result<Self, Stream> {
        let Ok(resp) = pingora::http::ResponseHeader::build(200, Some(0)) else {
            return Err(inner);
        };
        let mut stream = Self::new(inner, Bytes::new());
        stream.proxy_digest = Some(Arc::new(ProxyDigest::new(Box::new(resp), Some(mark))));
        Ok(stream)
    }
}

impl AsyncRead for PrefixStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // Frees the read buffer the prefix came from, or it would stay allocated as long
                // as the connection (1 KiB per idle connection).
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PrefixStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written
            && self.coalescing.load(Ordering::Relaxed)
        {
            self.remember(&buf[..n]);
        }
        written
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.coalescing.load(Ordering::Relaxed) {
            if self.tail != *LAST_CHUNK {
                // More of this response follows at once; the write buffer keeps it.
                return Poll::Ready(Ok(()));
            }
            self.coalescing.store(false, Ordering::Relaxed);
            self.tail = [0; LAST_CHUNK.len()];
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(mut n)) = written
            && self.coalescing.load(Ordering::Relaxed)
        {
            for b in bufs {
                let k = n.min(b.len());
                self.remember(&b[..k]);
                n -= k;
            }
        }
        written
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for PrefixStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for PrefixStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for PrefixStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for PrefixStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
}

impl GetProxyDigest for PrefixStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.proxy_digest
            .clone()
            .or_else(|| self.inner.get_proxy_digest())
    }
}

impl GetSocketDigest for PrefixStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for PrefixStream {}

/// What a request inside a tunnel knows about it.
#[derive(Debug, Clone)]
pub struct TunnelInfo {
    /// The `CONNECT` target host, lower case.
    pub host: String,
    pub port: u16,
    /// The identity from the outer (m)TLS handshake.
    pub identity: Option<ClientIdentity>,
}
