//! Self-tests of the end-to-end helpers in `common`: every upstream kind and behaviour, driven by
//! real clients (a hyper client and `curl`), so gateway tests can trust what the upstream
//! records and sends.
use crate::common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::pki::{TestPki, ALPN_H2, ALPN_HTTP11};
use common::upstream::{
    big_body, crc32, percent_encode, BodyRecorder, ChannelBody, Upstream, UpstreamKind,
};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use proptest::prelude::*;
use slapenir::rewrite::decode::{Decoder, Encoding};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ALL_KINDS: [UpstreamKind; 4] = [
    UpstreamKind::Plain,
    UpstreamKind::Tls,
    UpstreamKind::H2Tls,
    UpstreamKind::H2c,
];
const WAIT: Duration = Duration::from_secs(10);

/// One client connection to an upstream, speaking the upstream's protocol.
enum Conn<B> {
    H1(hyper::client::conn::http1::SendRequest<B>),
    H2(hyper::client::conn::http2::SendRequest<B>),
}

async fn connect<B>(up: &Upstream) -> Conn<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = TcpStream::connect(up.addr()).await.unwrap();
    let kind = up.kind();
    if kind.is_tls() {
        let alpn: &[u8] = if kind.is_h2() { ALPN_H2 } else { ALPN_HTTP11 };
        let connector = up.pki().connector(None, &[alpn]);
        let name = "localhost".try_into().unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        handshake(kind, TokioIo::new(tls)).await
    } else {
        handshake(kind, TokioIo::new(tcp)).await
    }
}

async fn handshake<B, I>(kind: UpstreamKind, io: TokioIo<I>) -> Conn<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if kind.is_h2() {
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        Conn::H2(send)
    } else {
        let (send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        Conn::H1(send)
    }
}

impl<B: Body + 'static> Conn<B> {
    async fn send(
        &mut self,
        up: &Upstream,
        method: &str,
        path: &str,
        body: B,
    ) -> Response<Incoming> {
        let builder = Request::builder().method(method);
        let request = match self {
            // HTTP/2 needs the authority in the target.
            Conn::H2(_) => builder.uri(format!("{}{path}", up.url())),
            Conn::H1(_) => builder.uri(path).header("host", "localhost"),
        }
        .body(body)
        .unwrap();
        match self {
            Conn::H1(send) => send.send_request(request).await.unwrap(),
            Conn::H2(send) => send.send_request(request).await.unwrap(),
        }
    }
}

/// One request on a fresh connection; returns status, headers and the whole body.
async fn fetch(
    up: &Upstream,
    method: &str,
    path: &str,
    body: &'static [u8],
) -> (Response<()>, Vec<u8>) {
    let mut conn = connect::<Full<Bytes>>(up).await;
    let response = conn
        .send(up, method, path, Full::new(Bytes::from_static(body)))
        .await;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes().to_vec();
    (Response::from_parts(parts, ()), bytes)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `curl` against `up`, trusting only the upstream's test CA (the environment's CA-bundle
/// variables are removed so they cannot add or replace trust).
fn curl(up: &Upstream, args: &[&str], path: &str) -> std::process::Output {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20"]);
    for var in [
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "CURL_CA_BUNDLE",
        "REQUESTS_CA_BUNDLE",
    ] {
        cmd.env_remove(var);
    }
    for var in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    if up.kind().is_tls() {
        cmd.arg("--cacert").arg(up.ca_path());
    }
    match up.kind() {
        UpstreamKind::Plain | UpstreamKind::Tls => cmd.arg("--http1.1"),
        UpstreamKind::H2Tls => cmd.arg("--http2"),
        UpstreamKind::H2c => cmd.arg("--http2-prior-knowledge"),
    };
    cmd.args(args).arg(format!("{}{path}", up.url()));
    let out = cmd.output().expect("run curl");
    assert!(
        out.status.success(),
        "curl {args:?} {path} failed: {}",
        text(&out.stderr)
    );
    out
}

fn expected_version(kind: UpstreamKind) -> Version {
    if kind.is_h2() {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    }
}

#[tokio::test]
async fn echo_returns_request_line_headers_and_body_for_every_kind() {
    for kind in ALL_KINDS {
        let up = Upstream::start(kind);
        let (response, body) = fetch(&up, "POST", "/echo?x=1", b"hello body").await;
        assert_eq!(response.status(), StatusCode::OK, "{kind:?}");
        let body = text(&body);
        let version = format!("{:?}", expected_version(kind));
        let first_line = body.lines().next().unwrap();
        assert!(first_line.starts_with("POST "), "{kind:?}: {first_line}");
        assert!(first_line.contains("/echo?x=1"), "{kind:?}: {first_line}");
        assert!(first_line.ends_with(&version), "{kind:?}: {first_line}");
        assert!(body.contains("\ncontent-length: 10\n"), "{kind:?}: {body}");
        assert!(body.ends_with("\n\nhello body"), "{kind:?}: {body}");

        let requests = up.wait_for_requests(1, WAIT).await;
        let r = &requests[0];
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/echo?x=1");
        assert_eq!(r.version, expected_version(kind));
        assert_eq!(r.body.bytes.as_deref(), Some(&b"hello body"[..]));
        assert!(r.body.complete);
        assert_eq!(r.header("content-length"), Some(&b"10"[..]));
    }
}

#[test]
fn curl_reaches_every_kind() {
    for kind in ALL_KINDS {
        let up = Upstream::start(kind);
        let out = curl(
            &up,
            &["-H", "X-Probe: curl", "--data-binary", "from curl"],
            "/echo",
        );
        let body = text(&out.stdout);
        assert!(body.contains("x-probe: curl\n"), "{kind:?}: {body}");
        assert!(body.ends_with("\n\nfrom curl"), "{kind:?}: {body}");
        let requests = up.wait_for_requests_blocking(1, WAIT);
        assert_eq!(requests[0].version, expected_version(kind), "{kind:?}");
        assert_eq!(requests[0].header_str("x-probe").as_deref(), Some("curl"));
    }
}

#[test]
fn curl_rejects_the_test_ca_it_was_not_given() {
    let up = Upstream::start(UpstreamKind::Tls);
    let other = tempfile::tempdir().unwrap();
    let other_pki = TestPki::new(other.path());
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(other_pki.ca_path())
        .arg(format!("{}/status/200", up.url()))
        .env_remove("SSL_CERT_FILE")
        .env_remove("CURL_CA_BUNDLE")
        .output()
        .unwrap();
    // 60: peer certificate cannot be authenticated with the given CA.
    assert_eq!(out.status.code(), Some(60), "{}", text(&out.stderr));
}

#[test]
fn h2_tls_upstream_refuses_http11_only_clients() {
    let up = Upstream::start(UpstreamKind::H2Tls);
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "--http1.1", "--cacert"])
        .arg(up.ca_path())
        .arg(format!("{}/status/200", up.url()))
        .env_remove("SSL_CERT_FILE")
        .env_remove("CURL_CA_BUNDLE");
    let out = cmd.output().unwrap();
    // 35: TLS handshake failed (the server finds no common ALPN protocol).
    assert_eq!(out.status.code(), Some(35), "{}", text(&out.stderr));
}

#[tokio::test]
async fn echo_streams_the_body_back_as_it_arrives() {
    for kind in ALL_KINDS {
        let up = Upstream::start(kind);
        let mut conn = connect::<ChannelBody>(&up).await;
        let (tx, body) = ChannelBody::channel(1);
        tx.send(Bytes::from_static(b"first part|")).await.unwrap();
        let response = conn.send(&up, "POST", "/echo", body).await;
        let mut body = response.into_body();
        let mut seen = Vec::new();
        while !text(&seen).contains("first part|") {
            let frame = body.frame().await.unwrap().unwrap();
            seen.extend_from_slice(frame.data_ref().unwrap());
        }
        // The first part came back while the request body is still open.
        tx.send(Bytes::from_static(b"second part")).await.unwrap();
        drop(tx);
        let rest = body.collect().await.unwrap().to_bytes();
        seen.extend_from_slice(&rest);
        assert!(text(&seen).ends_with("first part|second part"), "{kind:?}");
        let requests = up.wait_for_requests(1, WAIT).await;
        assert_eq!(
            requests[0].body.bytes.as_deref(),
            Some(&b"first part|second part"[..])
        );
    }
}

#[tokio::test]
async fn simple_routes_answer_as_documented() {
    let up = Upstream::start(UpstreamKind::Plain);
    let value = "sk dummy/ü&=%";
    let path = format!("/echo-header?name=X-Test&value={}", percent_encode(value));
    let (response, body) = fetch(&up, "GET", &path, b"").await;
    assert_eq!(response.headers()["x-test"].as_bytes(), value.as_bytes());
    assert_eq!(body, b"ok");

    let to = "https://api.example.com/next?a=1";
    let path = format!("/redirect?to={}", percent_encode(to));
    let (response, _) = fetch(&up, "GET", &path, b"").await;
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(response.headers()["location"], to);
    assert_eq!(
        response.headers()["set-cookie"],
        format!("session={to}").as_str()
    );

    let (response, body) = fetch(&up, "GET", "/body?text=abc", b"").await;
    assert_eq!(response.headers()["content-length"], "3");
    assert_eq!(body, b"abc");
    let (response, body) = fetch(&up, "GET", "/body?text=abc&len=7", b"").await;
    assert_eq!(response.headers()["content-length"], "7");
    assert_eq!(body, b"abcabca");

    let (response, body) = fetch(&up, "GET", "/chunked?text=0123456789&parts=3", b"").await;
    assert_eq!(response.headers()["transfer-encoding"], "chunked");
    assert_eq!(body, b"0123456789");

    for (path, status) in [
        ("/status/418", 418),
        ("/status/503", 503),
        ("/status/99", 400),
        ("/nope", 404),
    ] {
        let (response, _) = fetch(&up, "GET", path, b"").await;
        assert_eq!(response.status().as_u16(), status, "{path}");
    }
}

#[tokio::test]
async fn chunked_parts_arrive_as_separate_chunks() {
    let up = Upstream::start(UpstreamKind::Plain);
    let mut conn = connect::<Full<Bytes>>(&up).await;
    let response = conn
        .send(
            &up,
            "GET",
            "/chunked?text=abcdefghij&parts=4",
            Full::default(),
        )
        .await;
    let mut body = response.into_body();
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        frames.push(text(frame.unwrap().data_ref().unwrap()));
    }
    assert_eq!(frames.concat(), "abcdefghij");
    // Split points i * 10 / 4: 2, 5, 7; each part is its own HTTP/1 chunk, which the client
    // decodes as its own frame even if it reads several at once.
    assert_eq!(frames, ["ab", "cde", "fg", "hij"]);
}

#[tokio::test]
async fn compressed_routes_ignore_accept_encoding_and_decode_back() {
    let text_value = "secret-ish text sk-real-0123 repeated sk-real-0123";
    for (route, coding) in [
        ("/gzip", "gzip"),
        ("/deflate", "deflate"),
        ("/deflate?raw=1&", "deflate"),
        ("/br", "br"),
        ("/zstd", "zstd"),
    ] {
        let sep = if route.contains('?') { "" } else { "?" };
        let path = format!("{route}{sep}text={}", percent_encode(text_value));
        let up = Upstream::start(UpstreamKind::Plain);
        let mut conn = connect::<Full<Bytes>>(&up).await;
        let request = Request::get(path.as_str())
            .header("host", "localhost")
            .header("accept-encoding", "identity")
            .body(Full::default())
            .unwrap();
        let Conn::H1(send) = &mut conn else {
            unreachable!()
        };
        let response = send.send_request(request).await.unwrap();
        let header = response.headers()["content-encoding"].as_bytes().to_vec();
        assert_eq!(header, coding.as_bytes(), "{route}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_ne!(
            &body[..],
            text_value.as_bytes(),
            "{route}: body is compressed"
        );
        let encoding = Encoding::from_header(&header).unwrap().unwrap();
        let mut decoder = Decoder::new(encoding);
        let mut out = Vec::new();
        decoder.push(&body, &mut out).unwrap();
        decoder.finish(&mut out).unwrap();
        assert_eq!(text(&out), text_value, "{route}");
    }
}

#[tokio::test]
async fn curl_decodes_the_compressed_routes() {
    for route in ["/gzip", "/deflate", "/br", "/zstd"] {
        let up = Upstream::start(UpstreamKind::Tls);
        let out = tokio::task::spawn_blocking(move || {
            curl(
                &up,
                &["--compressed"],
                &format!("{route}?text=hello%20curl"),
            )
        })
        .await
        .unwrap();
        assert_eq!(text(&out.stdout), "hello curl", "{route}");
    }
}

/// Each event reaches the client before the next one is even sent: nothing in the upstream
/// (or the client) holds events back.
#[tokio::test]
async fn sse_events_arrive_before_the_next_is_sent() {
    for (kind, gzip) in [
        (UpstreamKind::Plain, false),
        (UpstreamKind::H2Tls, false),
        (UpstreamKind::Tls, true),
    ] {
        let up = Upstream::start(kind);
        let mut conn = connect::<Full<Bytes>>(&up).await;
        let path = format!("/sse?n=4&interval_ms=150&text=tick&gzip={}", u8::from(gzip));
        let response = conn.send(&up, "GET", &path, Full::default()).await;
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let mut decoder = gzip.then(|| Decoder::new(Encoding::Gzip));
        let mut body = response.into_body();
        let mut plain = Vec::new();
        let mut arrived = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.unwrap();
            let data = frame.data_ref().unwrap();
            match &mut decoder {
                Some(d) => d.push(data, &mut plain).unwrap(),
                None => plain.extend_from_slice(data),
            }
            let events = text(&plain).matches("\n\n").count();
            while arrived.len() < events {
                arrived.push(Instant::now());
            }
        }
        if let Some(d) = &mut decoder {
            d.finish(&mut plain).unwrap();
        }
        assert_eq!(
            text(&plain),
            "data: tick 0\n\ndata: tick 1\n\ndata: tick 2\n\ndata: tick 3\n\n",
            "{kind:?} gzip={gzip}"
        );
        let logs = up.sse_streams();
        assert_eq!(logs.len(), 1);
        let sent = &logs[0].sent;
        assert_eq!(sent.len(), 4);
        for i in 0..3 {
            assert!(
                arrived[i] < sent[i + 1],
                "{kind:?} gzip={gzip}: event {i} arrived after event {} was sent",
                i + 1
            );
        }
    }
}

#[tokio::test]
async fn big_body_matches_its_generator_and_needle_count() {
    let up = Upstream::start(UpstreamKind::H2c);
    let bytes = 3 * 64 * 1024 + 123;
    let path = format!("/big?bytes={bytes}&needle=NEEDLE&every=1000");
    let mut conn = connect::<Full<Bytes>>(&up).await;
    let response = conn.send(&up, "GET", &path, Full::default()).await;
    let mut recorder = BodyRecorder::new(["NEEDLE"]);
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        recorder.feed(frame.unwrap().data_ref().unwrap());
    }
    let got = recorder.finish(true);
    let expected: Vec<u8> = big_body(bytes, b"NEEDLE", 1000)
        .flat_map(|c| c.to_vec())
        .collect();
    assert_eq!(got.len, bytes);
    assert_eq!(got.needle_counts, [bytes / 1000]);
    assert_eq!(got.crc32, crc32(&expected));
    assert_eq!(&expected[994..1000], b"NEEDLE");
    assert!(expected[..994].iter().all(|&b| b == b'.' || b == b'\n'));
}

#[tokio::test]
async fn sink_counts_needles_across_chunk_boundaries_without_keeping_big_bodies() {
    for kind in [UpstreamKind::Plain, UpstreamKind::H2Tls] {
        let up = Upstream::start(kind);
        up.count_needles(["sk-real-openai", "absent", ""]);
        let mut conn = connect::<ChannelBody>(&up).await;
        let (tx, body) = ChannelBody::channel(4);
        let sender = tokio::spawn(async move {
            let mut sent = Vec::new();
            // 2 MiB in chunks of 4099 bytes, a needle every 10,000 bytes: many needles are cut
            // by chunk boundaries.
            for chunk in big_body(2 << 20, b"sk-real-openai", 10_000) {
                for piece in chunk.chunks(4099) {
                    sent.extend_from_slice(piece);
                    tx.send(Bytes::copy_from_slice(piece)).await.unwrap();
                }
            }
            sent
        });
        let response = conn.send(&up, "POST", "/sink", body).await;
        let report = text(&response.into_body().collect().await.unwrap().to_bytes());
        let sent = sender.await.unwrap();
        let needles = (2u64 << 20) / 10_000;
        assert_eq!(
            report,
            format!(
                "bytes={}\ncrc32={:08x}\nneedle0={needles}\nneedle1=0\nneedle2=0\n",
                2 << 20,
                crc32(&sent)
            ),
            "{kind:?}"
        );
        let requests = up.wait_for_requests(1, WAIT).await;
        let body = &requests[0].body;
        assert_eq!(body.bytes, None, "over 1 MiB: only the summary is kept");
        assert_eq!(body.needle_counts, [needles, 0, 0]);
        assert!(body.complete);
    }
}

#[tokio::test]
async fn keep_alive_reuses_one_connection() {
    for kind in ALL_KINDS {
        let up = Upstream::start(kind);
        let mut conn = connect::<Full<Bytes>>(&up).await;
        for _ in 0..3 {
            let response = conn.send(&up, "GET", "/status/204", Full::default()).await;
            assert_eq!(response.status(), StatusCode::NO_CONTENT);
            response.into_body().collect().await.unwrap();
        }
        let requests = up.wait_for_requests(3, WAIT).await;
        assert!(requests
            .iter()
            .all(|r| r.connection == requests[0].connection));
        assert_eq!(up.connections(), 1, "{kind:?}");
    }
}

#[tokio::test]
async fn many_concurrent_requests_are_all_served_and_recorded() {
    let up = Arc::new(Upstream::start(UpstreamKind::Plain));
    let mut tasks = Vec::new();
    for worker in 0..32 {
        let up = up.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = connect::<Full<Bytes>>(&up).await;
            for i in 0..20 {
                let body = Bytes::from(format!("worker {worker} request {i}"));
                let response = conn.send(&up, "POST", "/sink", Full::new(body)).await;
                assert_eq!(response.status(), StatusCode::OK);
                response.into_body().collect().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let requests = up.wait_for_requests(640, WAIT).await;
    assert_eq!(requests.len(), 640);
    assert_eq!(up.connections(), 32);
    assert!(requests.iter().all(|r| r.body.complete));
}

#[tokio::test]
async fn a_body_cut_short_is_recorded_as_incomplete() {
    let up = Upstream::start(UpstreamKind::Plain);
    let mut tcp = TcpStream::connect(up.addr()).await.unwrap();
    tcp.write_all(b"POST /sink HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nonly ten b")
        .await
        .unwrap();
    tcp.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = tcp.read_to_end(&mut rest).await;
    let requests = up.wait_for_requests(1, WAIT).await;
    assert!(!requests[0].body.complete);
    assert_eq!(requests[0].body.bytes.as_deref(), Some(&b"only ten b"[..]));
}

#[tokio::test]
#[should_panic(expected = "upstream recorded 0 of 1 requests")]
async fn waiting_for_requests_that_never_come_fails() {
    let up = Upstream::start(UpstreamKind::Plain);
    up.wait_for_requests(1, Duration::from_millis(50)).await;
}

#[tokio::test]
async fn pki_writes_pem_files_and_serves_extra_names() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Arc::new(TestPki::with_names(dir.path(), &["api.openai.com"]));
    for file in ["ca.crt", "intermediate.crt", "server.crt", "server.key"] {
        assert!(dir.path().join(file).is_file(), "{file}");
    }
    let server_pem = std::fs::read_to_string(pki.server_cert_path()).unwrap();
    assert_eq!(
        server_pem.matches("BEGIN CERTIFICATE").count(),
        2,
        "leaf + intermediate"
    );
    let client = pki.issue_client("agent-1", "agent-1", Some("spiffe://slapenir/agent-1"));
    assert!(client.cert_path.is_file() && client.key_path.is_file());
    assert_eq!(client.chain.len(), 2);

    let up = Upstream::start_with_pki(UpstreamKind::Tls, pki.clone());
    for (name, ok) in [
        ("api.openai.com", true),
        ("127.0.0.1", true),
        ("other.example", false),
    ] {
        let tcp = TcpStream::connect(up.addr()).await.unwrap();
        let connector = pki.connector(None, &[ALPN_HTTP11]);
        let result = connector.connect(name.try_into().unwrap(), tcp).await;
        assert_eq!(result.is_ok(), ok, "{name}");
    }
}

/// A client certificate from the PKI passes a server that requires one, and its identity
/// arrives intact: what the mTLS listener tests will rely on.
#[tokio::test]
async fn issued_client_certificate_authenticates_to_an_mtls_server() {
    use tokio_rustls::rustls::server::WebPkiClientVerifier;
    use tokio_rustls::rustls::{RootCertStore, ServerConfig};

    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let client = pki.issue_client("agent", "agent-1", Some("spiffe://slapenir/agent-1"));
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca_der()).unwrap();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), common::pki::provider())
            .build()
            .unwrap();
    let config = ServerConfig::builder_with_provider(common::pki::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(pki.server().chain.clone(), pki.server().key())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.unwrap();
        let peer = tls.get_ref().1.peer_certificates().unwrap().to_vec();
        peer.len()
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = pki.connector(Some(&client), &[]);
    let mut tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    tls.flush().await.unwrap();
    assert_eq!(server.await.unwrap(), 2, "client sent leaf + intermediate");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any chunking of a body gives the needle counts of counting the whole body at once.
    #[test]
    fn needle_counts_do_not_depend_on_chunking(
        body in prop::collection::vec(prop::sample::select(b"ab-".to_vec()), 0..300),
        splits in prop::collection::vec(1usize..20, 1..20),
    ) {
        let needles: [&[u8]; 3] = [b"ab", b"aba", b"b-ab-"];
        let mut chunked = BodyRecorder::new(needles);
        let mut rest = &body[..];
        for size in splits.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at((*size).min(rest.len()));
            chunked.feed(piece);
            rest = tail;
        }
        let got = chunked.finish(true);
        let naive: Vec<u64> = needles
            .iter()
            .map(|n| body.windows(n.len()).filter(|w| w == n).count() as u64)
            .collect();
        prop_assert_eq!(got.needle_counts, naive);
        prop_assert_eq!(got.crc32, crc32(&body));
        prop_assert_eq!(got.bytes, Some(body));
    }
}
