//! Gateway-wide overload protection (`limits:` connections, fd_reserve, header_bytes, headers
//! and the timeouts), end to end: the real gateway binary on a plain listener (a TLS one for
//! HTTP/2), raw sockets as the misbehaving agent, a real upstream. Each case runs with the limit set low and with it
//! set out of reach, so each shows that the bound is the limit's doing.
use crate::common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::gateway::{mtls_listener, GatewayProcess};
use common::upstream::{Upstream, UpstreamKind};

/// A gateway in front of `up` with `limits` (YAML lines under `limits:`, indented by 2).
fn gateway(up: &Upstream, limits: &str) -> GatewayProcess {
    let config = format!(
        "listeners:\n  - name: agents\n    address: {{listen}}\n\
         admin:\n  address: {{admin}}\n\
         upstreams:\n  api:\n    url: {}\n\
         routes:\n  - host: api.test\n    upstream: api\n\
         limits:\n{limits}",
        up.url()
    );
    GatewayProcess::start(&config, &[])
}

fn connect(gw: &GatewayProcess) -> TcpStream {
    let s = TcpStream::connect(gw.listen).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Reads until the peer closes or `within` passes: (bytes, closed, when it ended).
fn read_until_closed(s: &mut TcpStream, within: Duration) -> (Vec<u8>, bool, Instant) {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (out, false, Instant::now());
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (out, true, Instant::now()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (out, false, Instant::now())
            }
            Err(_) => return (out, true, Instant::now()),
        }
    }
}

fn status_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// One complete request on a fresh connection: the response head and body as text.
fn get(gw: &GatewayProcess, path: &str) -> String {
    let mut s = connect(gw);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let (out, _, _) = read_until_closed(&mut s, Duration::from_secs(10));
    String::from_utf8_lossy(&out).into_owned()
}

fn admin_status(gw: &GatewayProcess) -> serde_json::Value {
    let mut s = TcpStream::connect(gw.admin).unwrap();
    write!(
        s,
        "GET /status HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let (out, _, _) = read_until_closed(&mut s, Duration::from_secs(10));
    let text = String::from_utf8_lossy(&out);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("status JSON: {e}: {text}"))
}

/// Polls `/status` until `f` holds (a readiness wait, bounded).
fn wait_status(gw: &GatewayProcess, what: &str, f: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = admin_status(gw);
        if f(&s["gateway_limits"]) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {}", s["gateway_limits"]);
        // Poll interval of a deadline-bounded wait.
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn open_connections(gw: &GatewayProcess) -> u64 {
    admin_status(gw)["gateway_limits"]["connections_open"]
        .as_u64()
        .unwrap()
}

/// Beyond `connections`, a new connection gets 503 (with `Retry-After` and the refusal reason)
/// and is closed; those already open are untouched, and once one closes a new one is served.
#[test]
fn total_connections_are_capped() {
    let up = Upstream::start(UpstreamKind::Plain);
    let cases: &[(&str, u32, bool)] = &[("capped at 3", 3, true), ("out of reach", 1000, false)];
    for &(name, cap, shed) in cases {
        let gw = gateway(&up, &format!("  connections: {cap}\n"));
        // The start's readiness probe (a connection opened and closed) must be gone first, or
        // it takes one of the three places.
        wait_status(&gw, name, |s| s["connections_open"] == 0);
        let mut held: Vec<TcpStream> = (0..3).map(|_| connect(&gw)).collect();
        wait_status(&gw, name, |s| s["connections_open"] == 3);
        let answer = get(&gw, "/status/200");
        if shed {
            assert!(answer.starts_with("HTTP/1.1 503"), "{name}: {answer}");
            let lower = answer.to_ascii_lowercase();
            assert!(lower.contains("retry-after: 1\r\n"), "{name}: {answer}");
            assert!(
                lower.contains("x-slapenir-refusal: overloaded\r\n"),
                "{name}: {answer}"
            );
            let metrics = common_metrics(&gw);
            assert!(
                metrics.contains(
                    "slapenir_limited_total{client=\"gateway\",limit=\"total_connections\"} 1"
                ),
                "{name}: {metrics}"
            );
            // The held connections still work.
            let mut first = held.remove(0);
            write!(
                first,
                "GET /status/200 HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let (out, _, _) = read_until_closed(&mut first, Duration::from_secs(10));
            assert!(
                status_line(&out).starts_with("HTTP/1.1 200"),
                "{name}: {}",
                String::from_utf8_lossy(&out)
            );
            drop(first);
            wait_status(&gw, name, |s| s["connections_open"] == 2);
            drop(held);
            let again = get(&gw, "/status/200");
            assert!(again.starts_with("HTTP/1.1 200"), "{name}: {again}");
            assert!(gw.stdout().contains("\"limit\":\"total_connections\""));
        } else {
            assert!(answer.starts_with("HTTP/1.1 200"), "{name}: {answer}");
            drop(held);
        }
        let s = admin_status(&gw);
        assert_eq!(s["gateway_limits"]["connections_limit"], cap, "{name}");
        assert!(s["gateway_limits"]["fds_in_use"].as_u64().unwrap() > 0);
        assert!(s["gateway_limits"]["fds_limit"].as_u64().unwrap() > 0);
    }
}

fn common_metrics(gw: &GatewayProcess) -> String {
    let mut s = TcpStream::connect(gw.admin).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let (out, _, _) = read_until_closed(&mut s, Duration::from_secs(10));
    String::from_utf8_lossy(&out).into_owned()
}

/// With a low descriptor limit (set on the running process with `prlimit`), connections are
/// shed with 503 while fewer than `fd_reserve` descriptors remain: the process never runs out
/// (no EMFILE in its log), and once they close it serves again.
#[test]
fn descriptors_are_kept_in_reserve() {
    let up = Upstream::start(UpstreamKind::Plain);
    let gw = gateway(&up, "  fd_reserve: 64\n");
    let limit = 192;
    let ok = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", gw.pid()))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .unwrap();
    assert!(ok.success());
    wait_status(&gw, "limit seen", |s| s["fds_limit"] == limit);
    let mut held = Vec::new();
    let mut shed = 0;
    for _ in 0..limit {
        let mut s = connect(&gw);
        // A request on each: an answer proves it was admitted (or shed).
        write!(s, "GET /status/200 HTTP/1.1\r\nHost: api.test\r\n\r\n").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap_or(0);
        let line = status_line(&buf[..n]);
        if line.starts_with("HTTP/1.1 503") {
            shed += 1;
            if shed >= 5 {
                break;
            }
        } else {
            assert!(line.starts_with("HTTP/1.1 200"), "{line}");
            held.push(s);
        }
    }
    assert!(shed >= 5, "never shed: {} held", held.len());
    eprintln!("descriptors: {} connections held, then shed", held.len());
    let log = gw.stderr().to_ascii_lowercase();
    assert!(
        !log.contains("too many open files") && !log.contains("accept() failed"),
        "{log}"
    );
    drop(held);
    wait_status(&gw, "connections closed", |s| s["connections_open"] == 0);
    // The count of descriptors follows within a sampling period.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = get(&gw, "/status/200");
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "{answer}");
        // Poll interval of a deadline-bounded wait.
        std::thread::sleep(Duration::from_millis(50));
    }
    let metrics = common_metrics(&gw);
    assert!(
        metrics.contains("slapenir_limited_total{client=\"gateway\",limit=\"file_descriptors\"}"),
        "{metrics}"
    );
}

/// A request head over `header_bytes` or `headers` gets 431 (counted, audited), whether it
/// arrives at once or slowly; within the limits the same shape is served.
#[test]
fn request_heads_are_bounded() {
    let up = Upstream::start(UpstreamKind::Plain);
    let many = |n: usize| (0..n).map(|i| format!("x-h{i}: v\r\n")).collect::<String>();
    let huge = format!("x-big: {}\r\n", "a".repeat(100 * 1024));
    let cases: Vec<(&str, &str, String, bool, &str)> = vec![
        ("50 headers", "  headers: 20\n", many(50), false, "431"),
        (
            "50 headers, limit out of reach",
            "  headers: 256\n",
            many(50),
            false,
            "200",
        ),
        (
            "huge header",
            "  header_bytes: 64KiB\n",
            huge.clone(),
            false,
            "431",
        ),
        (
            "huge header, slowly",
            "  header_bytes: 64KiB\n",
            huge.clone(),
            true,
            "431",
        ),
        (
            "huge header, limit out of reach",
            "  header_bytes: 1000KiB\n",
            huge,
            false,
            "200",
        ),
    ];
    for (name, limits, headers, slowly, want) in cases {
        let gw = gateway(&up, limits);
        let mut s = connect(&gw);
        let req = format!(
            "GET /status/200 HTTP/1.1\r\nHost: api.test\r\n{headers}Connection: close\r\n\r\n"
        );
        let mut w = s.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let chunk = if slowly { 1024 } else { req.len() };
            for part in req.as_bytes().chunks(chunk) {
                if w.write_all(part).is_err() {
                    return;
                }
                if slowly {
                    // Pacing of a slow client, not synchronisation.
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
        let (out, _, _) = read_until_closed(&mut s, Duration::from_secs(20));
        let _ = writer.join();
        let line = status_line(&out);
        assert!(
            line.starts_with(&format!("HTTP/1.1 {want}")),
            "{name}: {line}"
        );
        if want == "431" {
            let metrics = common_metrics(&gw);
            let limit = if name.contains("headers") {
                "headers"
            } else {
                "header_bytes"
            };
            assert!(
                metrics.contains(&format!(
                    "slapenir_limited_total{{client=\"gateway\",limit=\"{limit}\"}} 1"
                )),
                "{name}: {metrics}"
            );
            assert!(
                gw.stdout().contains(&format!("\"limit\":\"{limit}\"")),
                "{name}"
            );
        }
    }
}

/// Slowloris, idle keep-alive, slow body, long body: each is cut near its bound (1 s or 2 s
/// here) and, with the bound out of reach, the same client is still connected at 4 s.
#[test]
fn timeouts_cut_slow_clients() {
    let up = Upstream::start(UpstreamKind::Plain);
    type Client = fn(&mut TcpStream) -> std::thread::JoinHandle<()>;
    fn nothing(_: &mut TcpStream) -> std::thread::JoinHandle<()> {
        std::thread::spawn(|| {})
    }
    fn trickle_head(s: &mut TcpStream) -> std::thread::JoinHandle<()> {
        let mut w = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = w.write_all(b"GET /status/200 HTTP/1.1\r\nHost: api.test\r\n");
            for _ in 0..200 {
                if w.write_all(b"x").is_err() {
                    return;
                }
                // Pacing of a slowloris client: a byte every 100 ms.
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    }
    fn after_one_request(s: &mut TcpStream) -> std::thread::JoinHandle<()> {
        write!(s, "GET /status/200 HTTP/1.1\r\nHost: api.test\r\n\r\n").unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        assert!(status_line(&buf[..n]).starts_with("HTTP/1.1 200"));
        std::thread::spawn(|| {})
    }
    fn paused_body(s: &mut TcpStream) -> std::thread::JoinHandle<()> {
        write!(
            s,
            "POST /sink?case=paused HTTP/1.1\r\nHost: api.test\r\nContent-Length: 100\r\n\r\n0123456789"
        )
        .unwrap();
        std::thread::spawn(|| {})
    }
    fn trickled_body(s: &mut TcpStream) -> std::thread::JoinHandle<()> {
        let mut w = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = write!(
                w,
                "POST /sink?case=trickled HTTP/1.1\r\nHost: api.test\r\nContent-Length: 100\r\n\r\n"
            );
            for _ in 0..100 {
                if w.write_all(b"z").is_err() {
                    return;
                }
                // Pacing: a byte every 300 ms, inside the 1 s body idle bound.
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    }
    let far = "  idle_timeout: 60s\n  head_timeout: 60s\n  body_idle_timeout: 60s\n  request_timeout: 60s\n";
    let cases: &[(&str, &str, Client, Duration, &str)] = &[
        (
            "slowloris",
            "  head_timeout: 1s\n",
            trickle_head,
            Duration::from_secs(1),
            "head_timeout",
        ),
        (
            "idle connection",
            "  idle_timeout: 1s\n",
            nothing,
            Duration::from_secs(1),
            "idle_timeout",
        ),
        (
            "idle keep-alive",
            "  idle_timeout: 1s\n",
            after_one_request,
            Duration::from_secs(1),
            "idle_timeout",
        ),
        (
            "paused body",
            "  body_idle_timeout: 1s\n",
            paused_body,
            Duration::from_secs(1),
            "body_idle_timeout",
        ),
        (
            "trickled body",
            "  body_idle_timeout: 1s\n  request_timeout: 2s\n",
            trickled_body,
            Duration::from_secs(2),
            "request_timeout",
        ),
    ];
    for &(name, limits, client, bound, limit) in cases {
        for bounded in [true, false] {
            let gw = gateway(&up, if bounded { limits } else { far });
            let mut s = connect(&gw);
            let started = Instant::now();
            let pacer = client(&mut s);
            let (out, closed, at) = read_until_closed(&mut s, Duration::from_secs(4));
            let took = at - started;
            if bounded {
                assert!(closed, "{name}: still open after {took:?}");
                assert!(
                    took >= bound - Duration::from_millis(50)
                        && took < bound + Duration::from_millis(2500),
                    "{name}: closed after {took:?}, bound {bound:?}"
                );
                let metrics = common_metrics(&gw);
                assert!(
                    metrics.contains(&format!(
                        "slapenir_limited_total{{client=\"gateway\",limit=\"{limit}\"}} 1"
                    )),
                    "{name}: {metrics}"
                );
                let line = status_line(&out);
                if name.contains("body") || name == "slowloris" {
                    assert!(
                        line.is_empty() || line.starts_with("HTTP/1.1 408"),
                        "{name}: {line}"
                    );
                }
            } else {
                assert!(
                    !closed,
                    "{name}: closed after {took:?} with the bound out of reach"
                );
            }
            if name.contains("body") {
                // The upstream never received a completed request.
                let complete = up
                    .requests()
                    .iter()
                    .any(|r| r.path.starts_with("/sink") && r.body.complete);
                assert!(!complete, "{name}: the upstream got a whole body");
            }
            drop(s);
            let _ = pacer.join();
        }
    }
}

/// A client that stops reading a large response is disconnected at `send_timeout` once the
/// socket buffers are full; the gateway's memory stays bounded meanwhile.
#[test]
fn slow_readers_are_disconnected() {
    let up = Upstream::start(UpstreamKind::Plain);
    for (name, limits, cut) in [
        ("bounded", "  send_timeout: 1s\n", true),
        ("out of reach", "  send_timeout: 60s\n", false),
    ] {
        let gw = gateway(&up, limits);
        let mut s = connect(&gw);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET /big?bytes=2000000000 HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut buf = [0u8; 1024];
        assert!(s.read(&mut buf).unwrap() > 0);
        let before = gw.rss_kib();
        // Stop reading: the gateway's writes stall once the socket buffers fill.
        let started = Instant::now();
        let deadline = started + Duration::from_secs(6);
        let mut open = open_connections(&gw);
        while open > 0 && Instant::now() < deadline {
            // Poll interval of a deadline-bounded wait.
            std::thread::sleep(Duration::from_millis(50));
            open = open_connections(&gw);
        }
        let took = started.elapsed();
        let after = gw.rss_kib();
        eprintln!("{name}: open {open} after {took:?}; RSS {before} KiB -> {after} KiB");
        if cut {
            assert_eq!(open, 0, "{name}: still connected after {took:?}");
            assert!(took >= Duration::from_millis(900), "{name}: {took:?}");
            let metrics = common_metrics(&gw);
            assert!(
                metrics.contains(
                    "slapenir_limited_total{client=\"gateway\",limit=\"send_timeout\"} 1"
                ),
                "{name}: {metrics}"
            );
        } else {
            assert_eq!(open, 1, "{name}: disconnected with the bound out of reach");
        }
        assert!(
            after < before + 32 * 1024,
            "{name}: RSS {before} -> {after} KiB"
        );
    }
}

/// Rewrites the `limits:` section of the gateway's config, sends SIGHUP, and waits until
/// `/status` shows `connections` as the new limit.
fn reload_limits(gw: &GatewayProcess, limits: &str, connections: u64) {
    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    let (head, _) = text.split_once("limits:\n").unwrap();
    std::fs::write(&gw.config_path, format!("{head}limits:\n{limits}")).unwrap();
    gw.signal("HUP");
    wait_status(gw, "the reload", |s| {
        s["connections_limit"].as_u64() == Some(connections)
    });
}

/// One keep-alive request on an open connection: the response head.
fn request_on(s: &mut TcpStream, extra_headers: &str) -> String {
    write!(
        s,
        "GET /status/200 HTTP/1.1\r\nHost: api.test\r\n{extra_headers}\r\n"
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A reload changes the gateway-wide limits for what comes next and cuts nothing: with
/// `connections: 3` and three connections held, a fourth is shed; after a reload to 5 it is
/// served; after a reload down to 1 (and `headers: 2`) the three held connections are still
/// served (over the new limit, never cut), their next request is held to the new header count
/// (`431`), and a new connection is shed.
#[test]
fn a_reload_changes_the_gateway_limits_and_cuts_nothing() {
    let up = Upstream::start(UpstreamKind::Plain);
    let gw = gateway(&up, "  connections: 3\n");
    wait_status(&gw, "the readiness probe gone", |s| {
        s["connections_open"] == 0
    });
    let mut held: Vec<TcpStream> = (0..3).map(|_| connect(&gw)).collect();
    for s in &mut held {
        let answer = request_on(s, "");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let shed = get(&gw, "/status/200");
    assert!(shed.starts_with("HTTP/1.1 503"), "{shed}");

    reload_limits(&gw, "  connections: 5\n", 5);
    let served = get(&gw, "/status/200");
    assert!(served.starts_with("HTTP/1.1 200"), "raised: {served}");

    reload_limits(&gw, "  connections: 1\n  headers: 2\n", 1);
    for s in &mut held {
        let answer = request_on(s, "X-One: 1\r\n");
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "held, lowered: {answer}"
        );
    }
    let shed = get(&gw, "/status/200");
    assert!(shed.starts_with("HTTP/1.1 503"), "lowered: {shed}");
    assert_eq!(
        admin_status(&gw)["gateway_limits"]["connections_open"],
        3,
        "the held connections are all still open"
    );
    let over = request_on(&mut held[0], "X-One: 1\r\nX-Two: 2\r\n");
    assert!(over.starts_with("HTTP/1.1 431"), "headers lowered: {over}");
}

/// An agent's idle HTTP/2 connection (TLS, `h2` by ALPN: Pingora runs the connection, not the
/// HTTP/1 loop that applies `idle_timeout` to heads) is closed `idle_timeout` after its last
/// stream ended; with the bound out of reach it stays open. Spoken by hand over rustls: the
/// preface, an empty SETTINGS, one `GET` whose answer is read to its end, then nothing.
#[test]
fn idle_http2_connections_are_closed_at_idle_timeout() {
    use std::sync::Arc;
    let up = Upstream::start(UpstreamKind::Plain);
    for (limits, bounded) in [
        ("  idle_timeout: 1s\n", true),
        ("  idle_timeout: 60s\n", false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        slapenir::pki::init(&certs, slapenir::pki::InitOptions::default()).unwrap();
        let config = format!(
            "{}admin:\n  address: {{admin}}\n\
             upstreams:\n  api:\n    url: {}\n\
             routes:\n  - host: api.test\n    upstream: api\n\
             limits:\n{limits}",
            mtls_listener(&certs),
            up.url(),
        );
        let gw = GatewayProcess::start_in(dir, &config, &[]);
        let mut cfg = (*common::client::rustls_client(
            &certs.join("root_ca.crt"),
            Some((&certs.join("agent-1.crt"), &certs.join("agent-1.key"))),
        ))
        .clone();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
        let sock = connect(&gw);
        // Reads wake up this often to look at their deadline.
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut tls = rustls::StreamOwned::new(conn, sock);
        tls.write_all(&h2_get("/status/200", "api.test")).unwrap();
        // The answer's frames, up to the one that ends stream 1.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (kind, flags, stream) = h2_frame(&mut tls, deadline).expect("the answer");
            if stream == 1 && kind <= 1 && flags & 0x1 != 0 {
                break;
            }
        }
        assert_eq!(tls.conn.alpn_protocol(), Some(&b"h2"[..]));
        let ended = Instant::now();
        let closed = loop {
            match h2_frame(&mut tls, ended + Duration::from_secs(4)) {
                Ok(_) => continue,
                Err(closed) => break closed,
            }
        };
        let took = ended.elapsed();
        if bounded {
            assert!(closed, "still open after {took:?}");
            assert!(
                took >= Duration::from_millis(950) && took < Duration::from_millis(3500),
                "closed after {took:?}, bound 1 s"
            );
        } else {
            assert!(!closed, "closed after {took:?} with the bound out of reach");
        }
    }
}

/// The client preface, an empty SETTINGS frame and a `GET` of `path` on stream 1 (HPACK:
/// `:method GET`, `:scheme https` indexed; `:path` and `:authority` literal, not indexed).
fn h2_get(path: &str, authority: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x87];
    for (index, value) in [(4u8, path), (1, authority)] {
        block.push(index);
        block.push(u8::try_from(value.len()).unwrap());
        block.extend_from_slice(value.as_bytes());
    }
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    let len = u32::try_from(block.len()).unwrap().to_be_bytes();
    // HEADERS, END_STREAM | END_HEADERS, stream 1.
    out.extend_from_slice(&[len[1], len[2], len[3], 0x1, 0x5, 0, 0, 0, 1]);
    out.extend_from_slice(&block);
    out
}

/// Reads one HTTP/2 frame before `deadline`: its type, flags and stream. `Err(true)`: the
/// connection was closed; `Err(false)`: nothing came in time.
fn h2_frame(r: &mut impl Read, deadline: Instant) -> Result<(u8, u8, u32), bool> {
    let mut head = [0u8; 9];
    read_all_by(r, &mut head, deadline)?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    read_all_by(r, &mut payload, deadline)?;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Ok((head[3], head[4], stream))
}

fn read_all_by(r: &mut impl Read, buf: &mut [u8], deadline: Instant) -> Result<(), bool> {
    let mut at = 0;
    while at < buf.len() {
        if Instant::now() >= deadline {
            return Err(false);
        }
        match r.read(&mut buf[at..]) {
            Ok(0) => return Err(true),
            Ok(n) => at += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Err(true),
        }
    }
    Ok(())
}
