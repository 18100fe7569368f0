//! End-to-end tests of the gateway core through real sockets: a real `slapenir` process, real
//! upstream servers (plain HTTP/1.1, TLS with a test CA, HTTP/2 over TLS, h2c) that record what
//! they receive, and real clients (`curl`, hyper, a raw TCP writer).
use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::client::read_head;
use common::gateway::GatewayProcess;
use common::upstream::{reversed, BodyRecorder, Upstream, UpstreamKind};
use common::wait::wait_for;

const DUMMY: &str = "sk-dummy-openai";
/// Longer than its dummy, so every rewrite changes lengths (the harder framing case).
const REAL: &str = "sk-real-OPENAI-7f3a9c1e5b2d4f6a8c0e";
const GH_DUMMY: &str = "ghp-dummy-github";
const GH_REAL: &str = "ghp_REALgithubToken0123456789abcdef";
const MISSING_DUMMY: &str = "sk-dummy-missing";
/// These tests exercise the rewriter in every channel: their credentials are swapped in every
/// place (the default is the `Authorization` header only; tests/least_privilege.rs covers it).
const SWAP_EVERYWHERE: &str = "    swap_in: { headers: [authorization, x-api-key, x-token], query: [key, k, t], path: true, body: [\"*/*\"] }\n";

/// A gateway in front of `up`, with a second upstream (`other`, never reachable) owning the
/// GitHub credential, and a credential whose real value is unset.
fn gateway_for(up: &Upstream) -> GatewayProcess {
    let dir = tempfile::tempdir().unwrap();
    let (url, extra) = match up.kind() {
        UpstreamKind::Plain => (up.url(), String::new()),
        UpstreamKind::H2c => (up.url(), "    http_version: \"2\"\n".to_string()),
        UpstreamKind::Tls | UpstreamKind::H2Tls => {
            let ca = dir.path().join("upstream-ca.crt");
            std::fs::copy(up.ca_path(), &ca).unwrap();
            // The test server listens on IPv4 only; its certificate has an IP SAN.
            let url = format!("https://127.0.0.1:{}", up.addr().port());
            (url, format!("    ca: {}\n", ca.display()))
        }
    };
    let config = format!(
        "listeners:\n  - name: agents\n    address: {{listen}}\n\
         admin:\n  address: {{admin}}\n\
         upstreams:\n  api:\n    url: {url}\n{extra}\
         \x20 other:\n    url: http://127.0.0.1:9\n\
         credentials:\n\
         \x20 openai:\n    dummy: {DUMMY}\n    real: {{ env: TEST_OPENAI_KEY }}\n    upstreams: [api]\n{SWAP_EVERYWHERE}\
         \x20 github:\n    dummy: {GH_DUMMY}\n    real: {{ env: TEST_GITHUB_KEY }}\n    upstreams: [other]\n{SWAP_EVERYWHERE}\
         \x20 missing:\n    dummy: {MISSING_DUMMY}\n    real: {{ env: TEST_SURELY_UNSET_KEY }}\n    upstreams: [api]\n\
         routes:\n\
         \x20 - host: api.test\n    upstream: api\n\
         \x20 - host: other.test\n    upstream: other\n\
         \x20 - host: ws.test\n    upstream: api\n    websocket: true\n"
    );
    GatewayProcess::start_in(
        dir,
        &config,
        &[("TEST_OPENAI_KEY", REAL), ("TEST_GITHUB_KEY", GH_REAL)],
    )
}

/// Runs curl against the gateway with `Host: host`; returns (status, headers+body as text).
fn curl(gw: &GatewayProcess, host: &str, args: &[&str], path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "30", "-H"])
        .arg(format!("Host: {host}"))
        .args(args)
        .arg(format!("{}{}", gw.url(), path))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Nothing the gateway printed — audit log or process log — holds a real secret.
fn assert_no_secret_in_output(gw: &GatewayProcess) {
    let all = format!("{}{}", gw.stdout(), gw.stderr());
    for secret in [REAL, GH_REAL] {
        assert!(
            !all.contains(secret),
            "a real secret leaked into the gateway's output"
        );
    }
}

const KINDS: [UpstreamKind; 4] = [
    UpstreamKind::Plain,
    UpstreamKind::Tls,
    UpstreamKind::H2Tls,
    UpstreamKind::H2c,
];

#[test]
fn upstream_receives_the_real_secret_in_headers_query_and_body() {
    for kind in KINDS {
        let up = Upstream::start(kind);
        let gw = gateway_for(&up);
        let auth = format!("Authorization: Bearer {DUMMY}");
        let custom = format!("X-Api-Key: {DUMMY}");
        let body = format!("payload {DUMMY} end");
        let (status, seen) = curl(
            &gw,
            "api.test",
            &["-H", &auth, "-H", &custom, "--data-binary", &body],
            &format!("/echo?key={DUMMY}&x=1"),
        );
        assert_eq!(status, 200, "{kind:?}: {seen}");
        let req = &up.wait_for_requests_blocking(1, Duration::from_secs(10))[0];
        assert_eq!(
            req.header_str("authorization").unwrap(),
            format!("Bearer {REAL}"),
            "{kind:?}"
        );
        assert_eq!(req.header_str("x-api-key").unwrap(), REAL, "{kind:?}");
        assert_eq!(req.path, format!("/echo?key={REAL}&x=1"), "{kind:?}");
        assert_eq!(
            req.body.text().unwrap(),
            format!("payload {REAL} end"),
            "{kind:?}"
        );
        assert!(req.body.complete);
        // The gateway asks for identity encoding and never forwards proxy credentials.
        assert_eq!(
            req.header_str("accept-encoding").as_deref(),
            Some("identity")
        );
        // The echo comes back with every real secret turned back into its dummy.
        assert!(
            !seen.contains(REAL),
            "{kind:?}: the client saw the real secret"
        );
        assert!(
            seen.contains(&format!("Bearer {DUMMY}")),
            "{kind:?}: {seen}"
        );
        assert!(
            seen.contains(&format!("payload {DUMMY} end")),
            "{kind:?}: {seen}"
        );
        assert_no_secret_in_output(&gw);
    }
}

#[test]
fn absolute_form_requests_go_upstream_in_origin_form() {
    let up = Upstream::start(UpstreamKind::Plain);
    let gw = gateway_for(&up);
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "30", "-x"])
        .arg(gw.url())
        .arg(format!("http://api.test/echo?k={DUMMY}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let req = &up.wait_for_requests_blocking(1, Duration::from_secs(10))[0];
    assert_eq!(req.uri.to_string(), format!("/echo?k={REAL}"));
    assert_eq!(req.header_str("host").unwrap(), up.addr().to_string());
    assert!(!text.contains(REAL));
}

/// A chunked upload whose chunks are 1 to 7 bytes long, so that the dummy is cut at every
/// offset; each chunk is written and flushed on its own with `TCP_NODELAY`.
#[test]
fn chunked_upload_with_the_dummy_straddling_every_chunk_boundary() {
    let up = Upstream::start(UpstreamKind::Plain);
    up.count_needles([REAL.as_bytes(), DUMMY.as_bytes()]);
    let gw = gateway_for(&up);
    for size in 1..=7usize {
        let mut body = Vec::new();
        for pad in 0..DUMMY.len() {
            body.extend(std::iter::repeat_n(b'.', pad));
            body.extend_from_slice(DUMMY.as_bytes());
        }
        let mut s = TcpStream::connect(gw.listen).unwrap();
        s.set_nodelay(true).unwrap();
        s.write_all(b"POST /sink HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            .unwrap();
        for chunk in body.chunks(size) {
            s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .unwrap();
            s.write_all(chunk).unwrap();
            s.write_all(b"\r\n").unwrap();
            s.flush().unwrap();
        }
        s.write_all(b"0\r\n\r\n").unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(
            resp.starts_with("HTTP/1.1 200"),
            "chunk size {size}: {resp}"
        );
        let reqs = up.wait_for_requests_blocking(size, Duration::from_secs(10));
        let rec = &reqs[size - 1].body;
        assert!(rec.complete);
        assert_eq!(
            rec.needle_counts,
            vec![DUMMY.len() as u64, 0],
            "chunk size {size}"
        );
        assert_eq!(
            rec.len as usize,
            body.len() + DUMMY.len() * (REAL.len() - DUMMY.len())
        );
    }
    assert_no_secret_in_output(&gw);
}

#[test]
fn responses_never_carry_the_real_secret() {
    let text = format!("before {REAL} middle {REAL}{REAL} after");
    let t = reversed("text", &text);
    let cases: Vec<(&str, String, String)> = vec![
        (
            "header",
            format!("/echo-header?name=x-token&{}", reversed("value", REAL)),
            format!("x-token: {DUMMY}"),
        ),
        (
            "location and cookie",
            format!(
                "/redirect?{}",
                reversed("to", &format!("https://x.test/cb?k={REAL}"))
            ),
            format!("cb?k={DUMMY}"),
        ),
        (
            "plain body",
            format!("/body?{t}"),
            text.replace(REAL, DUMMY),
        ),
        (
            "long body",
            format!("/body?{t}&len=100000"),
            format!("middle {DUMMY}{DUMMY} after"),
        ),
        (
            "chunked body",
            format!("/chunked?{t}&parts=9"),
            text.replace(REAL, DUMMY),
        ),
        (
            "sse",
            format!("/sse?n=3&interval_ms=1&{}", reversed("text", REAL)),
            format!("data: {DUMMY} 2"),
        ),
        ("gzip", format!("/gzip?{t}"), text.replace(REAL, DUMMY)),
        (
            "deflate",
            format!("/deflate?{t}"),
            text.replace(REAL, DUMMY),
        ),
        (
            "raw deflate",
            format!("/deflate?raw=1&{t}"),
            text.replace(REAL, DUMMY),
        ),
        ("brotli", format!("/br?{t}"), text.replace(REAL, DUMMY)),
        ("zstd", format!("/zstd?{t}"), text.replace(REAL, DUMMY)),
        (
            "gzip sse",
            format!("/sse?n=2&interval_ms=1&gzip=1&{}", reversed("text", REAL)),
            format!("data: {DUMMY} 1"),
        ),
    ];
    for kind in KINDS {
        let up = Upstream::start(kind);
        let gw = gateway_for(&up);
        for (name, path, want) in &cases {
            let (status, seen) = curl(&gw, "api.test", &[], path);
            assert!(status == 200 || status == 302, "{kind:?} {name}: {seen}");
            assert!(
                !seen.contains(REAL),
                "{kind:?} {name}: real secret reached the client:\n{seen}"
            );
            assert!(
                seen.contains(want.as_str()),
                "{kind:?} {name}: `{want}` not in:\n{seen}"
            );
            assert!(
                !seen.to_ascii_lowercase().contains("content-encoding"),
                "{kind:?} {name}: a compressed body was passed through"
            );
        }
        assert_no_secret_in_output(&gw);
    }
}

#[test]
fn refusals() {
    let up = Upstream::start(UpstreamKind::Plain);
    let gw = gateway_for(&up);
    // One case a line (rustfmt would spread each over eight).
    #[rustfmt::skip]
    let cases: Vec<(&str, &str, Vec<String>, String, u16, &str)> = vec![
        ("dummy bound elsewhere, header", "api.test", vec!["-H".into(), format!("X-Token: {GH_DUMMY}")], "/echo".into(), 403, "credential `github` may not be sent to upstream `api`"),
        ("dummy bound elsewhere, query", "api.test", vec![], format!("/echo?t={GH_DUMMY}"), 403, "credential `github`"),
        ("dummy bound elsewhere, cookie", "api.test", vec!["-H".into(), format!("Cookie: a=1; t={GH_DUMMY}")], "/echo".into(), 403, "credential `github`"),
        ("no route", "evil.test", vec![], "/echo".into(), 403, "no route for host `evil.test`"),
        ("missing secret", "api.test", vec!["-H".into(), format!("Authorization: Bearer {MISSING_DUMMY}")], "/echo".into(), 503, "credential `missing` is unavailable on this gateway"),
        ("dot segments", "api.test", vec!["--path-as-is".into()], "/a/../echo".into(), 400, "dot segments"),
        ("compressed with an unknown coding", "api.test", vec![], "/echo-header?name=content-encoding&value=compress".into(), 502, "the upstream sent a body the gateway cannot scan"),
        ("upgrade on a route without websocket", "api.test", vec!["-H".into(), "Connection: Upgrade".into(), "-H".into(), "Upgrade: websocket".into(), "-H".into(), "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==".into(), "-H".into(), "Sec-WebSocket-Version: 13".into()], "/echo".into(), 403, "upgrades (WebSocket) are not allowed"),
    ];
    for (name, host, args, path, status, message) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (got, text) = curl(&gw, host, &args, path);
        assert_eq!(got, *status, "{name}: {text}");
        assert!(text.contains(message), "{name}: `{message}` not in {text}");
        assert!(!text.contains(REAL) && !text.contains(GH_REAL), "{name}");
        // The agent learns which credential is missing, never where its value comes from.
        assert!(!text.contains("TEST_SURELY_UNSET_KEY"), "{name}: {text}");
    }
    // Only the request whose *answer* was refused (the compressed one) reached the upstream.
    let reached: Vec<String> = up.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        reached,
        vec!["/echo-header?name=content-encoding&value=compress".to_string()],
        "a refused request reached the upstream"
    );
    let audit = gw.stdout_with_lines(cases.len());
    assert!(
        audit.contains("\"refusal\":\"credential_bound_elsewhere\""),
        "{audit}"
    );
    assert!(
        audit.contains("\"refused_credential\":\"github\""),
        "{audit}"
    );
    assert!(audit.contains("\"refusal\":\"no_route\""));
    assert!(audit.contains("\"refusal\":\"credential_unavailable\""));
    let metrics = ureq_get(&format!("http://{}/metrics", gw.admin));
    assert!(
        metrics.contains("slapenir_refusals_total{reason=\"credential_bound_elsewhere\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("slapenir_refusals_total{reason=\"no_route\"} 1"));
    assert!(
        metrics.contains("slapenir_refusals_total{reason=\"compressed_body_refused\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains(REAL) && !metrics.contains(DUMMY));
    assert_no_secret_in_output(&gw);
}

/// A foreign dummy in a streamed body: the chunk holding it is never forwarded, the upstream
/// request is aborted (never completed), and the client gets 403.
#[test]
fn dummy_bound_elsewhere_in_the_body_aborts_the_request() {
    let up = Upstream::start(UpstreamKind::Plain);
    up.count_needles([GH_DUMMY.as_bytes(), GH_REAL.as_bytes()]);
    let gw = gateway_for(&up);
    let body = format!("{}{GH_DUMMY}{}", "a".repeat(100), "b".repeat(100));
    let (status, text) = curl(&gw, "api.test", &["--data-binary", &body], "/sink");
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("credential `github`"), "{text}");
    for r in up.requests() {
        assert!(!r.body.complete, "the upstream saw a complete request");
        assert_eq!(r.body.needle_counts, vec![0, 0]);
    }
    assert_no_secret_in_output(&gw);
}

fn ureq_get(url: &str) -> String {
    let out = Command::new("curl").args(["-s", url]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn health_endpoint_answers() {
    let up = Upstream::start(UpstreamKind::Plain);
    let gw = gateway_for(&up);
    assert_eq!(ureq_get(&format!("http://{}/healthz", gw.admin)), "ok\n");
}

/// Each SSE event reaches the client before the upstream sends the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_arrive_one_by_one() {
    use http_body_util::BodyExt;
    let up = Upstream::start(UpstreamKind::Plain);
    let gw = gateway_for(&up);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let req = http::Request::get(format!(
        "{}/sse?n=6&interval_ms=100&{}",
        gw.url(),
        reversed("text", REAL)
    ))
    .header("host", "api.test")
    .body(http_body_util::Empty::new())
    .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut buf = String::new();
    let mut arrivals = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            buf.push_str(&String::from_utf8_lossy(&data));
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                assert!(!event.contains(REAL));
                assert!(event.contains(DUMMY), "{event}");
                arrivals.push(Instant::now());
            }
        }
    }
    assert_eq!(arrivals.len(), 6);
    let sent = &up.sse_streams()[0].sent;
    for i in 0..5 {
        assert!(
            arrivals[i] < sent[i + 1],
            "event {i} arrived after event {} was sent",
            i + 1
        );
    }
}

/// 10,000 requests at concurrency 64 over kept-alive connections: zero errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_at_concurrency_64() {
    let up = Upstream::start(UpstreamKind::Plain);
    let gw = gateway_for(&up);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let url = format!(
        "{}/echo-header?name=x-t&{}",
        gw.url(),
        reversed("value", REAL)
    );
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let client = client.clone();
        let url = url.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 10_000 {
                let req = http::Request::get(&url)
                    .header("host", "api.test")
                    .header("authorization", format!("Bearer {DUMMY}"))
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap();
                match client.request(req).await {
                    Ok(resp) => {
                        let ok = resp.status() == 200
                            && resp.headers().get("x-t").map(|v| v.as_bytes())
                                == Some(DUMMY.as_bytes());
                        let status = resp.status();
                        use http_body_util::BodyExt;
                        let body = resp.into_body().collect().await;
                        if !ok {
                            let text = body
                                .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                                .unwrap_or_default();
                            errors.push(format!("status {status}: {text}"));
                        } else if let Err(e) = body {
                            errors.push(format!("body: {e:?}"));
                        }
                    }
                    Err(e) => errors.push(format!("{e:?}")),
                }
            }
            errors
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        errors.extend(t.await.unwrap());
    }
    assert!(errors.is_empty(), "{} failed: {errors:?}", errors.len());
    let reqs = up.requests();
    assert_eq!(reqs.len(), 10_000);
    assert!(reqs
        .iter()
        .all(|r| r.header_str("authorization").as_deref() == Some(&format!("Bearer {REAL}"))));
    // Upstream connections are reused: far fewer connections than requests.
    assert!(
        up.connections() < 1_000,
        "{} upstream connections",
        up.connections()
    );
}

const GIB: u64 = 1 << 30;

/// A 1 GiB upload with a dummy every 64 KiB streams through with the gateway's peak RSS under
/// 64 MiB. (Debug builds are too slow for a gigabyte; CI runs the suite in release.)
#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "a gigabyte through a debug build takes minutes; run with --release"
)]
fn gigabyte_request_body_in_bounded_memory() {
    let up = Upstream::start(UpstreamKind::Plain);
    up.count_needles([REAL.as_bytes(), DUMMY.as_bytes()]);
    let gw = gateway_for(&up);
    let mut child = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "600",
            "-T",
            "-",
            "-X",
            "POST",
            "-H",
            "Host: api.test",
        ])
        .arg(format!("{}/sink", gw.url()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        for chunk in common::upstream::big_body(GIB, DUMMY.as_bytes(), 65_536) {
            stdin.write_all(&chunk).unwrap();
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("bytes="), "{text}");
    let rec = &up.requests()[0].body;
    assert!(rec.complete);
    assert_eq!(rec.needle_counts, vec![GIB / 65_536, 0]);
    let peak = gw.peak_rss_kib();
    eprintln!("1 GiB upload: gateway peak RSS {peak} KiB");
    // Bounded, not proportional to the gigabyte: about 52 MiB at start; 72-80 MiB at peak
    // since request rules hold back public shapes (the token-shaped tail of every chunk is
    // held, so each chunk takes the copying path of the stream), under 64 MiB before.
    assert!(peak < 96 * 1024, "peak RSS {peak} KiB");
    assert_no_secret_in_output(&gw);
}

/// A 1 GiB download holding a real secret every 64 KiB reaches the client scrubbed, with the
/// gateway's peak RSS under 64 MiB.
#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "a gigabyte through a debug build takes minutes; run with --release"
)]
fn gigabyte_response_body_in_bounded_memory() {
    let up = Upstream::start(UpstreamKind::Plain);
    let gw = gateway_for(&up);
    let mut child = Command::new("curl")
        .args(["-s", "--max-time", "600", "-H", "Host: api.test"])
        .arg(format!(
            "{}/big?bytes={GIB}&{}&every=65536",
            gw.url(),
            reversed("needle", REAL)
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut rec = BodyRecorder::new([REAL.as_bytes(), DUMMY.as_bytes()]);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        rec.feed(&buf[..n]);
    }
    assert!(child.wait().unwrap().success());
    let body = rec.finish(true);
    assert_eq!(body.needle_counts, vec![0, GIB / 65_536]);
    let peak = gw.peak_rss_kib();
    eprintln!("1 GiB download: gateway peak RSS {peak} KiB");
    // Bounded, not proportional to the gigabyte: about 52 MiB at start; 72-80 MiB at peak
    // since request rules hold back public shapes (the token-shaped tail of every chunk is
    // held, so each chunk takes the copying path of the stream), under 64 MiB before.
    assert!(peak < 96 * 1024, "peak RSS {peak} KiB");
    assert_no_secret_in_output(&gw);
}

/// When every real value has its dummy's length, bodies keep their length: the upstream gets
/// the client's `Content-Length` (not chunked) and the client gets the upstream's.
/// Lengths match in every form the response is scrubbed of (literal, base64, percent, JSON
/// escapes: same length and the same number of punctuation bytes), so no swap changes a length.
#[test]
fn content_length_is_kept_when_lengths_match() {
    let same_len_real = "sk-REALLY-openai";
    let dummy = "sk-dummy-openai0";
    assert_eq!(same_len_real.len(), dummy.len());
    let up = Upstream::start(UpstreamKind::Plain);
    let config = format!(
        "listeners:\n  - name: agents\n    address: {{listen}}\n\
         admin:\n  address: {{admin}}\n\
         upstreams:\n  api:\n    url: {url}\n\
         credentials:\n  c:\n    dummy: \"{dummy}\"\n    real: {{ env: TEST_SAME_LEN }}\n    upstreams: [api]\n{SWAP_EVERYWHERE}\
         routes:\n  - host: api.test\n    upstream: api\n",
        url = up.url()
    );
    let gw = GatewayProcess::start(&config, &[("TEST_SAME_LEN", same_len_real)]);
    let body = format!("x={dummy}");
    let (status, seen) = curl(
        &gw,
        "api.test",
        &["--data-binary", &body],
        &format!(
            "/body?{}",
            reversed("text", &format!("got {same_len_real}"))
        ),
    );
    assert_eq!(status, 200, "{seen}");
    let req = &up.wait_for_requests_blocking(1, Duration::from_secs(10))[0];
    assert_eq!(req.header_str("content-length").as_deref(), Some("18"));
    assert!(req.header("transfer-encoding").is_none());
    assert_eq!(req.body.text().unwrap(), format!("x={same_len_real}"));
    let lower = seen.to_ascii_lowercase();
    assert!(lower.contains("content-length: 20"), "{seen}");
    assert!(seen.contains(&format!("got {dummy}")), "{seen}");
    assert!(!seen.contains(same_len_real));
}

/// Regression: removing `Content-Length: 0` from an empty response left an HTTP/1.1 response
/// with no framing at all, which the client reads until the connection closes — so the next
/// request on a kept-alive connection found it closed. Empty bodies and HEAD answers keep
/// their length now.
#[test]
fn regression_empty_responses_keep_their_framing_on_kept_alive_connections() {
    let up = Upstream::start(UpstreamKind::Plain);
    let gw = gateway_for(&up);
    let mut s = TcpStream::connect(gw.listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for (i, method) in ["GET", "HEAD", "GET"].iter().enumerate() {
        s.write_all(format!("{method} /status/200 HTTP/1.1\r\nHost: api.test\r\n\r\n").as_bytes())
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(
                s.read(&mut byte).unwrap(),
                1,
                "request {i} ({method}): connection closed"
            );
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        if *method == "GET" {
            assert!(
                head.contains("content-length: 0"),
                "request {i} ({method}): {head}"
            );
        }
    }
    assert_eq!(up.requests().len(), 3);
    assert_eq!(up.connections(), 1);
}

/// Regression: an upstream whose name does not resolve was answered `500` (an internal error)
/// because the resolution error had no source; it is the upstream that cannot be reached: `502`.
#[test]
fn regression_unresolvable_upstream_is_a_bad_gateway() {
    let config = "listeners:\n  - name: agents\n    address: {listen}\n\
                  admin:\n  address: {admin}\n\
                  upstreams:\n  api:\n    url: http://upstream.invalid\n\
                  routes:\n  - host: api.test\n    upstream: api\n";
    let gw = GatewayProcess::start(config, &[]);
    let (status, text) = curl(&gw, "api.test", &[], "/x");
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("the upstream could not be reached"), "{text}");
}

/// Data segments of each response on one kept-alive connection, read from the client socket's
/// `TCP_INFO` (`tcpi_data_segs_in`, which pure ACKs do not count). Python, because reading
/// `TCP_INFO` from Rust would take unsafe code.
const SEGMENT_CLIENT: &str = r#"
import socket, struct, sys
port, host, path, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
s = socket.create_connection(("127.0.0.1", port))
def data_segs_in():
    return struct.unpack_from("I", s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256), 152)[0]
for _ in range(n):
    before = data_segs_in()
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host)).encode())
    got = b""
    while not got.endswith(b"\r\n0\r\n\r\n"):
        d = s.recv(65536)
        if not d:
            sys.exit("connection closed after %r" % got)
        got += d
    head = got.split(b"\r\n\r\n")[0].decode().lower()
    print(data_segs_in() - before, "chunked" if "transfer-encoding: chunked" in head else "not-chunked")
"#;

/// Regression: Pingora flushes the head of a response without `Content-Length`, each chunk and
/// the last chunk on their own, so every small answer whose length the scrubber might change
/// reached the agent as three TCP segments (three system calls, three wake-ups of the client).
/// Once the end of such a response is in hand the gateway defers those flushes to the last
/// chunk, and the answer leaves in one write.
#[test]
fn regression_small_chunked_response_leaves_in_one_segment() {
    let up = Upstream::start(UpstreamKind::Plain);
    let gw = gateway_for(&up);
    let out = Command::new("python3")
        .args(["-c", SEGMENT_CLIENT])
        .arg(gw.listen.port().to_string())
        .args(["api.test", "/body?text=hello%20agent", "5"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(lines.len(), 5, "{lines:?}");
    for line in lines {
        assert_eq!(line, "1 chunked", "data segments per response: {line}");
    }
}

/// `SIGTERM` drains: a response streaming when it comes is finished whole, an idle kept-alive
/// connection is closed, no new connection is accepted, and the gateway exits (status 0) as soon
/// as the last connection has ended — not after its longest drain (20 s). (Before, the grace
/// period was 0: the streaming response was cut at once.)
#[test]
fn sigterm_finishes_the_responses_in_flight_then_exits() {
    let up = Upstream::start(UpstreamKind::Plain);
    let mut gw = gateway_for(&up);
    let connect = || {
        let s = TcpStream::connect(gw.listen).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        std::io::BufReader::new(s)
    };
    // An idle kept-alive connection, one request answered.
    let mut idle = connect();
    idle.get_mut()
        .write_all(b"GET /status/204 HTTP/1.1\r\nHost: api.test\r\n\r\n")
        .unwrap();
    assert_eq!(read_head(&mut idle).0, 204);
    // A response of 20 events 100 ms apart, its head read.
    let mut streaming = connect();
    streaming
        .get_mut()
        .write_all(b"GET /sse?n=20&interval_ms=100&text=tick HTTP/1.1\r\nHost: api.test\r\n\r\n")
        .unwrap();
    assert_eq!(read_head(&mut streaming).0, 200);

    gw.signal("TERM");
    wait_for(
        Duration::from_secs(1),
        Duration::from_millis(10),
        "the listener to close while the response streams",
        || TcpStream::connect(gw.listen).is_err().then_some(()),
        String::new,
    );
    let mut rest = Vec::new();
    streaming.read_to_end(&mut rest).unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert_eq!(
        rest.matches("tick").count(),
        20,
        "every event arrived: {rest}"
    );
    assert!(
        rest.ends_with("0\r\n\r\n"),
        "the response ended whole: {rest}"
    );
    let mut after = Vec::new();
    assert_eq!(
        idle.read_to_end(&mut after).unwrap_or(0),
        0,
        "the idle connection was closed unanswered"
    );
    let status = wait_for(
        Duration::from_secs(15),
        Duration::from_millis(20),
        "the gateway to exit once drained",
        || gw.try_exit(),
        || "still running".to_owned(),
    );
    assert!(status.success(), "{status:?}\n{}", gw.stderr());
    assert!(
        TcpStream::connect(gw.listen).is_err(),
        "nothing listens any more"
    );
    assert!(gw.stderr().contains("drained in"), "{}", gw.stderr());
}
