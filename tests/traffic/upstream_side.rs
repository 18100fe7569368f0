//! The upstream side of the gateway (issue #20 item 4), against a real gateway process, a real
//! DNS server and real upstream sockets, with curl as the client:
//!
//! - DNS answers are cached for their TTL: 50 requests send one query; a changed answer moves
//!   the traffic to the new address with no request failing; a slow name server never holds a
//!   request (the refresh runs off the request path).
//! - `max_connections` caps the connections the upstream sees at once; the excess waits, or gets
//!   `503 upstream_busy` after `connect_timeout`. Without the cap the same load opens 6.
//! - Keep-alive reuse is counted: 20 sequential requests are 1 new connection and 19 reused.
//! - A reload changes `max_connections` and the name servers without failing a request.
//! - A refused address moves the request to the next one the name resolves to.
//!
//! The DNS server and the upstream are written here (a few lines of std sockets each) because
//! the tests need what they count: queries and the instant each one arrived and was answered,
//! sockets open at once, and which of two addresses served a request.
use crate::common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::gateway::GatewayProcess;
use common::wait::wait_for;

// ---------------------------------------------------------------------------------------------
// A DNS server on 127.0.0.1:0 (UDP) answering one name.

#[derive(Default)]
struct DnsLog {
    /// For each `A` query: when it arrived and when its answer was sent.
    queries: Vec<(Instant, Instant)>,
}

struct DnsServer {
    addr: SocketAddr,
    answer: Arc<Mutex<(Ipv4Addr, u32)>>,
    /// Addresses answered after `answer`'s, with its TTL.
    more: Arc<Mutex<Vec<Ipv4Addr>>>,
    delay: Arc<Mutex<Duration>>,
    log: Arc<Mutex<DnsLog>>,
    stop: Arc<AtomicBool>,
}

impl DnsServer {
    /// Answers `A` queries for `name` with `ip` and `ttl`; `AAAA` with no record; anything else
    /// with NXDOMAIN.
    fn start(name: &str, ip: Ipv4Addr, ttl: u32) -> DnsServer {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let server = DnsServer {
            addr: sock.local_addr().unwrap(),
            answer: Arc::new(Mutex::new((ip, ttl))),
            more: Arc::default(),
            delay: Arc::default(),
            log: Arc::default(),
            stop: Arc::default(),
        };
        let (answer, more, delay, log, stop) = (
            server.answer.clone(),
            server.more.clone(),
            server.delay.clone(),
            server.log.clone(),
            server.stop.clone(),
        );
        let name: Vec<u8> = name
            .split('.')
            .flat_map(|l| std::iter::once(l.len() as u8).chain(l.bytes()))
            .chain([0])
            .collect();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let arrived = Instant::now();
                let q = &buf[..n];
                let qname_end = 12 + q[12..].iter().position(|&b| b == 0).unwrap() + 1;
                let qtype = u16::from_be_bytes([q[qname_end], q[qname_end + 1]]);
                let question = &q[12..qname_end + 4];
                let mut r = q[..2].to_vec();
                let known = q[12..qname_end].eq_ignore_ascii_case(&name);
                let (ip, ttl) = *answer.lock().unwrap();
                let ips: Vec<Ipv4Addr> = if known && qtype == 1 {
                    std::iter::once(ip)
                        .chain(more.lock().unwrap().iter().copied())
                        .collect()
                } else {
                    Vec::new()
                };
                let mut records = Vec::new();
                for ip in &ips {
                    records.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
                    records.extend_from_slice(&ttl.to_be_bytes());
                    records.extend_from_slice(&[0, 4]);
                    records.extend_from_slice(&ip.octets());
                }
                let rcode = if known { 0 } else { 3 };
                let count = u8::try_from(ips.len()).unwrap();
                r.extend_from_slice(&[0x81, 0x80 | rcode, 0, 1, 0, count]);
                r.extend_from_slice(&[0, 0, 0, 0]);
                r.extend_from_slice(question);
                r.extend_from_slice(&records);
                if qtype == 1 {
                    let d = *delay.lock().unwrap();
                    if !d.is_zero() {
                        std::thread::sleep(d);
                    }
                }
                let _ = sock.send_to(&r, from);
                if qtype == 1 {
                    log.lock().unwrap().queries.push((arrived, Instant::now()));
                }
            }
        });
        server
    }

    fn a_queries(&self) -> usize {
        self.log.lock().unwrap().queries.len()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// An HTTP/1.1 keep-alive upstream that counts the sockets open at once.

#[derive(Default)]
struct Counts {
    open: AtomicUsize,
    max_open: AtomicUsize,
    accepted: AtomicUsize,
    /// When each request's head arrived.
    requests: Mutex<Vec<Instant>>,
}

struct HttpUpstream {
    addr: SocketAddr,
    counts: Arc<Counts>,
}

impl HttpUpstream {
    /// Serves on `addr`: every request is answered `200` with body `name`, after `ms`
    /// milliseconds when the path is `/slow?ms=N`.
    fn start(addr: &str, name: &'static str) -> HttpUpstream {
        let listener = TcpListener::bind(addr).unwrap();
        let up = HttpUpstream {
            addr: listener.local_addr().unwrap(),
            counts: Arc::default(),
        };
        let counts = up.counts.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let counts = counts.clone();
                let now = counts.open.fetch_add(1, Ordering::SeqCst) + 1;
                counts.max_open.fetch_max(now, Ordering::SeqCst);
                counts.accepted.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    serve(conn, name, &counts);
                    counts.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        up
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn max_open(&self) -> usize {
        self.counts.max_open.load(Ordering::SeqCst)
    }

    fn request_times(&self) -> Vec<Instant> {
        self.counts.requests.lock().unwrap().clone()
    }
}

fn serve(mut conn: TcpStream, name: &str, counts: &Counts) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        counts.requests.lock().unwrap().push(Instant::now());
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        buf.drain(..head_end);
        let target = head.split(' ').nth(1).unwrap_or("/");
        if let Some(ms) = target.strip_prefix("/slow?ms=") {
            std::thread::sleep(Duration::from_millis(ms.parse().unwrap()));
        }
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n\r\n{name}",
            name.len()
        );
        if conn.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Gateway, client and metrics helpers.

fn config(upstream_url: &str, upstream_extra: &str, dns: &str) -> String {
    format!(
        "listeners:\n  - name: agents\n    address: {{listen}}\n\
         admin:\n  address: {{admin}}\n\
         upstreams:\n  api:\n    url: {upstream_url}\n{upstream_extra}\
         routes:\n  - host: api.test\n    upstream: api\n{dns}"
    )
}

/// A gateway whose upstream `api` is `api.test` on `up`'s port, resolved by `dns`.
fn dns_gateway(up: &HttpUpstream, dns: &DnsServer) -> GatewayProcess {
    let url = format!("http://api.test:{}", up.port());
    GatewayProcess::start(&config(&url, "", &dns_section(dns.addr)), &[])
}

fn dns_section(server: SocketAddr) -> String {
    format!("dns:\n  servers: [\"{server}\"]\n  min_ttl: 1s\n")
}

/// One curl process sending `n` sequential requests for `path` on one keep-alive connection;
/// returns each response as `(status, refusal header, body)`.
fn curl_batch(gw: &GatewayProcess, path: &str, n: usize) -> Vec<(u16, String, String)> {
    let url = format!("http://{}{path}", gw.listen);
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-H", "Host: api.test", "-w"])
        .arg("##%{http_code} %header{x-slapenir-refusal} %header{retry-after}\n");
    for _ in 0..n {
        cmd.arg(&url);
    }
    let out = cmd.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // Each response is `BODY##CODE REFUSAL RETRY\n`.
    let mut pieces = text.split("##");
    let mut body = pieces.next().unwrap_or("").to_string();
    let mut got = Vec::new();
    for piece in pieces {
        let (meta, next_body) = piece.split_once('\n').unwrap_or((piece, ""));
        let mut meta = meta.splitn(2, ' ');
        let code = meta.next().unwrap_or("0").parse().unwrap_or(0);
        let rest = meta.next().unwrap_or("").trim().to_string();
        got.push((code, rest, std::mem::take(&mut body)));
        body = next_body.to_string();
    }
    got
}

fn admin(gw: &GatewayProcess, path: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", &format!("http://{}{path}", gw.admin)])
        .output()
        .expect("curl admin");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The value of the metric line starting with `series` (`0` when absent).
fn metric(gw: &GatewayProcess, series: &str) -> u64 {
    admin(gw, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(series).map(|v| v.trim().to_string()))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn reload(gw: &GatewayProcess, text: &str) {
    let before = metric(gw, "slapenir_config_reloads_total{result=\"success\"}");
    let full = text
        .replace("{listen}", &gw.listen.to_string())
        .replace("{admin}", &gw.admin.to_string());
    let tmp = gw.config_path.with_extension("tmp");
    std::fs::write(&tmp, full).unwrap();
    std::fs::rename(&tmp, &gw.config_path).unwrap();
    gw.signal("HUP");
    wait_for(
        Duration::from_secs(10),
        Duration::from_millis(20),
        "the reload",
        || (metric(gw, "slapenir_config_reloads_total{result=\"success\"}") > before).then_some(()),
        || gw.stderr(),
    );
}

/// Binds the same port on 127.0.0.2 as `first` has on 127.0.0.1 (the upstream URL names one
/// port for every address its name resolves to).
fn twin(first: &HttpUpstream, name: &'static str) -> HttpUpstream {
    HttpUpstream::start(&format!("127.0.0.2:{}", first.port()), name)
}

// ---------------------------------------------------------------------------------------------
// DNS

/// 50 requests, one query: the answer (TTL 60 s) is cached. Before the cache, every request
/// resolved the name again (50 queries: see the report of the change that added the cache).
#[test]
fn dns_answer_is_cached_for_its_ttl() {
    let up = HttpUpstream::start("127.0.0.1:0", "one");
    let dns = DnsServer::start("api.test", Ipv4Addr::LOCALHOST, 60);
    let gw = dns_gateway(&up, &dns);
    let got = curl_batch(&gw, "/", 50);
    assert_eq!(got.len(), 50);
    assert!(
        got.iter().all(|(c, _, b)| *c == 200 && b == "one"),
        "{got:?}"
    );
    assert_eq!(dns.a_queries(), 1, "one DNS query for 50 requests");
    assert_eq!(
        metric(
            &gw,
            "slapenir_dns_lookups_total{result=\"ok\",upstream=\"api\"}"
        ),
        1
    );
    let status: serde_json::Value = serde_json::from_str(&admin(&gw, "/status")).unwrap();
    let cached = &status["dns"]["cached"][0];
    assert_eq!(cached["host"], "api.test", "{status}");
    assert_eq!(cached["upstream"], "api", "{status}");
    assert_eq!(
        cached["addresses"][0],
        format!("127.0.0.1:{}", up.port()),
        "{status}"
    );
    assert_eq!(cached["ttl_seconds"], 60.0, "{status}");
}

/// The name server's answer changes to 127.0.0.2, where a second upstream listens on the same
/// port: within the TTL (1 s) plus the refresh, traffic moves there, and no request fails.
#[test]
fn dns_change_moves_traffic_without_failures() {
    let one = HttpUpstream::start("127.0.0.1:0", "one");
    let two = twin(&one, "two");
    let dns = DnsServer::start("api.test", Ipv4Addr::LOCALHOST, 1);
    let gw = dns_gateway(&one, &dns);
    let first = curl_batch(&gw, "/", 5);
    assert!(
        first.iter().all(|(c, _, b)| *c == 200 && b == "one"),
        "{first:?}"
    );
    *dns.answer.lock().unwrap() = (Ipv4Addr::new(127, 0, 0, 2), 1);
    let changed = Instant::now();
    let mut all = Vec::new();
    let moved = wait_for(
        Duration::from_secs(10),
        Duration::from_millis(1),
        "traffic on 127.0.0.2",
        || {
            let batch = curl_batch(&gw, "/", 5);
            let done = batch.last().is_some_and(|(_, _, b)| b == "two");
            all.extend(batch);
            done.then(|| changed.elapsed())
        },
        || format!("queries {}", dns.a_queries()),
    );
    assert!(
        all.iter().all(|(c, _, _)| *c == 200),
        "a request failed during the move: {all:?}"
    );
    // Once moved, it stays moved.
    let after = curl_batch(&gw, "/", 10);
    assert!(
        after.iter().all(|(c, _, b)| *c == 200 && b == "two"),
        "{after:?}"
    );
    eprintln!(
        "moved after {moved:?}, {} requests during the move",
        all.len()
    );
    assert!(dns.a_queries() >= 2);
    assert!(!two.request_times().is_empty());
    let status: serde_json::Value = serde_json::from_str(&admin(&gw, "/status")).unwrap();
    assert_eq!(
        status["dns"]["cached"][0]["addresses"][0],
        format!("127.0.0.2:{}", two.port())
    );
}

/// The name resolves to two addresses, the first of each request's turn (round robin) often
/// 127.0.0.2, where nothing listens: a refused connection moves the request to the next
/// address, and every request is answered by the upstream on 127.0.0.1. The control: with only
/// the dead address, requests fail (`502`).
#[test]
fn a_refused_address_moves_the_request_to_the_next() {
    let up = HttpUpstream::start("127.0.0.1:0", "one");
    let dns = DnsServer::start("api.test", Ipv4Addr::new(127, 0, 0, 2), 60);
    let gw = dns_gateway(&up, &dns);
    let dead = curl_batch(&gw, "/", 3);
    assert!(dead.iter().all(|(c, _, _)| *c == 502), "{dead:?}");

    let dns = DnsServer::start("api.test", Ipv4Addr::new(127, 0, 0, 2), 60);
    dns.more.lock().unwrap().push(Ipv4Addr::LOCALHOST);
    let gw = dns_gateway(&up, &dns);
    let got = curl_batch(&gw, "/", 20);
    assert_eq!(got.len(), 20);
    assert!(
        got.iter().all(|(c, _, b)| *c == 200 && b == "one"),
        "{got:?}"
    );
    let refused = metric(
        &gw,
        "slapenir_upstream_errors_total{kind=\"connect\",upstream=\"api\"}",
    );
    eprintln!("20 requests answered, {refused} refused connections moved on");
    assert!(refused >= 5, "connections refused and moved on: {refused}");
}

/// After the first answer the name server takes 1.5 s to answer. Requests keep flowing while it
/// thinks: some reach the upstream after the refresh query arrived and before its answer was
/// sent (a request that waited on DNS could not), and none fails.
#[test]
fn slow_dns_never_holds_a_request() {
    let up = HttpUpstream::start("127.0.0.1:0", "one");
    let dns = DnsServer::start("api.test", Ipv4Addr::LOCALHOST, 1);
    let gw = dns_gateway(&up, &dns);
    assert_eq!(curl_batch(&gw, "/", 1)[0].0, 200);
    *dns.delay.lock().unwrap() = Duration::from_millis(1500);
    let mut all = Vec::new();
    wait_for(
        Duration::from_secs(15),
        Duration::from_millis(1),
        "an answered refresh query",
        || {
            all.extend(curl_batch(&gw, "/", 5));
            (dns.a_queries() >= 2).then_some(())
        },
        || format!("queries {}", dns.a_queries()),
    );
    assert!(all.iter().all(|(c, _, _)| *c == 200), "{all:?}");
    let (asked, answered) = dns.log.lock().unwrap().queries[1];
    let during = up
        .request_times()
        .iter()
        .filter(|t| **t > asked && **t < answered)
        .count();
    eprintln!("{during} requests reached the upstream while the refresh query was unanswered");
    assert!(
        during > 0,
        "no request reached the upstream while DNS was slow: requests waited on it"
    );
}

// ---------------------------------------------------------------------------------------------
// Connections per upstream

/// Six slow requests at once to an upstream capped at 2: the upstream never sees more than 2
/// connections; with a long `connect_timeout` all six succeed, with a short one the excess gets
/// `503 upstream_busy` and `Retry-After`. Without the cap, the same load opens 6 (the check can
/// fail).
#[test]
fn max_connections_caps_what_the_upstream_sees() {
    struct Case {
        name: &'static str,
        extra: &'static str,
        ok: usize,
        busy: usize,
        max_open: usize,
    }
    let cases = [
        Case {
            name: "cap 2, waits long enough",
            extra: "    max_connections: 2\n    connect_timeout: 20s\n",
            ok: 6,
            busy: 0,
            max_open: 2,
        },
        Case {
            name: "cap 2, short connect_timeout",
            extra: "    max_connections: 2\n    connect_timeout: 300ms\n",
            ok: 2,
            busy: 4,
            max_open: 2,
        },
        Case {
            name: "no cap (default 256)",
            extra: "",
            ok: 6,
            busy: 0,
            max_open: 6,
        },
    ];
    for case in cases {
        let up = HttpUpstream::start("127.0.0.1:0", "one");
        let gw = GatewayProcess::start(
            &config(&format!("http://127.0.0.1:{}", up.port()), case.extra, ""),
            &[],
        );
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let url = format!("http://{}/slow?ms=1200", gw.listen);
                std::thread::spawn(move || {
                    let out = Command::new("curl")
                        .args(["-s", "-H", "Host: api.test", "-w"])
                        .arg("\n%{http_code} %header{x-slapenir-refusal} %header{retry-after}")
                        .arg(&url)
                        .output()
                        .unwrap();
                    String::from_utf8_lossy(&out.stdout).to_string()
                })
            })
            .collect();
        let results: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let ok = results.iter().filter(|r| r.ends_with("\n200  ")).count();
        let busy = results
            .iter()
            .filter(|r| r.ends_with("\n503 upstream_busy 1"))
            .count();
        assert_eq!(
            (ok, busy),
            (case.ok, case.busy),
            "{}: {results:?}",
            case.name
        );
        assert_eq!(up.max_open(), case.max_open, "{}", case.name);
        if case.busy > 0 {
            assert_eq!(
                metric(&gw, "slapenir_refusals_total{reason=\"upstream_busy\"}"),
                case.busy as u64,
                "{}",
                case.name
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pool reuse

/// 20 sequential requests to a keep-alive upstream: one connection opened, 19 reused.
#[test]
fn pool_reuse_is_counted() {
    let up = HttpUpstream::start("127.0.0.1:0", "one");
    let gw = GatewayProcess::start(
        &config(&format!("http://127.0.0.1:{}", up.port()), "", ""),
        &[],
    );
    let got = curl_batch(&gw, "/", 20);
    assert!(got.iter().all(|(c, _, _)| *c == 200), "{got:?}");
    let new = metric(
        &gw,
        "slapenir_upstream_connections_total{reused=\"false\",upstream=\"api\"}",
    );
    let reused = metric(
        &gw,
        "slapenir_upstream_connections_total{reused=\"true\",upstream=\"api\"}",
    );
    assert_eq!((new, reused), (1, 19));
    assert_eq!(up.counts.accepted.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------------------------
// Reload

/// Four slow requests wait behind `max_connections: 1`; a reload raises it to 4: the waiting
/// requests go at once (the upstream sees more than one connection) and all four succeed.
#[test]
fn reload_changes_max_connections_without_dropping_a_request() {
    let up = HttpUpstream::start("127.0.0.1:0", "one");
    let url = format!("http://127.0.0.1:{}", up.port());
    let gw = GatewayProcess::start(
        &config(
            &url,
            "    max_connections: 1\n    connect_timeout: 30s\n",
            "",
        ),
        &[],
    );
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let url = format!("http://{}/slow?ms=1500", gw.listen);
            std::thread::spawn(move || {
                let out = Command::new("curl")
                    .args(["-s", "-H", "Host: api.test", "-w", "\n%{http_code}"])
                    .arg(&url)
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).to_string()
            })
        })
        .collect();
    wait_for(
        Duration::from_secs(10),
        Duration::from_millis(10),
        "the first request at the upstream",
        || (!up.request_times().is_empty()).then_some(()),
        || gw.stderr(),
    );
    assert_eq!(up.max_open(), 1);
    reload(
        &gw,
        &config(
            &url,
            "    max_connections: 4\n    connect_timeout: 30s\n",
            "",
        ),
    );
    let results: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(results.iter().all(|r| r.ends_with("\n200")), "{results:?}");
    assert!(up.max_open() > 1, "the raised cap did not apply");
    assert!(up.max_open() <= 4);
}

/// A reload points `dns.servers` at another name server, which answers 127.0.0.2: traffic
/// moves there (the cached answer serves until the refresh), and no request fails.
#[test]
fn reload_changes_name_servers_without_dropping_a_request() {
    let one = HttpUpstream::start("127.0.0.1:0", "one");
    let two = twin(&one, "two");
    let dns_one = DnsServer::start("api.test", Ipv4Addr::LOCALHOST, 300);
    let dns_two = DnsServer::start("api.test", Ipv4Addr::new(127, 0, 0, 2), 300);
    let url = format!("http://api.test:{}", one.port());
    let gw = GatewayProcess::start(&config(&url, "", &dns_section(dns_one.addr)), &[]);
    assert_eq!(curl_batch(&gw, "/", 3)[2].2, "one");
    reload(&gw, &config(&url, "", &dns_section(dns_two.addr)));
    let mut all = Vec::new();
    wait_for(
        Duration::from_secs(10),
        Duration::from_millis(1),
        "traffic on 127.0.0.2",
        || {
            let batch = curl_batch(&gw, "/", 3);
            let done = batch.last().is_some_and(|(_, _, b)| b == "two");
            all.extend(batch);
            done.then_some(())
        },
        || {
            format!(
                "queries: {} and {}",
                dns_one.a_queries(),
                dns_two.a_queries()
            )
        },
    );
    assert!(all.iter().all(|(c, _, _)| *c == 200), "{all:?}");
    assert_eq!(dns_one.a_queries(), 1);
    assert!(!two.request_times().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Configuration

/// The new keys: defaults, accepted values, and each refusal naming its key.
#[test]
fn upstream_side_keys_validate() {
    use slapenir::config::Config;
    let base = "listeners:\n  - name: l\n    address: 127.0.0.1:1\nupstreams:\n  a:\n    url: http://api.test:1\n";
    let load = |extra: &str| {
        Config::from_source(
            &format!("{base}{extra}"),
            "t.yaml",
            std::path::Path::new("."),
        )
    };
    let ok = load("").unwrap().config;
    assert_eq!(ok.upstreams[0].max_connections, 256);
    assert_eq!(*ok.dns, slapenir::config::Dns::default());
    let set = load(
        "    max_connections: 2\ndns:\n  servers: [10.0.0.2, \"127.0.0.1:5353\"]\n  min_ttl: 2s\n  max_ttl: 10s\n  serve_stale: 0s\n",
    )
    .unwrap()
    .config;
    assert_eq!(set.upstreams[0].max_connections, 2);
    assert_eq!(
        set.dns.servers,
        vec![
            "10.0.0.2:53".parse().unwrap(),
            "127.0.0.1:5353".parse().unwrap()
        ]
    );
    assert_eq!(
        (set.dns.min_ttl, set.dns.max_ttl),
        (Duration::from_secs(2), Duration::from_secs(10))
    );
    assert!(set.dns.serve_stale.is_zero());
    let refused: &[(&str, &str, &str)] = &[
        (
            "zero connections",
            "    max_connections: 0\n",
            "upstreams.a.max_connections: 0 is not allowed",
        ),
        (
            "a name server that is a name",
            "dns:\n  servers: [ns.example]\n",
            "dns.servers[0]: `ns.example` is not a name server address",
        ),
        (
            "min above max",
            "dns:\n  min_ttl: 10m\n  max_ttl: 1m\n",
            "dns.min_ttl: `min_ttl` (10m) is above `max_ttl` (1m)",
        ),
        (
            "zero timeout",
            "dns:\n  timeout: 0s\n",
            "dns.timeout: must be more than zero",
        ),
        ("unknown key", "dns:\n  ttl: 5s\n", "unknown field `ttl`"),
        // Accepted before, these overflowed the deadlines computed from them: every request
        // to the upstream failed unanswered (a panic in its task).
        (
            "an absurd connect timeout",
            "    connect_timeout: 500000000000years\n",
            "upstreams.a.connect_timeout: must be at most 7 days",
        ),
        (
            "an absurd read timeout",
            "    read_timeout: 500000000000years\n",
            "upstreams.a.read_timeout: must be at most 7 days",
        ),
        (
            "an absurd TTL",
            "dns:\n  max_ttl: 500000000000years\n",
            "dns.max_ttl: must be at most 7 days",
        ),
        (
            "an absurd stale time",
            "dns:\n  serve_stale: 500000000000years\n",
            "dns.serve_stale: must be at most 7 days",
        ),
    ];
    for (name, extra, fragment) in refused {
        let err = load(extra)
            .err()
            .unwrap_or_else(|| panic!("{name}: accepted"))
            .to_string();
        assert!(err.contains(fragment), "{name}: {err}");
    }
}
