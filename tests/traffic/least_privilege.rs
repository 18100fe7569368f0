//! Least privilege per credential, end to end on the production path (CONNECT with mTLS,
//! interception, a TLS upstream that records what it receives), with real clients: curl, the
//! OpenAI Python SDK through `HTTPS_PROXY`, and Python httpx for bodies sent in pieces.
//!
//! - placement (`swap_in`): the default swaps the `Authorization` header only; a dummy anywhere
//!   else reaches the upstream unchanged, with its `Content-Length`, and is counted;
//! - opt-in body swapping, across chunk boundaries, by media type;
//! - rules (`allow`): the allow/deny matrix, refused before any connection;
//! - per-agent values (`clients`): one dummy, two identities, two real keys; a third identity is
//!   refused;
//! - real values sent by the agent, in every channel and encoding: refused, never forwarded.
use crate::common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use common::client::read_head;
use common::decode::any_decoding_holds;
use common::gateway::GatewayProcess;
use common::upstream::{reversed, RecordedRequest, Upstream, UpstreamKind};

const OPENAI_DUMMY: &str = "sk-dummy-openai";
const OPENAI_REAL: &str = "sk-real-OPENAI-7f3a9c1e5b2d4f6a8c0e";
const BODY_DUMMY: &str = "bk-dummy-bodykey-000";
const BODY_REAL: &str = "bk-REAL-bodykey-9q8w7e6r5t4y";
const QUERY_DUMMY: &str = "qk-dummy-querykey-00";
const QUERY_REAL: &str = "qk-REAL-querykey-1a2s3d4f5g";
const GITHUB_DUMMY: &str = "ghp-dummy-github";
const GITHUB_REAL: &str = "ghp_REALgithubTOKEN0123456789abcdef";
const PC_DUMMY: &str = "pc-dummy-perclient-0";
const PC_REAL_1: &str = "pc-REAL-agent-one-aaaaaaaaaaaa";
const PC_REAL_2: &str = "pc-REAL-agent-two-bbbbbbbbbbbb";
const FOREIGN_DUMMY: &str = "fx-dummy-foreign-000";
const FOREIGN_REAL: &str = "fx-REAL-foreign-zzzzzzzzzzzz";

const REALS: &[&str] = &[
    OPENAI_REAL,
    BODY_REAL,
    QUERY_REAL,
    GITHUB_REAL,
    PC_REAL_1,
    PC_REAL_2,
    FOREIGN_REAL,
];

struct Setup {
    gw: GatewayProcess,
    up: Upstream,
    certs: PathBuf,
}

fn setup() -> Setup {
    let up = Upstream::start(UpstreamKind::Tls);
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    slapenir::pki::init(&certs, slapenir::pki::InitOptions::default()).unwrap();
    for agent in ["agent-2", "agent-3"] {
        slapenir::pki::issue_client_cert(&certs, agent, Duration::from_secs(3600)).unwrap();
    }
    let config = format!(
        r#"{listener}admin:
  address: {{admin}}
interception:
  ca_cert: {c}/intercept_ca.crt
  ca_key: {c}/intercept_ca.key
upstreams:
  api: {{ url: "https://127.0.0.1:{port}", ca: {ca} }}
  other: {{ url: "https://127.0.0.1:{port}", ca: {ca} }}
credentials:
  openai:
    dummy: {OPENAI_DUMMY}
    real: {{ env: K_OPENAI }}
    upstreams: [api]
  bodykey:
    dummy: {BODY_DUMMY}
    real: {{ env: K_BODY }}
    upstreams: [api]
    swap_in: {{ headers: [], body: [application/x-www-form-urlencoded] }}
  querykey:
    dummy: {QUERY_DUMMY}
    real: {{ env: K_QUERY }}
    upstreams: [api]
    swap_in: {{ headers: [x-api-key], query: [key] }}
  github:
    dummy: {GITHUB_DUMMY}
    real: {{ env: K_GITHUB }}
    upstreams: [api]
    allow:
      - methods: [GET]
        paths: ["/repos/acme/*", "/repos/acme/*/**"]
      - methods: [POST]
        paths: ["/repos/acme/*/issues"]
        query: []
  perclient:
    dummy: {PC_DUMMY}
    upstreams: [api]
    clients:
      agent-1: {{ env: K_PC1 }}
      agent-2: {{ env: K_PC2 }}
  foreign:
    dummy: {FOREIGN_DUMMY}
    real: {{ env: K_FOREIGN }}
    upstreams: [other]
routes:
  - host: api.test
    upstream: api
  - host: other.test
    upstream: other
"#,
        listener = common::gateway::mtls_listener(&certs),
        c = certs.display(),
        port = up.addr().port(),
        ca = up.ca_path().display(),
    );
    let gw = GatewayProcess::start_in(
        dir,
        &config,
        &[
            ("K_OPENAI", OPENAI_REAL),
            ("K_BODY", BODY_REAL),
            ("K_QUERY", QUERY_REAL),
            ("K_GITHUB", GITHUB_REAL),
            ("K_PC1", PC_REAL_1),
            ("K_PC2", PC_REAL_2),
            ("K_FOREIGN", FOREIGN_REAL),
        ],
    );
    Setup { gw, up, certs }
}

/// What curl got: exit code, status, the `x-slapenir-refusal` header, the whole output.
struct Answer {
    code: i32,
    status: Option<u16>,
    refusal: Option<String>,
    out: String,
}

impl Setup {
    fn f(&self, name: &str) -> PathBuf {
        self.certs.join(name)
    }

    /// curl through the gateway as an HTTPS proxy, with `agent`'s client certificate.
    fn curl(&self, agent: &str, url: &str, extra: &[&str]) -> Answer {
        let out = Command::new("curl")
            .args(["-s", "-S", "-i", "--max-time", "20", "--proxy"])
            .arg(format!("https://127.0.0.1:{}", self.gw.listen.port()))
            .arg("--proxy-cacert")
            .arg(self.f("root_ca.crt"))
            .arg("--proxy-cert")
            .arg(self.f(&format!("{agent}.crt")))
            .arg("--proxy-key")
            .arg(self.f(&format!("{agent}.key")))
            .arg("--cacert")
            .arg(self.f("root_ca.crt"))
            .args(extra)
            .arg(url)
            .env_remove("SSL_CERT_FILE")
            .env_remove("CURL_CA_BUNDLE")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // The last response head (after any `100 Continue`).
        let head = text
            .split("\r\n\r\n")
            .filter(|h| h.starts_with("HTTP/"))
            .last()
            .unwrap_or("");
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok());
        let refusal = head.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-slapenir-refusal:")
                .map(|v| v.trim().to_owned())
        });
        Answer {
            code: out.status.code().unwrap_or(-1),
            status,
            refusal,
            out: format!("{text}{}", String::from_utf8_lossy(&out.stderr)),
        }
    }

    /// The requests the upstream recorded from `from` on (its own count), waiting for `n`.
    fn requests_after(&self, from: usize, n: usize) -> Vec<RecordedRequest> {
        let all = self
            .up
            .wait_for_requests_blocking(from + n, Duration::from_secs(10));
        all.into_iter().skip(from).collect()
    }

    fn metrics(&self) -> String {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "10"])
            .arg(format!("http://{}/metrics", self.gw.admin))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn status_json(&self) -> serde_json::Value {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "10"])
            .arg(format!("http://{}/status", self.gw.admin))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// No real value in the gateway's own output (logs, audit lines).
    fn assert_logs_clean(&self) {
        let all = format!("{}{}", self.gw.stdout(), self.gw.stderr());
        for real in REALS {
            assert!(
                !all.contains(real),
                "a real value is in the gateway's output"
            );
        }
    }
}

/// The value of a counter sample whose labels contain every `labels` pair; 0 when absent.
fn counter(metrics: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[test]
fn default_placement_swaps_the_authorization_header_only() {
    let s = setup();
    let body = format!(
        r#"{{"messages":[{{"role":"user","content":"my key is {OPENAI_DUMMY}, keep it"}}]}}"#
    );
    let a = s.curl(
        "agent-1",
        &format!("https://api.test/echo?note={OPENAI_DUMMY}"),
        &[
            "--http1.1",
            "-H",
            &format!("Authorization: Bearer {OPENAI_DUMMY}"),
            "-H",
            &format!("X-Note: {OPENAI_DUMMY}"),
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body,
        ],
    );
    assert_eq!(a.code, 0, "{}", a.out);
    assert_eq!(a.status, Some(200), "{}", a.out);
    let r = &s.requests_after(0, 1)[0];
    assert_eq!(
        r.header_str("authorization").unwrap(),
        format!("Bearer {OPENAI_REAL}"),
        "the Authorization header is swapped"
    );
    assert_eq!(
        r.header_str("x-note").unwrap(),
        OPENAI_DUMMY,
        "other headers keep the dummy"
    );
    assert_eq!(
        r.path,
        format!("/echo?note={OPENAI_DUMMY}"),
        "the URL keeps the dummy"
    );
    assert_eq!(
        r.body.text().unwrap(),
        body,
        "the body reaches the upstream unchanged"
    );
    assert_eq!(
        r.header_str("content-length").as_deref(),
        Some(body.len().to_string().as_str()),
        "a body with nothing to swap keeps its Content-Length: {:?}",
        r.headers
    );
    assert!(r.header("transfer-encoding").is_none());
    let m = s.metrics();
    assert_eq!(
        counter(
            &m,
            "slapenir_misplaced_dummies_total",
            &[("credential", "openai")]
        ),
        3,
        "the header, the query and the body each kept one dummy:\n{m}"
    );
    assert_eq!(
        counter(
            &m,
            "slapenir_replacements_total",
            &[("credential", "openai"), ("direction", "request")]
        ),
        1
    );
    let audit = s.gw.stdout_with_lines(1);
    assert!(
        audit.contains(r#""credentials_in":["openai"]"#)
            && audit.contains(r#""credentials_kept":["openai"]"#),
        "{audit}"
    );
    s.assert_logs_clean();
}

/// The OpenAI Python SDK, configured the way an agent would be (base URL, `HTTPS_PROXY`), sends
/// a chat history holding its own dummy: the key goes in the header, the history unchanged.
#[test]
fn openai_sdk_keeps_the_dummy_in_the_chat_history() {
    let s = setup();
    let script = r#"
import os, ssl, sys, httpx, openai
root, cert, key = sys.argv[1:4]
proxy_ctx = ssl.create_default_context(cafile=root)
proxy_ctx.load_cert_chain(cert, key)
http = httpx.Client(proxy=httpx.Proxy(os.environ["HTTPS_PROXY"], ssl_context=proxy_ctx),
                    verify=ssl.create_default_context(cafile=root), timeout=20)
client = openai.OpenAI(api_key=os.environ["OPENAI_API_KEY"], base_url="https://api.test/v1",
                       http_client=http, max_retries=0)
raw = client.chat.completions.with_raw_response.create(
    model="gpt-test",
    messages=[{"role": "user", "content": "Earlier you saw " + os.environ["OPENAI_API_KEY"] + "; repeat it backwards."}],
)
print("status", raw.http_response.status_code)
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(s.f("root_ca.crt"))
        .arg(s.f("agent-1.crt"))
        .arg(s.f("agent-1.key"))
        .env(
            "HTTPS_PROXY",
            format!("https://127.0.0.1:{}", s.gw.listen.port()),
        )
        .env("OPENAI_API_KEY", OPENAI_DUMMY)
        .env_remove("SSL_CERT_FILE")
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("OPENAI_BASE_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The test upstream answers 404 to an unknown path: the SDK raises, and that is fine; what
    // matters is what the upstream received.
    let reqs = s.requests_after(0, 1);
    let r = &reqs[0];
    assert_eq!(
        r.path,
        "/v1/chat/completions",
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        r.header_str("authorization").unwrap(),
        format!("Bearer {OPENAI_REAL}")
    );
    let text = r.body.text().unwrap();
    assert!(
        text.contains(&format!("Earlier you saw {OPENAI_DUMMY}")),
        "the chat history reaches the model with the dummy: {text}"
    );
    assert!(!any_decoding_holds(text.as_bytes(), OPENAI_REAL.as_bytes()));
    s.assert_logs_clean();
}

/// A credential that opts into body swapping gets its dummy replaced in form bodies, also when
/// the dummy arrives split across chunks at every position; the same body as `text/plain` is
/// forwarded unchanged.
#[test]
fn opt_in_body_swap_works_across_chunk_boundaries() {
    let s = setup();
    let script = r#"
import os, ssl, sys, time, httpx
root, cert, key, dummy, ctype = sys.argv[1:6]
proxy_ctx = ssl.create_default_context(cafile=root)
proxy_ctx.load_cert_chain(cert, key)
with httpx.Client(proxy=httpx.Proxy(os.environ["HTTPS_PROXY"], ssl_context=proxy_ctx),
                  verify=ssl.create_default_context(cafile=root), timeout=20) as c:
    for cut in range(1, len(dummy)):
        def pieces():
            yield ('{"k":"' + dummy[:cut]).encode()
            time.sleep(0.02)  # a separate write: the gateway reads the halves apart
            yield (dummy[cut:] + '","cut":%d}' % cut).encode()
        r = c.post("https://api.test/echo", content=pieces(), headers={"content-type": ctype})
        print(cut, r.status_code)
"#;
    let cuts = BODY_DUMMY.len() - 1;
    for (ctype, want) in [
        ("application/x-www-form-urlencoded", BODY_REAL),
        ("text/plain", BODY_DUMMY),
    ] {
        let before = s.up.requests().len();
        let out = Command::new("python3")
            .args(["-c", script])
            .arg(s.f("root_ca.crt"))
            .arg(s.f("agent-1.crt"))
            .arg(s.f("agent-1.key"))
            .arg(BODY_DUMMY)
            .arg(ctype)
            .env(
                "HTTPS_PROXY",
                format!("https://127.0.0.1:{}", s.gw.listen.port()),
            )
            .env_remove("SSL_CERT_FILE")
            .env_remove("REQUESTS_CA_BUNDLE")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reqs = s.requests_after(before, cuts);
        assert_eq!(reqs.len(), cuts);
        for r in &reqs {
            let text = r.body.text().unwrap();
            assert!(
                text.starts_with(&format!(r#"{{"k":"{want}","cut":"#)),
                "{ctype}: {text}"
            );
        }
    }
    s.assert_logs_clean();
}

/// A credential's `allow` rules: each request with its dummy in the Authorization header is
/// swapped or refused with 403 before any connection, by method, path pattern and query.
#[test]
fn rules_allow_and_deny_before_connecting() {
    let s = setup();
    let auth = format!("Authorization: Bearer {GITHUB_DUMMY}");
    // (method, path, with the dummy, forwarded)
    let cases: &[(&str, &str, bool, bool)] = &[
        ("GET", "/repos/acme/widgets", true, true),
        ("GET", "/repos/acme/widgets/issues/3", true, true),
        ("POST", "/repos/acme/widgets/issues", true, true),
        ("POST", "/repos/acme/widgets/issues?labels=x", true, false),
        ("DELETE", "/repos/acme/widgets", true, false),
        ("GET", "/repos/other/widgets", true, false),
        ("GET", "/repos/acme", true, false),
        ("GET", "/repos/acme/w%2Fx", true, false),
        ("GET", "/repos/%61cme/widgets", true, true),
        ("POST", "/repos/acme/widgets/pulls", true, false),
        // Without the dummy the rules do not apply: the route decides.
        ("DELETE", "/repos/other/widgets", false, true),
    ];
    for (method, path, with_dummy, forwarded) in cases {
        let before = s.up.requests().len();
        let mut extra = vec!["-X", method];
        if *with_dummy {
            extra.extend(["-H", auth.as_str()]);
        }
        let a = s.curl("agent-1", &format!("https://api.test{path}"), &extra);
        assert_eq!(a.code, 0, "{method} {path}: {}", a.out);
        if *forwarded {
            assert_ne!(a.status, Some(403), "{method} {path}: {}", a.out);
            let r = &s.requests_after(before, 1)[0];
            if *with_dummy {
                assert_eq!(
                    r.header_str("authorization").unwrap(),
                    format!("Bearer {GITHUB_REAL}"),
                    "{method} {path}"
                );
            }
        } else {
            assert_eq!(a.status, Some(403), "{method} {path}: {}", a.out);
            assert_eq!(
                a.refusal.as_deref(),
                Some("credential_rule_denied"),
                "{}",
                a.out
            );
            assert!(
                a.out.contains("credential `github`") && a.out.contains("credentials.github.allow"),
                "the refusal names the credential and its rule set: {}",
                a.out
            );
            assert_eq!(
                s.up.requests().len(),
                before,
                "{method} {path} reached the upstream"
            );
        }
    }
    let m = s.metrics();
    assert!(
        counter(
            &m,
            "slapenir_refusals_total",
            &[("reason", "credential_rule_denied")]
        ) >= 6
    );
    s.assert_logs_clean();
}

/// One dummy, two client identities, two real keys; an identity without a value is refused;
/// every client's key is scrubbed from every response.
#[test]
fn per_client_values_reach_the_upstream_by_identity() {
    let s = setup();
    let auth = format!("Authorization: Bearer {PC_DUMMY}");
    for (agent, want) in [("agent-1", PC_REAL_1), ("agent-2", PC_REAL_2)] {
        let before = s.up.requests().len();
        let a = s.curl(agent, "https://api.test/v1/models", &["-H", &auth]);
        assert_eq!(a.code, 0, "{}", a.out);
        let r = &s.requests_after(before, 1)[0];
        assert_eq!(
            r.header_str("authorization").unwrap(),
            format!("Bearer {want}"),
            "{agent}"
        );
    }
    let before = s.up.requests().len();
    let a = s.curl("agent-3", "https://api.test/v1/models", &["-H", &auth]);
    assert_eq!(a.status, Some(403), "{}", a.out);
    assert_eq!(
        a.refusal.as_deref(),
        Some("credential_not_for_client"),
        "{}",
        a.out
    );
    assert_eq!(
        s.up.requests().len(),
        before,
        "agent-3's request reached the upstream"
    );
    // agent-3 still uses credentials shared by every client.
    let a = s.curl(
        "agent-3",
        "https://api.test/v1/models",
        &["-H", &format!("Authorization: Bearer {OPENAI_DUMMY}")],
    );
    assert_ne!(a.status, Some(403), "{}", a.out);
    // agent-1 reads agent-2's key parked upstream: scrubbed like its own.
    let a = s.curl(
        "agent-1",
        &format!(
            "https://api.test/echo-header?name=x-parked&{}",
            reversed("value", PC_REAL_2)
        ),
        &[],
    );
    assert!(
        a.out.contains(&format!("x-parked: {PC_DUMMY}")),
        "{}",
        a.out
    );
    for real in REALS {
        assert!(!a.out.contains(real));
    }
    let m = s.metrics();
    for agent in ["agent-1", "agent-2"] {
        assert_eq!(
            counter(
                &m,
                "slapenir_replacements_total",
                &[
                    ("credential", "perclient"),
                    ("client", agent),
                    ("direction", "request")
                ]
            ),
            1,
            "{agent}:\n{m}"
        );
    }
    let status = s.status_json();
    let clients = status["credentials"]
        .as_array()
        .and_then(|list| list.iter().find(|c| c["name"] == "perclient"))
        .map(|c| c["clients"].clone())
        .unwrap_or_default();
    let ids: Vec<&str> = clients
        .as_array()
        .map(|l| l.iter().filter_map(|c| c["identity"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, ["agent-1", "agent-2"], "{status}");
    assert!(clients[0]["last_used"].is_u64(), "{status}");
    s.assert_logs_clean();
}

/// A real value sent by the agent — a key that leaked into the sandbox some other way — is
/// refused in every channel and encoding, even towards its own upstream; the upstream never
/// sees it. First: the same bytes sent without the gateway reach the upstream whole.
#[test]
fn real_values_from_the_agent_are_refused_everywhere() {
    let s = setup();
    // The control: straight to the upstream, the key arrives.
    let direct = Command::new("curl")
        .args(["-s", "--max-time", "10", "--cacert"])
        .arg(s.up.ca_path())
        .args(["-H", &format!("X-Leak: {OPENAI_REAL}")])
        .arg(format!("https://127.0.0.1:{}/echo", s.up.addr().port()))
        .env_remove("SSL_CERT_FILE")
        .env_remove("CURL_CA_BUNDLE")
        .output()
        .unwrap();
    assert!(direct.status.success());
    let seen = s.requests_after(0, 1);
    assert_eq!(seen[0].header_str("x-leak").as_deref(), Some(OPENAI_REAL));

    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("user:{OPENAI_REAL}"));
    let json_escaped = OPENAI_REAL.replace('-', "\\u002d");
    let pct: String = OPENAI_REAL.bytes().map(|b| format!("%{b:02X}")).collect();
    let auth_real = format!("Authorization: Bearer {OPENAI_REAL}");
    let leak_header = format!("X-Leak: {OPENAI_REAL}");
    let basic = format!("Authorization: Basic {b64}");
    let github_in_openai = format!("X-Other: {GITHUB_REAL}");
    let body_plain = format!("note {OPENAI_REAL}");
    let body_b64 = format!("{{\"blob\":\"{b64}\"}}");
    let body_json = format!("{{\"k\":\"{json_escaped}\"}}");
    let query_real = format!("https://api.test/echo?q={OPENAI_REAL}");
    let query_pct = format!("https://api.test/echo?q={pct}");
    let path_real = format!("https://api.test/x/{OPENAI_REAL}");
    let other_real = format!("X-Leak: {FOREIGN_REAL}");
    // (what, agent, url, curl arguments). Bodies go to `/sink`, which reads the whole request
    // before it answers, as an API does: `/echo` answers at once, and when its `200` has
    // reached the agent before the key's chunk is read, the refusal can only cut the response
    // (the key still never reaches the upstream; that case is
    // `a_refused_body_after_an_early_answer_cuts_it`).
    let cases: Vec<(&str, &str, &str, Vec<&str>)> = vec![
        (
            "Authorization, own upstream",
            "agent-1",
            "https://api.test/echo",
            vec!["-H", &auth_real],
        ),
        (
            "another header",
            "agent-1",
            "https://api.test/echo",
            vec!["-H", &leak_header],
        ),
        (
            "Basic credentials",
            "agent-1",
            "https://api.test/echo",
            vec!["-H", &basic],
        ),
        (
            "another credential's key",
            "agent-1",
            "https://api.test/echo",
            vec!["-H", &github_in_openai],
        ),
        ("query", "agent-1", &query_real, vec![]),
        ("query, percent-encoded", "agent-1", &query_pct, vec![]),
        ("path", "agent-1", &path_real, vec![]),
        (
            "body",
            "agent-1",
            "https://api.test/sink",
            vec!["--data-binary", &body_plain],
        ),
        (
            "body, base64",
            "agent-1",
            "https://api.test/sink",
            vec!["--data-binary", &body_b64],
        ),
        (
            "body, JSON escapes",
            "agent-1",
            "https://api.test/sink",
            vec!["--data-binary", &body_json],
        ),
        (
            "key of another upstream",
            "agent-2",
            "https://other.test/echo",
            vec!["-H", &other_real],
        ),
    ];
    for (what, agent, url, extra) in &cases {
        let before = s.up.requests().len();
        let a = s.curl(agent, url, extra);
        assert_eq!(a.status, Some(403), "{what}: {}", a.out);
        assert_eq!(
            a.refusal.as_deref(),
            Some("real_secret_from_agent"),
            "{what}: {}",
            a.out
        );
        for real in REALS {
            assert!(
                !a.out.contains(real),
                "{what}: the answer holds a real value"
            );
        }
        // A body is checked as it streams: the upstream may have the request's head and the
        // bytes before the key, never the key, and never a complete request.
        for r in s.up.requests().iter().skip(before) {
            assert!(
                !r.body.complete,
                "{what}: a complete request reached the upstream"
            );
            let bytes = format!("{} {:?}", r.path, r.headers);
            for real in REALS {
                assert!(
                    !any_decoding_holds(bytes.as_bytes(), real.as_bytes()),
                    "{what}"
                );
                assert!(
                    !any_decoding_holds(
                        r.body.bytes.as_deref().unwrap_or_default(),
                        real.as_bytes()
                    ),
                    "{what}"
                );
            }
        }
    }
    let audit = s.gw.stdout();
    assert!(audit.contains(r#""refusal":"real_secret_from_agent""#));
    assert!(
        audit.contains(r#""refused_credential":"openai""#),
        "logged by name"
    );
    s.assert_logs_clean();
}

/// A body nothing swaps into keeps its `Content-Length`, and is still scanned: a foreign dummy
/// in it aborts the request before the chunk holding it leaves, and the upstream never gets a
/// complete request. First: the same body sent straight to the upstream arrives whole.
#[test]
fn a_body_with_its_length_is_still_scanned_for_foreign_dummies() {
    let s = setup();
    let body = format!("{}{FOREIGN_DUMMY}{}", "a".repeat(4000), "b".repeat(4000));
    let direct = Command::new("curl")
        .args(["-s", "--max-time", "10", "--cacert"])
        .arg(s.up.ca_path())
        .args(["-H", "Content-Type: text/plain", "--data-binary", &body])
        .arg(format!("https://127.0.0.1:{}/echo", s.up.addr().port()))
        .env_remove("SSL_CERT_FILE")
        .env_remove("CURL_CA_BUNDLE")
        .output()
        .unwrap();
    assert!(direct.status.success());
    let seen = s.requests_after(0, 1);
    assert!(seen[0].body.complete && seen[0].body.text().unwrap().contains(FOREIGN_DUMMY));

    let a = s.curl(
        "agent-1",
        "https://api.test/echo",
        &[
            "--http1.1",
            "-H",
            "Content-Type: text/plain",
            "--data-binary",
            &body,
        ],
    );
    assert_eq!(a.status, Some(403), "{}", a.out);
    assert_eq!(
        a.refusal.as_deref(),
        Some("credential_bound_elsewhere"),
        "{}",
        a.out
    );
    for r in s.up.requests().iter().skip(1) {
        assert!(!r.body.complete, "a complete request reached the upstream");
        assert_eq!(
            r.header_str("content-length").as_deref(),
            Some(body.len().to_string().as_str()),
            "the body kept its length"
        );
        let got = r.body.bytes.as_deref().unwrap_or_default();
        assert!(!String::from_utf8_lossy(got).contains(FOREIGN_DUMMY));
    }
    s.assert_logs_clean();
}

/// A raw HTTP/1.1 upstream that keeps every byte it receives, as it arrives, and never answers:
/// what a colluding upstream sees, and when.
fn raw_upstream() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&got);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let sink = std::sync::Arc::clone(&sink);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    sink.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
    });
    (port, got)
}

/// When the agent's streamed body reaches the upstream must not depend on the real key's bytes:
/// the request rules refuse real values, and holding back exactly the tails that start one
/// would let an agent and a colluding upstream test a guess of the key byte by byte (a right
/// guess held, a wrong one forwarded at once). A right and a wrong guess of the key's start are
/// released alike.
#[test]
fn a_streamed_guess_of_a_real_key_reaches_the_upstream_when_a_wrong_guess_does() {
    use std::io::Write;
    let (port, got) = raw_upstream();
    let config = format!(
        "listeners:\n  - name: agents\n    address: {{listen}}\n\
         admin:\n  address: {{admin}}\n\
         upstreams:\n  api:\n    url: http://127.0.0.1:{port}\n\
         credentials:\n  openai:\n    dummy: {OPENAI_DUMMY}\n    real: {{ env: K_OPENAI }}\n    upstreams: [api]\n\
         routes:\n  - host: api.test\n    upstream: api\n"
    );
    let gw = GatewayProcess::start(&config, &[("K_OPENAI", OPENAI_REAL)]);
    let right = &OPENAI_REAL[..12];
    let wrong = "sk-rZZZ-QQQQ";
    assert_eq!(right.len(), wrong.len());
    let mut released = Vec::new();
    for (i, guess) in [right, wrong].into_iter().enumerate() {
        // The blank ends a token: the marker is released, whatever follows it.
        let marker = format!("probe-{i}: ");
        let mut agent = std::net::TcpStream::connect(gw.listen).unwrap();
        write!(
            agent,
            "POST /upload HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .unwrap();
        let chunk = format!("{marker}{guess}");
        write!(agent, "{:x}\r\n{chunk}\r\n", chunk.len()).unwrap();
        agent.flush().unwrap();
        // Readiness wait: the chunk holding the marker has reached the upstream whole (its
        // data ends at the next CRLF).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let after_marker = loop {
            let seen = got.lock().unwrap().clone();
            let text = String::from_utf8_lossy(&seen).into_owned();
            if let Some(at) = text.find(&marker) {
                let rest = &text[at + marker.len()..];
                if let Some(end) = rest.find("\r\n") {
                    break rest[..end].to_owned();
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the marker never arrived: {text}"
            );
            std::thread::sleep(Duration::from_millis(5)); // poll interval, not synchronisation
        };
        released.push(after_marker);
        drop(agent);
    }
    assert_eq!(
        released[0].len(),
        released[1].len(),
        "a right guess of the key's start is released differently from a wrong one: {:?}",
        released.iter().map(String::len).collect::<Vec<_>>()
    );
    let all = format!("{}{}", gw.stdout(), gw.stderr());
    assert!(!all.contains(OPENAI_REAL));
}

/// An upstream that answers before it has read the request body (`/echo` streams the body back
/// as it comes) gets its `200` to the agent first; a real value in a later body chunk is still
/// refused: the response is cut (its last chunk never comes), the upstream never gets the value
/// nor a complete request, and the agent never sees the value. First: the same bytes sent
/// without the gateway reach the upstream and come back whole.
#[test]
fn a_refused_body_after_an_early_answer_cuts_it() {
    use std::io::{BufReader, Read, Write};
    let up = Upstream::start(UpstreamKind::Plain);
    let gw = GatewayProcess::start(
        &format!(
            "listeners:\n  - name: agents\n    address: {{listen}}\n\
             admin:\n  address: {{admin}}\n\
             upstreams:\n  api: {{ url: \"{}\" }}\n\
             credentials:\n  openai:\n    dummy: {OPENAI_DUMMY}\n    real: {{ env: TEST_OPENAI_KEY }}\n    upstreams: [api]\n\
             routes:\n  - host: api.test\n    upstream: api\n",
            up.url()
        ),
        &[("TEST_OPENAI_KEY", OPENAI_REAL)],
    );
    let second = format!("note {OPENAI_REAL}");
    // Sends the head and a first chunk, waits for the answer's head, then sends the chunk
    // with the key and the end; returns what came back after the head.
    let exchange = |addr: std::net::SocketAddr| {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(
            b"POST /echo HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        )
        .unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        assert_eq!(read_head(&mut r).0, 200);
        let _ = write!(s, "{:x}\r\n{second}\r\n0\r\n\r\n", second.len());
        let mut rest = Vec::new();
        let _ = r.read_to_end(&mut rest);
        String::from_utf8_lossy(&rest).into_owned()
    };
    let direct = exchange(up.addr());
    assert!(direct.contains(OPENAI_REAL), "the control: {direct}");
    assert!(direct.ends_with("0\r\n\r\n"), "the control: {direct}");

    // The upstream records a request after its response has ended: wait for the control's.
    let before = up
        .wait_for_requests_blocking(1, Duration::from_secs(10))
        .len();
    let through = exchange(gw.listen);
    assert!(!through.contains(OPENAI_REAL), "{through}");
    assert!(
        !through.ends_with("0\r\n\r\n"),
        "the response is cut: {through}"
    );
    let seen = up.wait_for_requests_blocking(before + 1, Duration::from_secs(10));
    let r = &seen[before];
    assert!(!r.body.complete, "a complete request reached the upstream");
    assert!(!any_decoding_holds(
        r.body.bytes.as_deref().unwrap_or_default(),
        OPENAI_REAL.as_bytes()
    ));
    assert!(
        gw.stdout()
            .contains(r#""refusal":"real_secret_from_agent""#),
        "{}",
        gw.stdout()
    );
}
