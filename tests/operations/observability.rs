//! Observability end to end, with the real tools operators use: a real Prometheus scraping a
//! real gateway evaluates every PromQL expression of the shipped Grafana dashboard and alert
//! rules (`grafana/`); headless Chromium renders the status page; and after every kind of
//! request every output of the gateway — `/metrics`, `/status`, `/`, the audit log, the
//! process log — is searched for real secrets and dummy values.
//!
//! The three end-to-end tests drive the same traffic ([`drive_every_kind`]) through a gateway with an mTLS
//! listener, interception (CONNECT), a working upstream, an upstream on a closed port, and
//! credentials that are available, bound elsewhere and unavailable; then a successful reload
//! (with a rotated secret) and a failed one.
//!
//! Tools, from Debian packages (a missing one fails the test with its install command):
//! `prometheus` and `promtool` (`apt-get install -y prometheus`), `chromium`
//! (`apt-get install -y chromium`) and `curl`. Prometheus is started here on a loopback port,
//! never as a system service.
use crate::common;

mod outputs;
mod prometheus;
mod status_page;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::gateway::{free_port, GatewayProcess};
use common::tools::{repo, run_with_deadline, text, tool};
use common::upstream::{Upstream, UpstreamKind};
use serde_json::Value;

const DUMMY: &str = "sk-dummy-openai";
/// The OpenAI key as first read from its file; [`ROTATED`] replaces it on the first reload.
const REAL: &str = "sk-real-OPENAI-obs-7f3a9c1e5b2d4f6a8c0e";
const ROTATED: &str = "sk-real-OPENAI-obs-rotated-19d2e8b4c6a0";
const GH_DUMMY: &str = "ghp-dummy-github";
const GH_REAL: &str = "ghp_REALgithubToken0123456789abcdef";
const MISSING_DUMMY: &str = "sk-dummy-missing";

const REAL_SECRETS: [&str; 3] = [REAL, ROTATED, GH_REAL];
const DUMMIES: [&str; 3] = [DUMMY, GH_DUMMY, MISSING_DUMMY];

/// The job name the dashboard and the alert rules select the gateway by.
const JOB: &str = "slapenir-gateway";

// ---------------------------------------------------------------------------------------------
// Tools and waiting
// ---------------------------------------------------------------------------------------------

/// Polls every 50 ms; see [`common::wait::wait_for`].
fn wait_for<T>(
    timeout: Duration,
    what: &str,
    check: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    common::wait::wait_for(timeout, Duration::from_millis(50), what, check, describe)
}

/// A curl command that ignores the environment's proxies and trust settings.
fn curl() -> Command {
    let mut cmd = Command::new(tool("curl", "apt-get install -y curl"));
    cmd.args(["-s", "-S", "--max-time", "20"]);
    for var in [
        "SSL_CERT_FILE",
        "CURL_CA_BUNDLE",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// `GET url` on a plain-HTTP address; returns the status, the headers and the body.
fn http_get(url: &str) -> (u16, String, String) {
    let out = curl()
        .args(["-D", "/dev/stderr", "-o", "/dev/stdout"])
        .arg(url)
        .output()
        .unwrap();
    let head = text(&out.stderr);
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head, text(&out.stdout))
}

// ---------------------------------------------------------------------------------------------
// The gateway under test
// ---------------------------------------------------------------------------------------------

/// A gateway with an mTLS listener and interception, a working upstream (`api`), an upstream
/// on a closed port (`down`), and three credentials: `openai` (real value from a file, for
/// `api`), `github` (from the environment, for `down` only) and `missing` (unset).
struct Stack {
    gw: GatewayProcess,
    up: Upstream,
    certs: PathBuf,
    down_port: u16,
}

/// The gateway's configuration; `broken` names an undefined upstream, which reload refuses.
/// `down` is named by host name (`localhost`), so the DNS cache has a lookup to count and show.
fn config(certs: &Path, api_url: &str, down_port: u16, broken: bool) -> String {
    let openai_upstream = if broken { "nonexistent" } else { "api" };
    let c = certs.display();
    let listener = common::gateway::mtls_listener(certs);
    format!(
        "{listener}admin:\n  address: {{admin}}\n\
         interception:\n  ca_cert: {c}/intercept_ca.crt\n  ca_key: {c}/intercept_ca.key\n\
         upstreams:\n  api:\n    url: {api_url}\n  down:\n    url: http://localhost:{down_port}\n    connect_timeout: 5s\n\
         credentials:\n\
         \x20 openai:\n    dummy: {DUMMY}\n    real: {{ file: {{dir}}/openai_key }}\n    upstreams: [{openai_upstream}]\n\
         \x20 github:\n    dummy: {GH_DUMMY}\n    real: {{ env: TEST_GITHUB_KEY }}\n    upstreams: [down]\n\
         \x20 missing:\n    dummy: {MISSING_DUMMY}\n    real: {{ env: TEST_SURELY_UNSET_KEY }}\n    upstreams: [api]\n\
         routes:\n\
         \x20 - host: api.test\n    upstream: api\n\
         \x20 - host: other.test\n    upstream: api\n\
         \x20 - host: down.test\n    upstream: down\n\
         \x20 - host: restricted.test\n    upstream: api\n    clients: [agent-2]\n"
    )
}

impl Stack {
    fn start() -> Stack {
        let up = Upstream::start(UpstreamKind::Plain);
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        // Server certificates valid for 12 hours: the "expiring within 24h" alert must fire.
        slapenir::pki::init(
            &certs,
            slapenir::pki::InitOptions {
                leaf_validity: Duration::from_secs(12 * 3600),
                ..Default::default()
            },
        )
        .unwrap();
        std::fs::write(dir.path().join("openai_key"), format!("{REAL}\n")).unwrap();
        // Bound and released: nothing listens there, so connecting is refused.
        let down_port = free_port();
        let text = config(&certs, &up.url(), down_port, false);
        let gw = GatewayProcess::start_in(dir, &text, &[("TEST_GITHUB_KEY", GH_REAL)]);
        Stack {
            gw,
            up,
            certs,
            down_port,
        }
    }

    fn cert(&self, name: &str) -> PathBuf {
        self.certs.join(name)
    }

    fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gw.admin)
    }

    fn metrics(&self) -> String {
        let (status, _, body) = http_get(&self.admin_url("/metrics"));
        assert_eq!(status, 200, "/metrics: {body}");
        body
    }

    /// Rewrites the config file atomically (a reader never sees half a file).
    fn write_config(&self, broken: bool) {
        let text = config(&self.certs, &self.up.url(), self.down_port, broken)
            .replace("{listen}", &self.gw.listen.to_string())
            .replace("{admin}", &self.gw.admin.to_string())
            .replace("{dir}", &self.gw.dir().display().to_string());
        let tmp = self.gw.config_path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.gw.config_path).unwrap();
    }

    /// Sends SIGHUP and waits until `/metrics` counts one more reload with `result`.
    fn reload_and_wait(&self, result: &str) {
        let series = format!("slapenir_config_reloads_total{{result=\"{result}\"}}");
        let before = sample(&self.metrics(), &series).unwrap_or(0.0);
        self.gw.signal("HUP");
        wait_for(
            Duration::from_secs(20),
            &format!("a reload with result {result}"),
            || (sample(&self.metrics(), &series).unwrap_or(0.0) > before).then_some(()),
            || self.gw.stderr(),
        );
    }
}

/// The value of one series (`name{labels}` exactly as the text format prints it, or a name
/// without labels) in a Prometheus text exposition.
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// The sum of every series of a metric family (`name{...} value` lines).
fn family_sum(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Every kind of request
// ---------------------------------------------------------------------------------------------

/// What a client got: the final HTTP status (`None` when no HTTP answer came, e.g. a refused
/// TLS handshake), the `x-slapenir-refusal` header, and the body.
#[derive(Debug, Default)]
struct Answer {
    status: Option<u16>,
    refusal: Option<String>,
    body: String,
}

/// Parses curl's `-D` output: the last response head that is not a proxy's
/// `200 Connection Established`.
fn parse_head(head: &str, body: String) -> Answer {
    let blocks = head.split("\r\n\r\n").filter(|b| b.starts_with("HTTP/"));
    let Some(last) = blocks
        .filter(|b| {
            !b.lines()
                .next()
                .unwrap_or_default()
                .contains("Connection Established")
        })
        .last()
    else {
        return Answer {
            body,
            ..Answer::default()
        };
    };
    let mut lines = last.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok());
    let refusal = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("x-slapenir-refusal")
            .then(|| v.trim().to_string())
    });
    Answer {
        status,
        refusal,
        body,
    }
}

/// curl with `args`, its response head and body captured through files in the gateway's
/// directory.
fn curl_answer(s: &Stack, args: &[String]) -> Answer {
    let head = s.gw.path("curl-head.txt");
    let body = s.gw.path("curl-body.txt");
    let _ = std::fs::remove_file(&head);
    let _ = std::fs::remove_file(&body);
    curl()
        .arg("-D")
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .args(args)
        .output()
        .unwrap();
    parse_head(
        &std::fs::read_to_string(&head).unwrap_or_default(),
        std::fs::read_to_string(&body).unwrap_or_default(),
    )
}

/// A request from agent-1 (its client certificate) straight to the agents' listener, with
/// `Host: host`.
fn agent(s: &Stack, host: &str, path: &str, extra: &[&str]) -> Answer {
    let cert = (s.cert("agent-1.crt"), s.cert("agent-1.key"));
    agent_with_cert(s, host, path, extra, Some(cert))
}

/// As [`agent`], presenting `cert` (certificate and key files), or no certificate.
fn agent_with_cert(
    s: &Stack,
    host: &str,
    path: &str,
    extra: &[&str],
    cert: Option<(PathBuf, PathBuf)>,
) -> Answer {
    let mut args = vec![
        "--cacert".to_string(),
        s.cert("root_ca.crt").display().to_string(),
        "-H".to_string(),
        format!("Host: {host}"),
    ];
    if let Some((c, k)) = cert {
        args.extend([
            "--cert".to_string(),
            c.display().to_string(),
            "--key".to_string(),
            k.display().to_string(),
        ]);
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    args.push(format!("https://localhost:{}{path}", s.gw.listen.port()));
    curl_answer(s, &args)
}

/// A request from agent-1 through the gateway as its HTTPS proxy (CONNECT, interception).
fn via_proxy(s: &Stack, url: &str, extra: &[&str]) -> Answer {
    let mut args = vec![
        "--proxy".to_string(),
        format!("https://localhost:{}", s.gw.listen.port()),
        "--proxy-cacert".to_string(),
        s.cert("root_ca.crt").display().to_string(),
        "--proxy-cert".to_string(),
        s.cert("agent-1.crt").display().to_string(),
        "--proxy-key".to_string(),
        s.cert("agent-1.key").display().to_string(),
        "--cacert".to_string(),
        s.cert("root_ca.crt").display().to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    args.push(url.to_string());
    curl_answer(s, &args)
}

/// A self-signed client certificate (no chain to the gateway's client CA), written into the
/// gateway's directory as `rogue.crt` / `rogue.key`.
fn rogue_client_cert(s: &Stack) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["rogue".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "rogue");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(s.gw.path("rogue.crt"), cert.pem()).unwrap();
    std::fs::write(s.gw.path("rogue.key"), key.serialize_pem()).unwrap();
}

/// One named kind of request and what it must get.
struct Case {
    name: &'static str,
    send: fn(&Stack) -> Answer,
    /// The final HTTP status; `None`: refused before any HTTP answer.
    status: Option<u16>,
    /// The `x-slapenir-refusal` header the answer must carry (not checked when `None`).
    refusal: Option<&'static str>,
    /// The `slapenir_refusals_total` reason this request must count under.
    counted_as: Option<&'static str>,
}

/// Every refusal reason but two: `connect_unsupported` comes only from a gateway without
/// interception (this one has it, for the tunnel cases), and `other` from no request a client
/// controls.
const CASES: &[Case] = &[
    Case {
        name: "success: dummies in header, query and streamed body, echoed back",
        send: |s| {
            agent(
                s,
                "api.test",
                &format!("/echo?key={DUMMY}"),
                &[
                    "-H",
                    &format!("Authorization: Bearer {DUMMY}"),
                    "--data-binary",
                    &format!("payload {DUMMY} end"),
                ],
            )
        },
        status: Some(200),
        refusal: None,
        counted_as: None,
    },
    Case {
        name: "success: chunked response in several parts",
        send: |s| {
            agent(
                s,
                "api.test",
                "/chunked?text=hello-observability&parts=3",
                &[],
            )
        },
        status: Some(200),
        refusal: None,
        counted_as: None,
    },
    Case {
        name: "success: through a CONNECT tunnel (HTTPS_PROXY)",
        send: |s| {
            via_proxy(
                s,
                &format!("https://api.test/echo?key={DUMMY}"),
                &["-H", &format!("Authorization: Bearer {DUMMY}")],
            )
        },
        status: Some(200),
        refusal: None,
        counted_as: None,
    },
    Case {
        name: "refusal: no route for the host",
        send: |s| agent(s, "nowhere.test", "/echo", &[]),
        status: Some(403),
        refusal: Some("no_route"),
        counted_as: Some("no_route"),
    },
    Case {
        name: "refusal: CONNECT to an unrouted host",
        send: |s| via_proxy(s, "https://nowhere.test/echo", &[]),
        status: Some(403),
        refusal: Some("no_route"),
        counted_as: Some("no_route"),
    },
    Case {
        name: "refusal: a dummy whose secret belongs to another upstream",
        send: |s| {
            agent(
                s,
                "api.test",
                "/echo",
                &["-H", &format!("X-Key: {GH_DUMMY}")],
            )
        },
        status: Some(403),
        refusal: Some("credential_bound_elsewhere"),
        counted_as: Some("credential_bound_elsewhere"),
    },
    Case {
        name: "refusal: a dummy whose real value is unavailable",
        send: |s| {
            agent(
                s,
                "api.test",
                "/echo",
                &["-H", &format!("Authorization: Bearer {MISSING_DUMMY}")],
            )
        },
        status: Some(503),
        refusal: Some("credential_unavailable"),
        counted_as: Some("credential_unavailable"),
    },
    Case {
        name: "refusal: a client the route does not allow",
        send: |s| agent(s, "restricted.test", "/echo", &[]),
        status: Some(403),
        refusal: Some("client_not_allowed"),
        counted_as: Some("client_not_allowed"),
    },
    Case {
        name: "refusal: a WebSocket upgrade on a route without websocket",
        send: |s| {
            agent(
                s,
                "api.test",
                "/echo",
                &[
                    "--http1.1",
                    "-H",
                    "Connection: Upgrade",
                    "-H",
                    "Upgrade: websocket",
                ],
            )
        },
        status: Some(403),
        refusal: Some("upgrade_not_allowed"),
        counted_as: Some("upgrade_not_allowed"),
    },
    Case {
        name: "refusal: a response body in a coding the gateway cannot scan",
        send: |s| {
            agent(
                s,
                "api.test",
                "/echo-header?name=content-encoding&value=compress",
                &[],
            )
        },
        status: Some(502),
        refusal: None,
        counted_as: Some("compressed_body_refused"),
    },
    Case {
        name: "refusal: a dummy in a header name",
        send: |s| agent(s, "api.test", "/echo", &["-H", &format!("{DUMMY}: x")]),
        status: Some(400),
        refusal: Some("placeholder_in_header_name"),
        counted_as: Some("placeholder_in_header_name"),
    },
    Case {
        name: "refusal: dot segments in the path (bad request)",
        send: |s| agent(s, "api.test", "/a/../echo", &["--path-as-is"]),
        status: Some(400),
        refusal: Some("bad_request"),
        counted_as: Some("bad_request"),
    },
    Case {
        name: "refusal: a request for another host inside a tunnel",
        send: |s| via_proxy(s, "https://api.test/echo", &["-H", "Host: other.test"]),
        status: Some(421),
        refusal: Some("misdirected_request"),
        counted_as: Some("misdirected_request"),
    },
    Case {
        name: "refusal: TLS inside a tunnel naming another host (SNI)",
        send: |s| {
            via_proxy(
                s,
                "https://api.test/echo",
                &["--connect-to", "api.test:443:other.test:443"],
            )
        },
        status: None,
        refusal: None,
        counted_as: Some("tunnel_handshake_failed"),
    },
    Case {
        name: "refusal: a client certificate from an unknown CA",
        send: |s| {
            rogue_client_cert(s);
            agent_with_cert(
                s,
                "api.test",
                "/echo",
                &[],
                Some((s.gw.path("rogue.crt"), s.gw.path("rogue.key"))),
            )
        },
        status: None,
        refusal: None,
        counted_as: Some("mtls_failure"),
    },
    Case {
        name: "refusal: no client certificate",
        send: |s| agent_with_cert(s, "api.test", "/echo", &[], None),
        status: None,
        refusal: None,
        counted_as: None,
    },
    Case {
        name: "upstream error: connection refused",
        send: |s| {
            agent(
                s,
                "down.test",
                "/echo",
                &["-H", &format!("X-Key: {GH_DUMMY}")],
            )
        },
        status: Some(502),
        refusal: None,
        counted_as: None,
    },
];

/// Everything [`drive_every_kind`] saw, for the tests to search.
struct Driven {
    answers: Vec<(&'static str, Answer)>,
}

/// Sends every [`CASES`] request and checks each answer and its refusal count; then reloads
/// with a rotated secret (success), with a broken file (failure, the old config keeps
/// serving), with the file restored (success), and sends one more successful request.
fn drive_every_kind(s: &Stack) -> Driven {
    let mut answers = Vec::new();
    for case in CASES {
        let before = case.counted_as.map(|r| refusals(s, r));
        let answer = (case.send)(s);
        assert_eq!(answer.status, case.status, "{}: {answer:?}", case.name);
        if case.refusal.is_some() {
            assert_eq!(
                answer.refusal.as_deref(),
                case.refusal,
                "{}: {answer:?}",
                case.name
            );
        }
        if let (Some(reason), Some(before)) = (case.counted_as, before) {
            wait_for(
                Duration::from_secs(10),
                &format!(
                    "{}: slapenir_refusals_total{{reason=\"{reason}\"}} to grow",
                    case.name
                ),
                || (refusals(s, reason) > before).then_some(()),
                || s.metrics(),
            );
        }
        answers.push((case.name, answer));
    }
    // The upstream error is counted by kind.
    let metrics = s.metrics();
    assert!(
        sample(
            &metrics,
            "slapenir_upstream_errors_total{kind=\"connect\",upstream=\"down\"}"
        )
        .is_some_and(|v| v >= 1.0),
        "no connect error counted for `down`:\n{metrics}"
    );

    // Reload 1: the secret file rotated, the config unchanged.
    let key_file = s.gw.path("openai_key");
    let tmp = key_file.with_extension("tmp");
    std::fs::write(&tmp, format!("{ROTATED}\n")).unwrap();
    std::fs::rename(&tmp, &key_file).unwrap();
    s.reload_and_wait("success");
    // Reload 2: a broken file is refused...
    s.write_config(true);
    s.reload_and_wait("failure");
    // ... and the previous configuration keeps serving.
    let after_failure = agent(
        s,
        "api.test",
        "/echo",
        &["-H", &format!("Authorization: Bearer {DUMMY}")],
    );
    assert_eq!(after_failure.status, Some(200), "{after_failure:?}");
    // Reload 3: the file repaired.
    s.write_config(false);
    s.reload_and_wait("success");
    let rotated = agent(
        s,
        "api.test",
        "/echo",
        &["-H", &format!("Authorization: Bearer {DUMMY}")],
    );
    assert_eq!(rotated.status, Some(200), "{rotated:?}");
    let last = s.up.requests().pop().expect("the upstream saw requests");
    assert_eq!(
        last.header_str("authorization").as_deref(),
        Some(format!("Bearer {ROTATED}").as_str()),
        "the rotated secret was not used after the reload"
    );
    answers.push(("success: after a refused reload", after_failure));
    answers.push(("success: with the rotated secret", rotated));
    Driven { answers }
}

fn refusals(s: &Stack, reason: &str) -> f64 {
    sample(
        &s.metrics(),
        &format!("slapenir_refusals_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}
