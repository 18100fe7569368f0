//! WebSocket through the gateway with real peers on both sides: a Python `websockets` server
//! upstream behind TLS (its own test CA) and a Python `websockets` client as the agent, in
//! gateway mode (mTLS) and through `CONNECT` (an HTTPS proxy with a client certificate).
//!
//! Each leak probe first runs the same exchange straight to the upstream, where the real key
//! does reach the client (and the dummy or foreign dummy reaches the upstream), so the checks
//! through the gateway can fail.
use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::child::ServerProcess;
use common::decode::any_decoding_holds;
use common::gateway::GatewayProcess;
use common::pki::TestPki;
use common::wait::wait_for;

const DUMMY: &str = "sk-dummy-openai";
const REAL: &str = "sk-real-OPENAI-7f3a9c1e5b2d4f6a8c0e";
/// The dummy of a credential bound to another upstream, and its real value.
const FOREIGN: &str = "ghp-dummy-github";
const FOREIGN_REAL: &str = "ghp_realGITHUB0123456789abcdefABCDEF";

struct Setup {
    gw: GatewayProcess,
    _upstream: ServerProcess,
    upstream_port: u16,
    upstream_ca: PathBuf,
    upstream_log: PathBuf,
    certs: PathBuf,
    _pki_dir: tempfile::TempDir,
}

/// How the agent reaches the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// Straight to the upstream: the probe that shows what leaks without the gateway.
    Direct,
    /// Gateway mode: `wss://api.test/...` with the connection made to the gateway (mTLS).
    Gateway,
    /// `CONNECT` through the gateway as an HTTPS proxy, with a client certificate.
    Connect,
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/traffic/websocket")
        .join(name)
}

/// The upstream (`mode`: `plain`, or `deflate` to accept compression in every `101`) and a
/// gateway routing `api.test` to it with `websocket: true`.
fn setup(mode: &str) -> Setup {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(&pki_dir.path().join("upstream"));
    let upstream_log = pki_dir.path().join("upstream.jsonl");
    let mut cmd = Command::new("python3");
    cmd.arg(script("ws_upstream.py"))
        .arg(pki.server_cert_path())
        .arg(pki.server_key_path())
        .arg(&upstream_log)
        .arg(mode)
        .env("REAL", REAL);
    let upstream = ServerProcess::start(cmd, "the WebSocket upstream (python3 websockets)");
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    slapenir::pki::init(&certs, slapenir::pki::InitOptions::default()).unwrap();
    let c = certs.display();
    let listener = common::gateway::mtls_listener(&certs);
    let config = format!(
        "{listener}admin:\n  address: {{admin}}\n\
         interception:\n  ca_cert: {c}/intercept_ca.crt\n  ca_key: {c}/intercept_ca.key\n\
         upstreams:\n  api:\n    url: https://127.0.0.1:{port}\n    ca: {ca}\n\
         \x20 other:\n    url: https://127.0.0.1:9\n\
         credentials:\n  openai:\n    dummy: {DUMMY}\n    real: {{ env: TEST_OPENAI_KEY }}\n    upstreams: [api]\n    swap_in: {{ websocket: true }}\n\
         \x20 github:\n    dummy: {FOREIGN}\n    real: {{ env: TEST_GITHUB_KEY }}\n    upstreams: [other]\n\
         routes:\n  - host: api.test\n    upstream: api\n    websocket: true\n\
         \x20 - host: other.test\n    upstream: other\n",
        port = upstream.port,
        ca = pki.ca_path().display(),
    );
    let gw = GatewayProcess::start_in(
        dir,
        &config,
        &[("TEST_OPENAI_KEY", REAL), ("TEST_GITHUB_KEY", FOREIGN_REAL)],
    );
    Setup {
        gw,
        upstream_port: upstream.port,
        _upstream: upstream,
        upstream_ca: pki.ca_path().to_owned(),
        upstream_log,
        certs,
        _pki_dir: pki_dir,
    }
}

/// One observation of the agent: what and the bytes.
type Seen = Vec<(String, Vec<u8>)>;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn json_lines(text: &str, key: &str) -> Seen {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v[key].as_str().unwrap().to_owned(),
                hex(v["hex"].as_str().unwrap()),
            )
        })
        .collect()
}

/// Runs the agent script for `scenario`; returns what it saw.
fn agent(s: &Setup, via: Via, scenario: &str) -> Seen {
    let f = |n: &str| s.certs.join(n);
    let gw = format!("127.0.0.1:{}", s.gw.listen.port());
    let mut cmd = Command::new("python3");
    cmd.arg(script("ws_agent.py")).arg(scenario);
    for var in [
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        cmd.env_remove(var);
    }
    match via {
        Via::Direct => {
            cmd.env("WS_URL", format!("wss://127.0.0.1:{}/ws", s.upstream_port))
                .env("WS_TRUST", &s.upstream_ca);
        }
        Via::Gateway => {
            cmd.env("WS_URL", "wss://api.test/ws")
                .env("WS_CONNECT", &gw)
                .env("WS_SNI", "localhost");
        }
        Via::Connect => {
            cmd.env("WS_URL", "wss://api.test/ws")
                .env("WS_PROXY", format!("https://{gw}"));
        }
    }
    if via != Via::Direct {
        cmd.env("WS_TRUST", f("root_ca.crt"))
            .env("WS_CERT", f("agent-1.crt"))
            .env("WS_KEY", f("agent-1.key"));
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "agent ({via:?}, {scenario}) failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_lines(&stdout, "what")
}

fn upstream_log(s: &Setup) -> Seen {
    json_lines(
        &std::fs::read_to_string(&s.upstream_log).unwrap_or_default(),
        "kind",
    )
}

fn get<'a>(seen: &'a Seen, what: &str) -> &'a [u8] {
    seen.iter()
        .find(|(w, _)| w == what)
        .map(|(_, b)| b.as_slice())
        .unwrap_or_else(|| panic!("no `{what}` in {seen:?}"))
}

fn assert_gateway_clean(s: &Setup) {
    let all = format!("{}{}", s.gw.stdout(), s.gw.stderr());
    assert!(
        !all.contains(REAL),
        "the real key is in the gateway's output"
    );
    assert!(
        !all.contains(FOREIGN_REAL),
        "a real key is in the gateway's output"
    );
}

/// The `swap` scenario: what the agent must see and the upstream must receive.
fn check_swap(via: Via) {
    let s = setup("plain");

    // Without the gateway the real key reaches the agent in every shape, and the upstream
    // gets the dummy the agent sent.
    let direct = agent(&s, Via::Direct, "swap");
    for what in [
        "send-real",
        "send-real-fragments",
        "send-real-binary",
        "frame-ping",
        "close-reason",
    ] {
        assert!(
            any_decoding_holds(get(&direct, what), REAL.as_bytes()),
            "direct probe, {what}: {direct:?}"
        );
    }
    let log = upstream_log(&s);
    assert!(
        log.iter()
            .any(|(k, b)| k == "text" && b == format!("Bearer {DUMMY}").as_bytes()),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|(k, b)| k == "offer" && b.starts_with(b"permessage-deflate")),
        "the client offers compression: {log:?}"
    );
    let before = log.len();

    let seen = agent(&s, via, "swap");
    // The offer was stripped, so the upstream did not compress and nothing was negotiated.
    assert_eq!(get(&seen, "extensions"), b"", "{seen:?}");
    // Agent → upstream: the dummy became the real key (text, binary, split across two
    // fragments); the upstream echoed it and the gateway turned it back.
    let log = upstream_log(&s)[before..].to_vec();
    let received: Vec<&[u8]> = log
        .iter()
        .filter(|(k, _)| k == "text" || k == "binary")
        .map(|(_, b)| b.as_slice())
        .collect();
    assert_eq!(
        &received[..3],
        &[
            format!("Bearer {REAL}").as_bytes(),
            format!("\x00bin {REAL}").as_bytes(),
            format!("x {REAL} y").as_bytes(),
        ],
        "{log:?}"
    );
    assert!(
        log.iter().all(|(k, b)| k != "offer" || b.is_empty()),
        "the compression offer reached the upstream: {log:?}"
    );
    assert!(
        !log.iter()
            .any(|(_, b)| any_decoding_holds(b, DUMMY.as_bytes())),
        "a dummy reached the upstream: {log:?}"
    );
    let echoes: Vec<&[u8]> = seen
        .iter()
        .filter(|(w, _)| w == "echo")
        .map(|(_, b)| b.as_slice())
        .collect();
    assert_eq!(
        echoes,
        [
            format!("Bearer {DUMMY}").as_bytes(),
            format!("\x00bin {DUMMY}").as_bytes(),
            format!("x {DUMMY} y").as_bytes(),
        ],
        "{seen:?}"
    );
    // Upstream → agent: the real key became the dummy in a text message, across two
    // fragments, in a binary message, a ping and a close reason.
    let want: [(&str, String); 5] = [
        ("send-real", format!("here is {DUMMY} ok")),
        ("send-real-fragments", format!("split {DUMMY} end")),
        ("send-real-binary", format!("\x00bin {DUMMY}")),
        ("frame-ping", format!("ping {DUMMY}")),
        ("close-reason", format!("bye {DUMMY}")),
    ];
    for (what, text) in want {
        assert_eq!(get(&seen, what), text.as_bytes(), "{via:?}, {what}");
    }
    assert_eq!(get(&seen, "close-code"), b"4000");
    for (what, b) in &seen {
        assert!(
            !any_decoding_holds(b, REAL.as_bytes()),
            "{via:?}: the agent saw the real key in `{what}`"
        );
    }
    let audit = s.gw.stdout_with_lines(1);
    let line = audit
        .lines()
        .find(|l| l.contains("\"status\":101"))
        .unwrap_or_else(|| panic!("no audit line for the upgrade: {audit}"));
    assert!(
        line.contains("\"credentials_in\":[\"openai\"]")
            && line.contains("\"credentials_out\":[\"openai\"]"),
        "{line}"
    );
    assert_gateway_clean(&s);
}

#[test]
fn gateway_mode_scans_frames_both_ways() {
    check_swap(Via::Gateway);
}

#[test]
fn connect_mode_scans_frames_both_ways() {
    check_swap(Via::Connect);
}

/// Waits until the upstream has logged `n` connection ends.
fn wait_upstream_ends(s: &Setup, n: usize) -> Seen {
    wait_for(
        Duration::from_secs(20),
        Duration::from_millis(20),
        "the upstream to see the connection end",
        || {
            let log = upstream_log(s);
            (log.iter().filter(|(k, _)| k == "end").count() >= n).then_some(log)
        },
        || format!("{:?}", upstream_log(s)),
    )
}

#[test]
fn foreign_dummy_closes_the_connection_before_the_upstream_sees_it() {
    let s = setup("plain");
    // Without the gateway the foreign dummy reaches the upstream.
    let direct = agent(&s, Via::Direct, "foreign");
    assert!(direct.iter().any(|(w, _)| w == "unexpected"), "{direct:?}");
    let log = wait_upstream_ends(&s, 1);
    assert!(
        log.iter()
            .any(|(_, b)| any_decoding_holds(b, FOREIGN.as_bytes())),
        "{log:?}"
    );
    let before = log.len();

    for (i, via) in [Via::Gateway, Via::Connect].into_iter().enumerate() {
        let seen = agent(&s, via, "foreign");
        assert!(
            seen.iter().any(|(w, _)| w == "closed"),
            "{via:?}: the connection stayed open: {seen:?}"
        );
        let log = wait_upstream_ends(&s, 2 + i);
        assert!(
            !log[before..]
                .iter()
                .any(|(_, b)| any_decoding_holds(b, FOREIGN.as_bytes())
                    || any_decoding_holds(b, FOREIGN_REAL.as_bytes())),
            "{via:?}: the upstream saw the foreign dummy: {log:?}"
        );
    }
    let audit = s.gw.stdout_with_lines(2);
    let refused = audit
        .lines()
        .filter(|l| {
            l.contains("\"refusal\":\"credential_bound_elsewhere\"")
                && l.contains("\"refused_credential\":\"github\"")
        })
        .count();
    assert_eq!(refused, 2, "{audit}");
    assert_gateway_clean(&s);
}

#[test]
fn upstream_that_accepts_compression_anyway_is_refused() {
    let s = setup("deflate");
    // Straight to it, the client's offer is accepted and the (compressed) real key arrives.
    let direct = agent(&s, Via::Direct, "deflate");
    assert!(
        get(&direct, "extensions").starts_with(b"permessage-deflate"),
        "{direct:?}"
    );
    assert!(any_decoding_holds(
        get(&direct, "send-real"),
        REAL.as_bytes()
    ));

    for via in [Via::Gateway, Via::Connect] {
        let seen = agent(&s, via, "deflate");
        assert_eq!(get(&seen, "status"), b"502", "{via:?}: {seen:?}");
        assert!(
            !seen
                .iter()
                .any(|(_, b)| any_decoding_holds(b, REAL.as_bytes())),
            "{via:?}: {seen:?}"
        );
    }
    let audit = s.gw.stdout_with_lines(2);
    assert_eq!(
        audit
            .lines()
            .filter(|l| l.contains("\"refusal\":\"websocket_handshake_refused\""))
            .count(),
        2,
        "{audit}"
    );
    assert_gateway_clean(&s);
}
