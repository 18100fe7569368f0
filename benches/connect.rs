//! Throughput of the ways an agent reaches the gateway, in one run: gateway mode and `CONNECT`
//! tunnels, each with kept-alive connections and with a new connection per request (full mTLS
//! handshake; for tunnels also the inner TLS, with the minted leaf warm in the cache or minted
//! cold for a new host each time). Ratios are to gateway mode with keep-alive.
//!
//! `cargo build --release && cargo bench --bench connect` (the gateway under test is
//! `target/release/slapenir`; `CONNECT_BENCH_SECS` sets each row's duration, default 3).
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use slapenir::pki::pem;

const CLIENTS: usize = 2;
const COLD_HOSTS: usize = 20_000;

/// A minimal keep-alive HTTP/1.1 upstream: `200 ok` to everything.
fn upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                let mut line = String::new();
                loop {
                    let mut len = 0usize;
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    if w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Gateway(Child);
impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn client_config(certs: &Path, with_cert: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in pem::certs(&std::fs::read(certs.join("root_ca.crt")).unwrap()).unwrap() {
        roots.add(c).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut cfg = if with_cert {
        let chain: Vec<CertificateDer<'static>> =
            pem::certs(&std::fs::read(certs.join("agent-1.crt")).unwrap()).unwrap();
        let key: PrivateKeyDer<'static> =
            pem::private_key(&std::fs::read(certs.join("agent-1.key")).unwrap())
                .unwrap()
                .unwrap();
        b.with_client_auth_cert(chain, key).unwrap()
    } else {
        b.with_no_client_auth()
    };
    // Every new connection is a full handshake: that is what the "new connection" rows measure.
    cfg.resumption = rustls::client::Resumption::disabled();
    Arc::new(cfg)
}

type Tls<S> = rustls::StreamOwned<rustls::ClientConnection, S>;

fn connect_outer(cfg: &Arc<rustls::ClientConfig>, addr: SocketAddr) -> Tls<TcpStream> {
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_nodelay(true).unwrap();
    let conn =
        rustls::ClientConnection::new(cfg.clone(), ServerName::try_from("localhost").unwrap())
            .unwrap();
    rustls::StreamOwned::new(conn, sock)
}

fn read_head<S: Read>(s: &mut S) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "connection closed");
        head.push(b[0]);
    }
    head
}

fn request<S: Read + Write>(s: &mut S, host: &str) {
    s.write_all(
        format!(
            "GET /v1/x HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer sk-dummy-openai\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let head = read_head(s);
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let mut body = [0u8; 2];
    s.read_exact(&mut body).unwrap();
}

fn tunnel(
    outer_cfg: &Arc<rustls::ClientConfig>,
    inner_cfg: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    host: &str,
) -> Tls<Tls<TcpStream>> {
    let mut outer = connect_outer(outer_cfg, addr);
    outer
        .write_all(format!("CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n").as_bytes())
        .unwrap();
    let head = read_head(&mut outer);
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let conn = rustls::ClientConnection::new(
        inner_cfg.clone(),
        ServerName::try_from(host.to_string()).unwrap(),
    )
    .unwrap();
    rustls::StreamOwned::new(conn, outer)
}

/// Runs `f` on `CLIENTS` threads for `secs`; returns operations per second.
fn measure(secs: f64, f: impl Fn(usize, &AtomicBool) -> usize + Sync) -> f64 {
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let total = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|i| {
                s.spawn({
                    let f = &f;
                    let stop = &stop;
                    move || f(i, stop)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum::<usize>()
    });
    total as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/slapenir");
    assert!(
        bin.exists(),
        "build the gateway first: cargo build --release"
    );
    let secs: f64 = std::env::var("CONNECT_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0);
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    slapenir::pki::init(&certs, slapenir::pki::InitOptions::default()).unwrap();
    let up = upstream();
    let port = free_port();
    let mut config = format!(
        "listeners:\n  - name: agents\n    address: 127.0.0.1:{port}\n    tls: {{ cert: {c}/gateway.crt, key: {c}/gateway.key, client_ca: {c}/root_ca.crt }}\n\
         interception: {{ ca_cert: {c}/intercept_ca.crt, ca_key: {c}/intercept_ca.key }}\n\
         upstreams:\n  api:\n    url: http://{up}\n\
         credentials:\n  openai:\n    dummy: sk-dummy-openai\n    real: {{ env: BENCH_KEY }}\n    upstreams: [api]\n\
         routes:\n  - host: api.test\n    upstream: api\n",
        c = certs.display()
    );
    for i in 0..COLD_HOSTS {
        config.push_str(&format!("  - host: h{i}.test\n    upstream: api\n"));
    }
    let cfg_path = dir.path().join("gw.yaml");
    std::fs::write(&cfg_path, config).unwrap();
    let _gw = Gateway(
        Command::new(&bin)
            .args(["run", "--config"])
            .arg(&cfg_path)
            .env("RUST_LOG", "error")
            // As long as the dummy, so responses keep their Content-Length (the client reads it).
            .env("BENCH_KEY", "sk-REAL-bench-1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "gateway did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let outer = client_config(&certs, true);
    let inner = client_config(&certs, false);
    let cold = AtomicUsize::new(0);

    let rows: Vec<(&str, &str, f64)> = vec![
        (
            "gateway mode, keep-alive",
            "requests/s",
            measure(secs, |_, stop| {
                let mut s = connect_outer(&outer, addr);
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    request(&mut s, "api.test");
                    n += 1;
                }
                n
            }),
        ),
        (
            "CONNECT tunnel, keep-alive",
            "requests/s",
            measure(secs, |_, stop| {
                let mut t = tunnel(&outer, &inner, addr, "api.test");
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    request(&mut t, "api.test");
                    n += 1;
                }
                n
            }),
        ),
        (
            "gateway mode, new mTLS connection per request",
            "connections/s",
            measure(secs, |_, stop| {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let mut s = connect_outer(&outer, addr);
                    request(&mut s, "api.test");
                    n += 1;
                }
                n
            }),
        ),
        (
            "new tunnel per request, warm leaf",
            "tunnels/s",
            measure(secs, |_, stop| {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let mut t = tunnel(&outer, &inner, addr, "api.test");
                    request(&mut t, "api.test");
                    n += 1;
                }
                n
            }),
        ),
        (
            "new tunnel per request, cold leaf (new host each)",
            "tunnels/s",
            measure(secs, |_, stop| {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let i = cold.fetch_add(1, Ordering::Relaxed);
                    assert!(i < COLD_HOSTS, "ran out of cold hosts");
                    let host = format!("h{i}.test");
                    let mut t = tunnel(&outer, &inner, addr, &host);
                    request(&mut t, &host);
                    n += 1;
                }
                n
            }),
        ),
    ];
    let base = rows[0].2;
    println!("| path | rate | unit | ratio to gateway mode, keep-alive |");
    println!("|---|---:|---|---:|");
    for (name, unit, rate) in &rows {
        println!("| {name} | {rate:.0} | {unit} | {:.2} |", rate / base);
    }
    println!("\n{CLIENTS} client threads, {secs} s per row, mTLS (ECDSA P-256) on the outer connection, TLS 1.3 full handshakes (no resumption).");
}
