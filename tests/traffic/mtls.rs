//! mTLS on the agents' listener, through real clients (curl, `openssl s_client`, Python's `ssl`
//! module and a rustls client): who is refused at the handshake, who gets in, what identity is
//! logged, per-route `clients`, and certificate reload under load.
use crate::common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::gateway::{mtls_listener, GatewayProcess};
use common::upstream::{Upstream, UpstreamKind};
use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use time::OffsetDateTime;

const DUMMY: &str = "sk-dummy-openai";
const REAL: &str = "sk-real-OPENAI-7f3a9c1e5b2d4f6a8c0e";

/// A gateway with an mTLS listener using a development PKI made by `slapenir::pki::init`.
struct Setup {
    gw: GatewayProcess,
    up: Upstream,
    certs: PathBuf,
}

fn setup() -> Setup {
    let up = Upstream::start(UpstreamKind::Plain);
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    slapenir::pki::init(&certs, slapenir::pki::InitOptions::default()).unwrap();
    let config = format!(
        "{listener}admin:\n  address: {{admin}}\n\
         upstreams:\n  api:\n    url: {url}\n\
         credentials:\n  openai:\n    dummy: {DUMMY}\n    real: {{ env: TEST_OPENAI_KEY }}\n    upstreams: [api]\n\
         routes:\n\
         \x20 - host: api.test\n    upstream: api\n\
         \x20 - host: agent1.test\n    upstream: api\n    clients: [agent-1]\n\
         \x20 - host: agent2.test\n    upstream: api\n    clients: [agent-2, spiffe://slapenir/agent/agent-2]\n",
        listener = mtls_listener(&certs),
        url = up.url(),
    );
    let gw = GatewayProcess::start_in(dir, &config, &[("TEST_OPENAI_KEY", REAL)]);
    Setup { gw, up, certs }
}

impl Setup {
    fn root(&self) -> PathBuf {
        self.certs.join("root_ca.crt")
    }
    fn agent(&self) -> (PathBuf, PathBuf) {
        (
            self.certs.join("agent-1.crt"),
            self.certs.join("agent-1.key"),
        )
    }
}

/// curl without the environment's trust settings; returns the HTTP status, or `None` when
/// no HTTP response came (refused at the handshake).
fn curl(s: &Setup, host: &str, cert: Option<(&Path, &Path)>) -> (Option<u16>, String) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "-S",
        "--max-time",
        "10",
        "-o",
        "/dev/stderr",
        "-w",
        "%{http_code}",
    ])
    .arg("--cacert")
    .arg(s.root())
    .args([
        "-H",
        &format!("Host: {host}"),
        "-H",
        &format!("Authorization: Bearer {DUMMY}"),
    ])
    .env_remove("SSL_CERT_FILE")
    .env_remove("CURL_CA_BUNDLE");
    if let Some((c, k)) = cert {
        cmd.arg("--cert").arg(c).arg("--key").arg(k);
    }
    cmd.arg(format!("https://localhost:{}/echo", s.gw.listen.port()));
    let out = cmd.output().unwrap();
    let code: u16 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    ((code != 0).then_some(code), err)
}

/// Kinds of client certificate the tests mint.
enum Bad {
    SelfSigned,
    OtherCa,
    Expired,
    NotYetValid,
    ServerAuthOnly,
    WrongKey,
}

/// Mints a client certificate (leaf + intermediate chain in one file) and its key.
fn mint(s: &Setup, name: &str, kind: Option<Bad>) -> (PathBuf, PathBuf) {
    let dir = s.gw.dir().join("client-certs");
    std::fs::create_dir_all(&dir).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.subject_alt_names.push(SanType::URI(
        format!("spiffe://slapenir/agent/{name}")
            .try_into()
            .unwrap(),
    ));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(1);
    match kind {
        Some(Bad::Expired) => {
            params.not_before = now - time::Duration::days(3);
            params.not_after = now - time::Duration::days(1);
        }
        Some(Bad::NotYetValid) => {
            params.not_before = now + time::Duration::days(1);
            params.not_after = now + time::Duration::days(3);
        }
        Some(Bad::ServerAuthOnly) => {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]
        }
        _ => {}
    }
    let inter_pem = std::fs::read_to_string(s.certs.join("intermediate_ca.crt")).unwrap();
    let inter_key = KeyPair::from_pem(
        &std::fs::read_to_string(s.certs.join("secrets/intermediate_ca_key")).unwrap(),
    )
    .unwrap();
    let (pem, chain) = match kind {
        Some(Bad::SelfSigned) => (params.self_signed(&key).unwrap().pem(), String::new()),
        Some(Bad::OtherCa) => {
            let ca_key = KeyPair::generate().unwrap();
            let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            ca.distinguished_name.push(DnType::CommonName, "Another CA");
            let issuer = Issuer::new(ca, ca_key);
            (
                params.signed_by(&key, &issuer).unwrap().pem(),
                String::new(),
            )
        }
        _ => {
            let issuer = Issuer::from_ca_cert_pem(&inter_pem, inter_key).unwrap();
            (
                params.signed_by(&key, &issuer).unwrap().pem(),
                inter_pem.clone(),
            )
        }
    };
    let key_pem = match kind {
        Some(Bad::WrongKey) => KeyPair::generate().unwrap().serialize_pem(),
        _ => key.serialize_pem(),
    };
    let crt = dir.join(format!("{name}.crt"));
    let keyf = dir.join(format!("{name}.key"));
    std::fs::write(&crt, format!("{pem}{chain}")).unwrap();
    std::fs::write(&keyf, key_pem).unwrap();
    (crt, keyf)
}

/// Asserts a certificate is refused at the handshake: no HTTP status, nothing reached the
/// upstream, and the refusal is counted.
fn assert_refused(kind: Bad, name: &str) {
    let s = setup();
    let (crt, key) = mint(&s, name, Some(kind));
    let (status, err) = curl(&s, "api.test", Some((&crt, &key)));
    assert_eq!(status, None, "{name}: got an HTTP answer: {err}");
    assert!(
        s.up.requests().is_empty(),
        "{name}: a request reached the upstream"
    );
}

#[test]
fn refused_without_a_client_certificate() {
    let s = setup();
    let (status, err) = curl(&s, "api.test", None);
    assert_eq!(status, None, "{err}");
    assert!(s.up.requests().is_empty());
}

#[test]
fn refused_with_a_self_signed_certificate() {
    assert_refused(Bad::SelfSigned, "self-signed");
}

#[test]
fn refused_with_a_certificate_from_another_ca() {
    assert_refused(Bad::OtherCa, "other-ca");
}

#[test]
fn refused_with_an_expired_certificate() {
    assert_refused(Bad::Expired, "expired");
}

#[test]
fn refused_with_a_certificate_not_yet_valid() {
    assert_refused(Bad::NotYetValid, "not-yet-valid");
}

#[test]
fn refused_with_a_server_auth_only_certificate() {
    assert_refused(Bad::ServerAuthOnly, "server-only");
}

#[test]
fn refused_when_the_key_does_not_match_the_certificate() {
    assert_refused(Bad::WrongKey, "wrong-key");
}

#[test]
fn verification_failures_are_counted() {
    let s = setup();
    let (crt, key) = mint(&s, "expired", Some(Bad::Expired));
    let _ = curl(&s, "api.test", Some((&crt, &key)));
    let metrics = Command::new("curl")
        .args(["-s", &format!("http://{}/metrics", s.gw.admin)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        text.contains("slapenir_refusals_total{reason=\"mtls_failure\"} 1"),
        "{text}"
    );
}

#[test]
fn accepted_with_a_certificate_from_the_intermediate_and_identity_logged() {
    let s = setup();
    let (c, k) = s.agent();
    let (status, body) = curl(&s, "api.test", Some((&c, &k)));
    assert_eq!(status, Some(200), "{body}");
    assert!(!body.contains(REAL));
    let req = &s.up.wait_for_requests_blocking(1, Duration::from_secs(10))[0];
    assert_eq!(
        req.header_str("authorization").unwrap(),
        format!("Bearer {REAL}")
    );
    let audit = s.gw.stdout_with_lines(1);
    assert!(audit.contains("\"identity\":\"agent-1\""), "{audit}");
}

#[test]
fn per_route_clients_are_enforced() {
    let s = setup();
    let (c1, k1) = s.agent();
    let (c2, k2) = mint(&s, "agent-2", None);
    let (c3, k3) = mint(&s, "agent-3", None);
    let cases: &[(&str, (&Path, &Path), u16)] = &[
        ("agent-1 on its route", (&c1, &k1), 200),
        ("agent-1 on agent-2's route", (&c1, &k1), 403),
        ("agent-2 on its route", (&c2, &k2), 200),
        ("agent-3 on agent-1's route", (&c3, &k3), 403),
        ("agent-3 on an open route", (&c3, &k3), 200),
    ];
    let hosts = [
        "agent1.test",
        "agent2.test",
        "agent2.test",
        "agent1.test",
        "api.test",
    ];
    for ((name, cert, want), host) in cases.iter().zip(hosts) {
        let (status, body) = curl(&s, host, Some(*cert));
        assert_eq!(status, Some(*want), "{name}: {body}");
        if *want == 403 {
            assert!(
                body.contains("is not allowed on this route"),
                "{name}: {body}"
            );
        }
    }
    assert!(s
        .gw
        .stdout_with_lines(cases.len())
        .contains("\"refusal\":\"client_not_allowed\""));
}

/// The same handshakes with `openssl s_client`: the agent gets an HTTP answer, a client
/// without a certificate gets none.
#[test]
fn openssl_s_client_agrees() {
    let s = setup();
    let (c, k) = s.agent();
    let run = |cert: Option<(&Path, &Path)>| {
        let mut cmd = Command::new("openssl");
        cmd.args(["s_client", "-quiet", "-verify_return_error", "-connect"])
            .arg(s.gw.listen.to_string())
            .arg("-CAfile")
            .arg(s.root())
            .args(["-servername", "localhost"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some((c, k)) = cert {
            // s_client sends only the first certificate of -cert; the intermediate goes in
            // -cert_chain (the gateway trusts the root only).
            cmd.arg("-cert")
                .arg(c)
                .arg("-cert_chain")
                .arg(c)
                .arg("-key")
                .arg(k);
        }
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"GET /echo HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(run(Some((&c, &k))).starts_with("HTTP/1.1 200"));
    assert!(!run(None).contains("HTTP/1.1"));
}

/// And with Python's `ssl` module.
#[test]
fn python_ssl_agrees() {
    let s = setup();
    let (c, k) = s.agent();
    let script = r#"
import socket, ssl, sys
port, ca, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
if cert != "-":
    ctx.load_cert_chain(cert, key)
try:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET /echo HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
            data = tls.recv(100)
            print(data.split(b"\r\n")[0].decode() if data else "EMPTY")
except (ssl.SSLError, ConnectionError, OSError) as e:
    print("REFUSED", type(e).__name__)
"#;
    let run = |cert: &str, key: &str| {
        let out = Command::new("python3")
            .args(["-c", script, &s.gw.listen.port().to_string()])
            .arg(s.root())
            .args([cert, key])
            .env_remove("SSL_CERT_FILE")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(
        run(c.to_str().unwrap(), k.to_str().unwrap()),
        "HTTP/1.1 200 OK"
    );
    let (ec, ek) = mint(&s, "expired", Some(Bad::Expired));
    let refused = run(ec.to_str().unwrap(), ek.to_str().unwrap());
    assert!(
        refused.starts_with("REFUSED") || refused == "EMPTY",
        "{refused}"
    );
    let none = run("-", "-");
    assert!(none.starts_with("REFUSED") || none == "EMPTY", "{none}");
}

/// A rustls client that makes a new TLS connection per request and reports the serial of the
/// server certificate it saw.
mod client {
    use super::*;
    use rustls::pki_types::ServerName;

    pub fn config(root: &Path, cert: &Path, key: &Path) -> Arc<rustls::ClientConfig> {
        common::client::rustls_client(root, Some((cert, key)))
    }

    /// One request on a fresh connection; returns (status line, server leaf DER).
    pub fn request(
        cfg: &Arc<rustls::ClientConfig>,
        addr: std::net::SocketAddr,
    ) -> Result<(String, Vec<u8>), String> {
        use std::io::Read;
        let name = ServerName::try_from("localhost").unwrap();
        let mut conn =
            rustls::ClientConnection::new(cfg.clone(), name).map_err(|e| e.to_string())?;
        let mut sock = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut tls = rustls::Stream::new(&mut conn, &mut sock);
        tls.write_all(b"GET /status/200 HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut resp = Vec::new();
        let _ = tls.read_to_end(&mut resp);
        let leaf = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
            .ok_or("no server certificate")?;
        let line = String::from_utf8_lossy(&resp)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        Ok((line, leaf))
    }
}

/// Mints a new gateway certificate from the same intermediate and writes it over the files.
fn rotate_gateway_cert(s: &Setup) -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "proxy".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    params
        .distinguished_name
        .push(DnType::CommonName, "proxy (rotated)");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let inter_pem = std::fs::read_to_string(s.certs.join("intermediate_ca.crt")).unwrap();
    let inter_key = KeyPair::from_pem(
        &std::fs::read_to_string(s.certs.join("secrets/intermediate_ca_key")).unwrap(),
    )
    .unwrap();
    let issuer = Issuer::from_ca_cert_pem(&inter_pem, inter_key).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    // Write both files to temporary names, then rename: a reader never sees half a file.
    let crt_tmp = s.certs.join("gateway.crt.new");
    let key_tmp = s.certs.join("gateway.key.new");
    std::fs::write(&crt_tmp, format!("{}{inter_pem}", cert.pem())).unwrap();
    std::fs::write(&key_tmp, key.serialize_pem()).unwrap();
    std::fs::rename(&key_tmp, s.certs.join("gateway.key")).unwrap();
    std::fs::rename(&crt_tmp, s.certs.join("gateway.crt")).unwrap();
    cert.der().to_vec()
}

/// Swapping the server certificate and sending SIGHUP under a load of new handshakes: every
/// request succeeds; once the reload is logged, new handshakes see the new certificate. A bad
/// new certificate is then refused and the current one keeps serving.
#[test]
fn certificate_reload_under_load_loses_no_request() {
    let s = setup();
    let (c, k) = s.agent();
    let cfg = client::config(&s.root(), &c, &k);
    let old_der = slapenir::pki::pem::certs(&std::fs::read(s.certs.join("gateway.crt")).unwrap())
        .unwrap()
        .into_iter()
        .next()
        .unwrap()
        .as_ref()
        .to_vec();
    let addr = s.gw.listen;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (cfg, stop, done) = (cfg.clone(), stop.clone(), done.clone());
        workers.push(std::thread::spawn(move || {
            let mut failures = Vec::new();
            let mut leaves = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match client::request(&cfg, addr) {
                    Ok((line, leaf)) if line == "HTTP/1.1 200 OK" => leaves.push(leaf),
                    Ok((line, _)) => failures.push(line),
                    Err(e) => failures.push(e),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            (failures, leaves)
        }));
    }
    let wait_for = |n: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while done.load(Ordering::Relaxed) < n {
            assert!(std::time::Instant::now() < deadline, "load stalled");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_for(300);
    let new_der = rotate_gateway_cert(&s);
    s.gw.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !s.gw.stderr().contains("certificates reloaded") {
        assert!(
            std::time::Instant::now() < deadline,
            "no reload logged:\n{}",
            s.gw.stderr()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let after_reload = done.load(Ordering::Relaxed);
    wait_for(after_reload + 700);
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    let mut leaves = Vec::new();
    for w in workers {
        let (f, l) = w.join().unwrap();
        failures.extend(f);
        leaves.extend(l);
    }
    assert!(leaves.len() >= 1000, "only {} requests", leaves.len());
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        leaves.contains(&new_der),
        "no handshake saw the new certificate"
    );
    assert!(
        leaves.contains(&old_der),
        "no handshake saw the old certificate"
    );
    // The last handshakes all saw the new certificate.
    let (_, leaf) = client::request(&cfg, addr).unwrap();
    assert_eq!(leaf, new_der);

    // A broken certificate file is refused; the current certificate keeps serving.
    std::fs::write(s.certs.join("gateway.crt"), "not a certificate").unwrap();
    s.gw.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !s.gw.stderr().contains("certificates NOT reloaded") {
        assert!(
            std::time::Instant::now() < deadline,
            "no refusal logged:\n{}",
            s.gw.stderr()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let (line, leaf) = client::request(&cfg, addr).unwrap();
    assert_eq!(line, "HTTP/1.1 200 OK");
    assert_eq!(leaf, new_der);
}

/// Upstream mTLS: the gateway presents `client_cert` to an upstream that requires one.
#[test]
fn upstream_client_certificate_is_presented() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let pki = common::pki::TestPki::new(dir.path());
    let gw_client = pki.issue_client("gateway-client", "slapenir-gateway", None);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let server_cfg = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(pki.server().chain.clone(), pki.server().key())
            .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Serves connections until the test ends; answers with the client certificate's CN.
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(mut sock) = sock else { continue };
            let Ok(mut conn) = rustls::ServerConnection::new(server_cfg.clone()) else {
                continue;
            };
            let mut tls = rustls::Stream::new(&mut conn, &mut sock);
            let mut reader = BufReader::new(&mut tls);
            let mut line = String::new();
            let mut ok = true;
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    ok = false;
                    break;
                }
                if line == "\r\n" {
                    break;
                }
            }
            drop(reader);
            if !ok {
                continue;
            }
            let cn = conn
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| slapenir::pki::ClientIdentity::from_der(c.as_ref()))
                .and_then(|id| id.common_name)
                .unwrap_or_default();
            let body = format!("client={cn}");
            let mut tls = rustls::Stream::new(&mut conn, &mut sock);
            let _ = tls.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
            conn.send_close_notify();
            let _ = conn.complete_io(&mut sock);
        }
    });
    let config = format!(
        "listeners:\n  - name: agents\n    address: {{listen}}\n\
         admin:\n  address: {{admin}}\n\
         upstreams:\n  api:\n    url: https://127.0.0.1:{port}\n    ca: {ca}\n    http_version: \"1.1\"\n\
         \x20   client_cert: {{ cert: {cert}, key: {key} }}\n\
         routes:\n  - host: api.test\n    upstream: api\n",
        ca = pki.ca_path().display(),
        cert = gw_client.cert_path.display(),
        key = gw_client.key_path.display(),
    );
    let gw = GatewayProcess::start(&config, &[]);
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-H", "Host: api.test"])
        .arg(format!("{}/", gw.url()))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "client=slapenir-gateway",
        "{}",
        gw.stderr()
    );

    // Without the client certificate the same upstream refuses the gateway: 502.
    let config = config.replace(
        &format!(
            "    client_cert: {{ cert: {}, key: {} }}\n",
            gw_client.cert_path.display(),
            gw_client.key_path.display()
        ),
        "",
    );
    let gw = GatewayProcess::start(&config, &[]);
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            "-H",
            "Host: api.test",
        ])
        .arg(format!("{}/", gw.url()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "502");
}
