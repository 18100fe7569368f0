//! `CONNECT` (`HTTPS_PROXY`) with TLS interception, through real clients: curl with an HTTPS
//! proxy and client certificate, Python httpx with `HTTPS_PROXY`, and a rustls client for the
//! refusals that ordinary clients cannot produce (SNI or `Host` different from the target).
use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::gateway::GatewayProcess;
use common::upstream::{reversed, Upstream, UpstreamKind};
use rustls::pki_types::ServerName;

const DUMMY: &str = "sk-dummy-openai";
const REAL: &str = "sk-real-OPENAI-7f3a9c1e5b2d4f6a8c0e";

struct Setup {
    gw: GatewayProcess,
    up: Upstream,
    certs: PathBuf,
}

/// A gateway with an mTLS listener and interception, in front of a TLS upstream (its own test
/// CA) routed as `api.test`; `other.test` is routed too, to the same upstream.
fn setup_with(interception: bool) -> Setup {
    let up = Upstream::start(UpstreamKind::Tls);
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    slapenir::pki::init(&certs, slapenir::pki::InitOptions::default()).unwrap();
    let c = certs.display();
    let interception = if interception {
        format!("interception:\n  ca_cert: {c}/intercept_ca.crt\n  ca_key: {c}/intercept_ca.key\n")
    } else {
        String::new()
    };
    let listener = common::gateway::mtls_listener(&certs);
    let config = format!(
        "{listener}admin:\n  address: {{admin}}\n{interception}\
         upstreams:\n  api:\n    url: https://127.0.0.1:{port}\n    ca: {ca}\n\
         credentials:\n  openai:\n    dummy: {DUMMY}\n    real: {{ env: TEST_OPENAI_KEY }}\n    upstreams: [api]\n    swap_in: {{ query: [k], body: [\"*/*\"] }}\n\
         routes:\n  - host: api.test\n    upstream: api\n  - host: other.test\n    upstream: api\n",
        port = up.addr().port(),
        ca = up.ca_path().display(),
    );
    let gw = GatewayProcess::start_in(dir, &config, &[("TEST_OPENAI_KEY", REAL)]);
    Setup { gw, up, certs }
}

fn setup() -> Setup {
    setup_with(true)
}

impl Setup {
    fn f(&self, name: &str) -> PathBuf {
        self.certs.join(name)
    }
    fn proxy_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.gw.listen.port())
    }
}

/// curl through the gateway as an HTTPS proxy with a client certificate.
fn curl(s: &Setup, url: &str, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new("curl")
        .args(["-s", "-S", "-i", "--max-time", "20", "--proxy"])
        .arg(s.proxy_url())
        .arg("--proxy-cacert")
        .arg(s.f("root_ca.crt"))
        .arg("--proxy-cert")
        .arg(s.f("agent-1.crt"))
        .arg("--proxy-key")
        .arg(s.f("agent-1.key"))
        .arg("--cacert")
        .arg(s.f("root_ca.crt"))
        .args(extra)
        .arg(url)
        .env_remove("SSL_CERT_FILE")
        .env_remove("CURL_CA_BUNDLE")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_clean(s: &Setup) {
    let all = format!("{}{}", s.gw.stdout(), s.gw.stderr());
    assert!(
        !all.contains(REAL),
        "the real secret is in the gateway's output"
    );
}

#[test]
fn curl_through_connect_swaps_both_ways() {
    let s = setup();
    for http in ["--http1.1", "--http2"] {
        let (code, out, err) = curl(
            &s,
            &format!("https://api.test/echo?k={DUMMY}"),
            &[
                http,
                "-H",
                &format!("Authorization: Bearer {DUMMY}"),
                "--data-binary",
                &format!("body {DUMMY}"),
            ],
        );
        assert_eq!(code, 0, "{http}: {err}");
        assert!(out.contains(&format!("Bearer {DUMMY}")), "{out}");
        assert!(!out.contains(REAL), "{http}: curl saw the real secret");
    }
    let reqs = s.up.wait_for_requests_blocking(2, Duration::from_secs(10));
    for r in &reqs {
        assert_eq!(
            r.header_str("authorization").unwrap(),
            format!("Bearer {REAL}")
        );
        assert_eq!(r.path, format!("/echo?k={REAL}"));
        assert_eq!(r.body.text().unwrap(), format!("body {REAL}"));
    }
    // Streamed bodies: chunked and SSE.
    let text = reversed("text", &format!("a {REAL} b"));
    let (code, out, err) = curl(&s, &format!("https://api.test/chunked?{text}&parts=5"), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("a {DUMMY} b")) && !out.contains(REAL),
        "{out}"
    );
    let (code, out, err) = curl(
        &s,
        &format!(
            "https://api.test/sse?n=3&interval_ms=1&{}",
            reversed("text", REAL)
        ),
        &["-N"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("data: {DUMMY} 2")) && !out.contains(REAL),
        "{out}"
    );
    // Two echo requests, one chunked, one SSE.
    let audit = s.gw.stdout_with_lines(4);
    assert!(
        audit.contains("\"identity\":\"agent-1\""),
        "the outer identity did not carry over: {audit}"
    );
    assert_clean(&s);
}

/// Python httpx with `HTTPS_PROXY` and the development root as its trust store, reading an SSE
/// stream event by event.
#[test]
fn python_httpx_through_https_proxy() {
    let s = setup();
    let script = r#"
import os, ssl, sys, time, httpx
root, cert, key = sys.argv[1:4]
trust = ssl.create_default_context(cafile=root)
proxy_ctx = ssl.create_default_context(cafile=root)
proxy_ctx.load_cert_chain(cert, key)
proxy = httpx.Proxy(os.environ["HTTPS_PROXY"], ssl_context=proxy_ctx)
with httpx.Client(proxy=proxy, verify=trust, timeout=20) as c:
    r = c.get("https://api.test/echo-header", params={"name": "x-token", "value.rev": os.environ["REAL"][::-1]},
              headers={"Authorization": "Bearer sk-dummy-openai"})
    print("status", r.status_code)
    print("x-token", r.headers.get("x-token"))
    with c.stream("GET", "https://api.test/sse", params={"n": "4", "interval_ms": "100", "text.rev": os.environ["REAL"][::-1]}) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                print("event", time.monotonic(), line)
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(s.f("root_ca.crt"))
        .arg(s.f("agent-1.crt"))
        .arg(s.f("agent-1.key"))
        .env("HTTPS_PROXY", s.proxy_url())
        .env("REAL", REAL)
        .env_remove("SSL_CERT_FILE")
        .env_remove("REQUESTS_CA_BUNDLE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("status 200"), "{stdout}");
    assert!(stdout.contains(&format!("x-token {DUMMY}")), "{stdout}");
    let events: Vec<&str> = stdout.lines().filter(|l| l.starts_with("event")).collect();
    assert_eq!(events.len(), 4, "{stdout}");
    assert!(events
        .iter()
        .all(|e| e.ends_with(&format!("data: {DUMMY} {}", &e[e.len() - 1..]))));
    assert!(!stdout.contains(REAL));
    // Events were read as they came: their arrival times span the upstream's intervals.
    let times: Vec<f64> = events
        .iter()
        .map(|e| e.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(
        times[3] - times[0] >= 0.25,
        "events arrived together: {times:?}"
    );
    assert_eq!(
        s.up.requests()[0].header_str("authorization").unwrap(),
        format!("Bearer {REAL}")
    );
    assert_clean(&s);
}

#[test]
fn connect_to_an_unrouted_host_is_refused_before_tls() {
    let s = setup();
    let (code, _out, err) = curl(&s, "https://evil.test/", &[]);
    assert_ne!(code, 0);
    assert!(err.contains("403"), "{err}");
    let (code, _out, err) = curl(&s, "https://api.test:8443/", &[]);
    assert_ne!(code, 0, "a port the route does not name must be refused");
    assert!(err.contains("403"), "{err}");
    assert!(s.up.requests().is_empty());
    assert!(s.gw.stdout().contains("\"tunnel\":\"evil.test\""));
}

#[test]
fn connect_without_interception_configured_is_refused() {
    let s = setup_with(false);
    let (code, _out, err) = curl(&s, "https://api.test/", &[]);
    assert_ne!(code, 0);
    assert!(err.contains("501"), "{err}");
}

#[test]
fn client_without_certificate_is_refused_on_the_outer_listener() {
    let s = setup();
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "10", "--proxy"])
        .arg(s.proxy_url())
        .arg("--proxy-cacert")
        .arg(s.f("root_ca.crt"))
        .arg("--cacert")
        .arg(s.f("root_ca.crt"))
        .arg("https://api.test/echo")
        .env_remove("SSL_CERT_FILE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(s.up.requests().is_empty());
}

/// A tunnel opened by hand: outer TLS with the agent's certificate, `CONNECT`, then TLS inside
/// with the given SNI.
mod tunnel {
    use super::*;

    pub fn client_config(
        root: &Path,
        cert_key: Option<(&Path, &Path)>,
    ) -> Arc<rustls::ClientConfig> {
        common::client::rustls_client(root, cert_key)
    }

    pub type Outer = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;
    pub type Inner = rustls::StreamOwned<rustls::ClientConnection, Outer>;

    /// Opens the tunnel and returns the `CONNECT` status line and, on 200, the inner stream.
    pub fn open(s: &Setup, target: &str, sni: &str) -> Result<Inner, String> {
        let outer_cfg = client_config(
            &s.f("root_ca.crt"),
            Some((&s.f("agent-1.crt"), &s.f("agent-1.key"))),
        );
        let conn =
            rustls::ClientConnection::new(outer_cfg, ServerName::try_from("localhost").unwrap())
                .unwrap();
        let sock = TcpStream::connect(s.gw.listen).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut outer = rustls::StreamOwned::new(conn, sock);
        outer
            .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
            .map_err(|e| e.to_string())?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = outer.read(&mut byte).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed".into());
            }
            head.push(byte[0]);
        }
        let line = String::from_utf8_lossy(&head)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        if !line.contains(" 200 ") {
            return Err(line);
        }
        let mut inner_cfg = (*client_config(&s.f("root_ca.crt"), None)).clone();
        inner_cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let inner_cfg = Arc::new(inner_cfg);
        let inner = rustls::ClientConnection::new(
            inner_cfg,
            ServerName::try_from(sni.to_string()).unwrap(),
        )
        .unwrap();
        let mut inner = rustls::StreamOwned::new(inner, outer);
        // Drive the handshake now so a refusal shows here.
        inner.flush().map_err(|e| e.to_string())?;
        while inner.conn.is_handshaking() {
            inner
                .conn
                .complete_io(&mut inner.sock)
                .map_err(|e| e.to_string())?;
        }
        Ok(inner)
    }

    /// One HTTP/1.1 request on the tunnel; returns the response head and body (Content-Length).
    pub fn request(t: &mut Inner, host: &str, path: &str) -> (String, String) {
        t.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(t.read(&mut byte).unwrap(), 1, "tunnel closed mid-response");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        t.read_exact(&mut body).unwrap();
        (head, String::from_utf8_lossy(&body).into_owned())
    }
}

#[test]
fn sni_different_from_the_connect_target_is_refused() {
    let s = setup();
    let ok = tunnel::open(&s, "api.test:443", "api.test");
    assert!(ok.is_ok(), "{:?}", ok.err());
    let fronted = tunnel::open(&s, "api.test:443", "other.test");
    assert!(
        fronted.is_err(),
        "a tunnel for api.test accepted TLS for other.test"
    );
    assert!(s.gw.stderr().contains("domain fronting"));
}

#[test]
fn host_different_from_the_connect_target_on_a_kept_alive_tunnel_is_refused() {
    let s = setup();
    let mut t = tunnel::open(&s, "api.test:443", "api.test").unwrap();
    let (head, _) = tunnel::request(&mut t, "api.test", "/status/200");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (head, body) = tunnel::request(&mut t, "other.test", "/status/200");
    assert!(head.starts_with("HTTP/1.1 421"), "{head}");
    assert!(body.contains("this tunnel is for `api.test:443`"), "{body}");
    assert_eq!(
        s.up.requests().len(),
        1,
        "the switched request reached the upstream"
    );
}

#[test]
fn leaves_are_minted_once_per_host() {
    let s = setup();
    let leaf = |sni: &str| {
        let t = tunnel::open(&s, &format!("{sni}:443"), sni).unwrap();
        t.conn.peer_certificates().unwrap()[0].as_ref().to_vec()
    };
    let a1 = leaf("api.test");
    let a2 = leaf("api.test");
    let o1 = leaf("other.test");
    assert_eq!(a1, a2, "the leaf for api.test was minted twice");
    assert_ne!(a1, o1);
    let id = slapenir::pki::ClientIdentity::from_der(&o1).unwrap();
    assert_eq!(id.sans, vec!["other.test".to_string()]);
}
