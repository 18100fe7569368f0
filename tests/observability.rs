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
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::gateway::{free_port, GatewayProcess};
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

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The path of `name` on `PATH`, or a test failure saying how to install it.
fn tool(name: &str, install: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| panic!("`{name}` is not installed; install it with: {install}"))
}

/// Polls every 50 ms; see [`common::wait::wait_for`].
fn wait_for<T>(
    timeout: Duration,
    what: &str,
    check: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    common::wait::wait_for(timeout, Duration::from_millis(50), what, check, describe)
}

/// Runs `cmd` to its end, killing it (and failing the test) if it takes longer than `timeout`.
fn run_with_deadline(mut cmd: Command, timeout: Duration, what: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    // Drain both pipes on threads so a chatty child never blocks on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {timeout:?}");
        }
        // Poll interval of a deadline-bounded wait, not a synchronisation sleep.
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
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

// ---------------------------------------------------------------------------------------------
// Prometheus
// ---------------------------------------------------------------------------------------------

/// A Prometheus server on a loopback port with its data in a temporary directory, scraping
/// one gateway every second with the shipped scrape job and alert rules; killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// The shipped `grafana/prometheus/prometheus.yml`, with its gateway job pointed at
    /// `target`, every interval set to 1 s, the other jobs dropped and the rule file path made
    /// absolute.
    fn config_for(target: SocketAddr) -> String {
        let dir = repo().join("grafana/prometheus");
        let shipped = std::fs::read_to_string(dir.join("prometheus.yml")).unwrap();
        let mut c: serde_yaml::Value = serde_yaml::from_str(&shipped).unwrap();
        for key in ["scrape_interval", "scrape_timeout", "evaluation_interval"] {
            c["global"][key] = "1s".into();
        }
        let rules: Vec<serde_yaml::Value> = c["rule_files"]
            .as_sequence()
            .expect("prometheus.yml has rule_files")
            .iter()
            .map(|f| dir.join(f.as_str().unwrap()).display().to_string().into())
            .collect();
        assert!(!rules.is_empty(), "prometheus.yml loads no rule file");
        c["rule_files"] = rules.into();
        let jobs = c["scrape_configs"].as_sequence_mut().unwrap();
        jobs.retain(|j| j["job_name"] == JOB);
        assert_eq!(jobs.len(), 1, "prometheus.yml has no job `{JOB}`");
        jobs[0]["static_configs"] =
            serde_yaml::from_str(&format!("[{{targets: [\"{target}\"]}}]")).unwrap();
        serde_yaml::to_string(&c).unwrap()
    }

    fn start(target: SocketAddr) -> Prometheus {
        let bin = tool("prometheus", "apt-get install -y prometheus");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, Self::config_for(target)).unwrap();
        promtool_ok(&["check", "config"], &config);
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let mut p = Prometheus { child, addr, dir };
        let log = p.dir.path().join("prometheus.log");
        let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
        wait_for(
            Duration::from_secs(60),
            "Prometheus to be ready",
            || {
                if let Ok(Some(status)) = p.child.try_wait() {
                    panic!("prometheus exited with {status}:\n{}", read_log());
                }
                (http_get(&format!("http://{addr}/-/ready")).0 == 200).then_some(())
            },
            read_log,
        );
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/<path>` with URL-encoded parameters; the parsed JSON answer.
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let mut cmd = curl();
        cmd.arg("-G");
        for (k, v) in params {
            cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
        }
        let out = cmd
            .arg(format!("http://{}/api/v1/{path}", self.addr))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "Prometheus /api/v1/{path} {params:?}: {e}: {}",
                text(&out.stdout)
            )
        })
    }

    /// An instant query.
    fn query(&self, expr: &str) -> Value {
        self.api("query", &[("query", expr)])
    }

    /// The single value of a query that must return one sample, if it does.
    fn scalar(&self, expr: &str) -> Option<f64> {
        let r = self.query(expr);
        let v = r["data"]["result"].as_array()?.first()?["value"][1].as_str()?;
        v.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `promtool ARGS FILE` and fails the test with its output unless it succeeds.
fn promtool_ok(args: &[&str], file: &Path) {
    let promtool = tool("promtool", "apt-get install -y prometheus");
    let out = Command::new(promtool)
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool {} {}:\n{}{}",
        args.join(" "),
        file.display(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn dashboard() -> Value {
    let path = repo().join("grafana/dashboards/slapenir.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel of the dashboard (rows' nested panels included) that has queries:
/// `(title, [expr...])`.
fn dashboard_queries(d: &Value) -> Vec<(String, Vec<String>)> {
    fn walk(panels: &Value, out: &mut Vec<(String, Vec<String>)>) {
        for p in panels.as_array().into_iter().flatten() {
            walk(&p["panels"], out);
            if let Some(targets) = p["targets"].as_array() {
                let title = p["title"].as_str().unwrap_or_default().to_string();
                let exprs = targets
                    .iter()
                    .map(|t| {
                        t["expr"]
                            .as_str()
                            .unwrap_or_else(|| panic!("panel {title}: a target has no expr"))
                            .to_string()
                    })
                    .collect();
                out.push((title, exprs));
            }
        }
    }
    let mut out = Vec::new();
    walk(&d["panels"], &mut out);
    out
}

/// `expr` as Grafana would send it with every variable at "All": the dashboard's template
/// variables replaced by their `allValue`, Grafana's interval variables by fixed durations
/// (long enough to hold the test's traffic, short enough to leave out nothing of it).
fn substitute(d: &Value, expr: &str) -> String {
    let mut e = expr
        .replace("$__rate_interval", "2m")
        .replace("$__interval", "15s")
        .replace("$__range", "1h");
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap();
        let all = v["allValue"]
            .as_str()
            .unwrap_or_else(|| panic!("template variable {name} has no allValue"));
        for form in [
            format!("${{{name}}}"),
            format!("[[{name}]]"),
            format!("${name}"),
        ] {
            e = e.replace(&form, all);
        }
    }
    assert!(
        !e.contains('$'),
        "unknown variable left in `{e}` (from `{expr}`)"
    );
    e
}

/// Every alert rule of alerts.yml: `(alert name, expr)`.
fn alert_rules() -> Vec<(String, String)> {
    let path = repo().join("grafana/prometheus/alerts.yml");
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for g in rules["groups"].as_sequence().unwrap() {
        for r in g["rules"].as_sequence().unwrap() {
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap();
            for key in ["summary", "description"] {
                assert!(
                    r["annotations"][key]
                        .as_str()
                        .is_some_and(|s| !s.is_empty()),
                    "alert {name} has no {key} annotation"
                );
            }
            out.push((name.to_string(), r["expr"].as_str().unwrap().to_string()));
        }
    }
    out
}

/// Waits until Prometheus holds the gateway's current counts, and then for one more scrape,
/// so that every series has at least two samples; returns the gateway's `/metrics` text.
fn wait_scraped(prom: &Prometheus, s: &Stack) -> String {
    let final_metrics = s.metrics();
    for family in [
        "slapenir_requests_total",
        "slapenir_refusals_total",
        "slapenir_config_reloads_total",
        "slapenir_upstream_errors_total",
    ] {
        let want = family_sum(&final_metrics, family);
        assert!(want > 0.0, "{family} is still 0 after the traffic");
        let expr = format!("sum({family})");
        wait_for(
            Duration::from_secs(30),
            &format!("Prometheus to scrape {family} = {want}"),
            || (prom.scalar(&expr).is_some_and(|v| v >= want)).then_some(()),
            || format!("{}", prom.query(&expr)),
        );
    }
    let last_scrape = format!("timestamp(up{{job=\"{JOB}\"}})");
    let seen = prom.scalar(&last_scrape).unwrap();
    wait_for(
        Duration::from_secs(30),
        "one more scrape",
        || (prom.scalar(&last_scrape).is_some_and(|t| t > seen)).then_some(()),
        || format!("{}", prom.query(&last_scrape)),
    );
    final_metrics
}

/// A few more requests of the kinds every rate panel shows: a success with swaps both ways, a
/// refusal, an upstream error.
fn second_wave(s: &Stack) {
    let ok = agent(
        s,
        "api.test",
        &format!("/echo?key={DUMMY}"),
        &["--data-binary", &format!("again {DUMMY}")],
    );
    assert_eq!(ok.status, Some(200), "{ok:?}");
    assert_eq!(agent(s, "nowhere.test", "/", &[]).status, Some(403));
    assert_eq!(agent(s, "down.test", "/", &[]).status, Some(502));
}

/// The shipped Prometheus files pass promtool: the config, the rules, and the rules' unit
/// tests (each alert fires on the series it is meant for, with its annotations).
#[test]
fn promtool_accepts_the_shipped_config_rules_and_rule_tests() {
    let dir = repo().join("grafana/prometheus");
    promtool_ok(&["check", "config"], &dir.join("prometheus.yml"));
    promtool_ok(&["check", "rules"], &dir.join("alerts.yml"));
    promtool_ok(&["test", "rules"], &dir.join("alerts_test.yml"));
}

/// A real Prometheus scrapes a real gateway through every kind of request; then every
/// dashboard query returns data and every alert expression is valid, the alerts that this
/// traffic must raise return data, and Prometheus evaluates every rule without error.
#[test]
fn prometheus_evaluates_every_dashboard_query_and_alert_rule() {
    let s = Stack::start();
    let prom = Prometheus::start(s.gw.admin);
    let up = format!("up{{job=\"{JOB}\"}}");
    wait_for(
        Duration::from_secs(30),
        "Prometheus' first scrape of the gateway",
        || (prom.scalar(&up) == Some(1.0)).then_some(()),
        || format!("{}\n{}", prom.query(&up), prom.log()),
    );

    drive_every_kind(&s);

    // `rate` needs a series' samples on both sides of an increase: the series born during the
    // first wave are scraped, then a second wave increases them.
    wait_scraped(&prom, &s);
    second_wave(&s);
    let final_metrics = wait_scraped(&prom, &s);

    // Every metric family the gateway exports is shown somewhere on the dashboard.
    let d = dashboard();
    let panels = dashboard_queries(&d);
    let all_exprs: String = panels.iter().flat_map(|(_, e)| e.clone()).collect();
    let families: BTreeSet<&str> = final_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("slapenir_"))
        .collect();
    for family in &families {
        assert!(
            all_exprs.contains(family),
            "metric {family} is on no dashboard panel"
        );
    }

    // Every dashboard query is valid and returns data (at least one finite value).
    let mut failures = Vec::new();
    for (title, exprs) in &panels {
        for expr in exprs {
            let e = substitute(&d, expr);
            let r = prom.query(&e);
            let result = r["data"]["result"].as_array();
            let finite = result.into_iter().flatten().any(|sample| {
                sample["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(f64::is_finite)
            });
            if r["status"] != "success" || !finite {
                failures.push(format!("panel `{title}`: `{e}` -> {r}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "dashboard queries:\n{}",
        failures.join("\n")
    );

    // The template variable's values: label_values(metric, label) is a series query.
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        let q = v["query"]["query"].as_str().unwrap();
        let (metric, label) = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|r| r.split_once(','))
            .unwrap_or_else(|| panic!("unexpected variable query `{q}`"));
        let r = prom.api(
            &format!("label/{}/values", label.trim()),
            &[("match[]", metric.trim())],
        );
        assert!(
            r["data"]
                .as_array()
                .is_some_and(|vals| vals.iter().any(|x| x == &s.gw.admin.to_string())),
            "variable `{q}` does not list the gateway: {r}"
        );
    }

    // Every alert expression is valid; those this run must raise return data.
    let must_fire = [
        "SlapenirConfigReloadFailing",
        "SlapenirCertificateExpiringSoon",
    ];
    let must_not_fire = ["SlapenirGatewayDown"];
    let rules = alert_rules();
    for (name, expr) in &rules {
        let r = prom.query(expr);
        assert_eq!(r["status"], "success", "alert {name}: `{expr}` -> {r}");
        let n = r["data"]["result"].as_array().map_or(0, Vec::len);
        if must_fire.contains(&name.as_str()) {
            assert!(
                n > 0,
                "alert {name} should fire after this traffic: `{expr}` -> {r}"
            );
        }
        if must_not_fire.contains(&name.as_str()) {
            assert_eq!(n, 0, "alert {name} should not fire: `{expr}` -> {r}");
        }
    }
    for name in must_fire.iter().chain(&must_not_fire) {
        assert!(
            rules.iter().any(|(n, _)| n == name),
            "alerts.yml has no alert {name}"
        );
    }

    // Prometheus itself loaded the rules and evaluates each without error.
    wait_for(
        Duration::from_secs(30),
        "Prometheus to evaluate every rule without error",
        || {
            let r = prom.api("rules", &[]);
            let loaded: Vec<&Value> = r["data"]["groups"]
                .as_array()?
                .iter()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            (loaded.len() == rules.len()
                && loaded.iter().all(|rule| {
                    rule["health"] == "ok"
                        && !rule["lastEvaluation"]
                            .as_str()
                            .unwrap_or("0001")
                            .starts_with("0001")
                }))
            .then_some(())
        },
        || format!("{}", prom.api("rules", &[])),
    );
}

// ---------------------------------------------------------------------------------------------
// The status page in Chromium
// ---------------------------------------------------------------------------------------------

/// Where test artifacts are kept: `target/test-artifacts`.
fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Headless Chromium on `url` with `mode` (`--dump-dom`, `--screenshot=PATH`, ...), a fresh
/// profile and no network of its own; returns stdout and every console message it logged.
fn chromium(url: &str, mode: &str) -> (String, Vec<String>) {
    let bin = tool("chromium", "apt-get install -y chromium");
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1280,1400",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(mode)
    .arg(url);
    let out = run_with_deadline(cmd, Duration::from_secs(90), "chromium");
    let log = text(&out.stderr);
    assert!(
        out.status.success(),
        "chromium {mode} {url} failed ({}):\n{log}",
        out.status
    );
    // Page console messages (console.*, uncaught exceptions, CSP violations) are logged as
    // `...:INFO:CONSOLE:LINE] "message", source: URL (LINE)`.
    let console = log
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    (text(&out.stdout), console)
}

/// The first table row (`<tr>...</tr>`) whose first cell is exactly `name`.
fn row_of<'a>(dom: &'a str, name: &str) -> Option<&'a str> {
    let first_cell = format!("<td>{name}</td>");
    dom.split("<tr")
        .skip(1)
        .map(|r| r.split("</tr>").next().unwrap_or_default())
        .find(|r| {
            r.split_once('>')
                .is_some_and(|(_, cells)| cells.starts_with(&first_cell))
        })
}

/// The status page renders in Chromium without a console message, shows every route host and
/// every credential with its state, and loads nothing from outside; a screenshot is kept in
/// `target/test-artifacts/status.png`.
#[test]
fn status_page_renders_in_chromium_with_routes_and_credential_states() {
    // The console check can fail: a page that logs an error is caught.
    let control = tempfile::tempdir().unwrap();
    let control_page = control.path().join("control.html");
    std::fs::write(
        &control_page,
        "<!doctype html><title>control</title><script>console.error('control-error'); missingFunction();</script>",
    )
    .unwrap();
    let (_, console) = chromium(&format!("file://{}", control_page.display()), "--dump-dom");
    assert!(
        console.iter().any(|l| l.contains("control-error"))
            && console.iter().any(|l| l.contains("missingFunction")),
        "the console check missed the control page's errors: {console:?}"
    );

    let s = Stack::start();
    let ok = agent(
        &s,
        "api.test",
        "/echo",
        &["-H", &format!("Authorization: Bearer {DUMMY}")],
    );
    assert_eq!(ok.status, Some(200), "{ok:?}");
    let down = agent(&s, "down.test", "/echo", &[]);
    assert_eq!(down.status, Some(502), "{down:?}");

    let url = s.admin_url("/");
    let (status, head, html) = http_get(&url);
    assert_eq!(status, 200, "{head}{html}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html"),
        "{head}"
    );
    assert!(html.contains("<title>SLAPENIR status</title>"), "{html}");
    assert_self_contained(&html);

    let (dom, console) = chromium(&url, "--dump-dom");
    assert!(
        console.is_empty(),
        "console messages on the status page:\n{}",
        console.join("\n")
    );
    for host in ["api.test", "other.test", "down.test", "restricted.test"] {
        assert!(
            dom.contains(host),
            "route {host} is not on the page:\n{dom}"
        );
    }
    for (name, state) in [
        ("openai", "available"),
        ("github", "available"),
        ("missing", "unavailable"),
    ] {
        let row =
            row_of(&dom, name).unwrap_or_else(|| panic!("credential {name} has no row:\n{dom}"));
        let says_unavailable = row.contains("unavailable");
        assert!(
            row.contains(state) && (state == "unavailable") == says_unavailable,
            "credential {name} should show `{state}`: {row}"
        );
    }
    // The credential just used shows when; the others were never used.
    assert!(
        !row_of(&dom, "openai").unwrap().contains("never"),
        "{}",
        row_of(&dom, "openai").unwrap()
    );
    assert!(row_of(&dom, "github").unwrap().contains("never"));
    assert!(
        row_of(&dom, "down").is_some_and(|r| r.contains("failing")),
        "{dom}"
    );
    assert!(
        row_of(&dom, "api").is_some_and(|r| r.contains("ok")),
        "{dom}"
    );

    let shot = artifacts_dir().join("status.png");
    let _ = std::fs::remove_file(&shot);
    let (_, console) = chromium(&url, &format!("--screenshot={}", shot.display()));
    assert!(
        console.is_empty(),
        "console messages on the status page:\n{}",
        console.join("\n")
    );
    let png = std::fs::read(&shot).expect("chromium wrote no screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} is not a screenshot of a page ({} bytes)",
        shot.display(),
        png.len()
    );
}

/// No attribute or style of the page loads anything: every `src`, `href`, `action`, `url(`
/// and `@import` is absent or points inside the page (`#...`) or to inline `data:`.
fn assert_self_contained(html: &str) {
    let lower = html.to_ascii_lowercase();
    assert!(!lower.contains("@import"), "the page imports a stylesheet");
    for marker in ["src=", "href=", "action=", "url("] {
        for (i, _) in lower.match_indices(marker) {
            let value = lower[i + marker.len()..].trim_start_matches(['"', '\'', ' ']);
            assert!(
                value.starts_with('#') || value.starts_with("data:"),
                "the page references an external resource: {}",
                &html[i..(i + 80).min(html.len())]
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// No secret anywhere
// ---------------------------------------------------------------------------------------------

/// After every kind of request and reload: no real secret in `/metrics`, `/status`, `/`, the
/// audit log, the process log or any answer the agent got; no dummy on `/metrics`, `/status`
/// or `/` (nor in the gateway's logs, which never echo request values); no client address on
/// `/status` or `/`.
#[test]
fn no_secret_or_dummy_in_metrics_status_page_or_logs() {
    let s = Stack::start();
    let driven = drive_every_kind(&s);

    let (status_code, _, status) = http_get(&s.admin_url("/status"));
    assert_eq!(status_code, 200, "{status}");
    let parsed: Value = serde_json::from_str(&status).expect("/status is JSON");
    assert!(
        parsed["credentials"]
            .as_array()
            .is_some_and(|c| c.len() == 3),
        "{status}"
    );
    let (page_code, _, page) = http_get(&s.admin_url("/"));
    assert_eq!(page_code, 200, "{page}");
    let metrics = s.metrics();
    let audit = s.gw.stdout();
    let process_log = s.gw.stderr();
    // Every refusal that got an HTTP answer is in the audit log, by reason.
    for case in CASES.iter().filter(|c| c.status.is_some()) {
        if let Some(reason) = case.counted_as {
            assert!(
                audit.contains(&format!("\"refusal\":\"{reason}\"")),
                "{}: no audit line with refusal {reason}:\n{audit}",
                case.name
            );
        }
    }

    let outputs = [
        ("/metrics", &metrics),
        ("/status", &status),
        ("/", &page),
        ("the audit log (stdout)", &audit),
        ("the process log (stderr)", &process_log),
    ];
    let mut found = Vec::new();
    for (where_, output) in outputs {
        for (i, secret) in REAL_SECRETS.iter().enumerate() {
            if output.contains(secret) {
                found.push(format!("real secret #{i} in {where_}"));
            }
        }
        // The gateway never writes a dummy anywhere: only the agent sends them, and only
        // answers to the agent may carry them back.
        for dummy in DUMMIES {
            if output.contains(dummy) {
                found.push(format!("dummy `{dummy}` in {where_}"));
            }
        }
    }
    for (name, answer) in &driven.answers {
        for (i, secret) in REAL_SECRETS.iter().enumerate() {
            if answer.body.contains(secret) {
                found.push(format!("real secret #{i} in the answer to `{name}`"));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));

    // The echo came back with the dummy where the agent sent it, never the real value.
    let echoed = &driven.answers[0].1.body;
    assert!(echoed.contains(&format!("Bearer {DUMMY}")), "{echoed}");

    // No client address: the only addresses on /status and / are the configured upstreams'.
    let allowed: BTreeSet<String> = [
        s.up.addr().to_string(),
        format!("127.0.0.1:{}", s.down_port),
    ]
    .into();
    for (where_, output) in [("/status", &status), ("/", &page)] {
        for (i, _) in output.match_indices("127.0.0.1") {
            let addr: String = output[i..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                .collect();
            assert!(
                allowed.contains(&addr),
                "{where_} shows the address {addr}, which is not a configured upstream's"
            );
        }
    }
}
