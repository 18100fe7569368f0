//! The reference agent (`containers/agent/app/agent.py`) against a real gateway with mTLS,
//! and its documented exit codes.

use super::*;

/// A gateway with an mTLS listener (development PKI) routing `api.openai.com` to a real plain
/// upstream, with the real key read from a file as in the compose deployment.
struct Deployment {
    gw: GatewayProcess,
    up: Upstream,
    certs: PathBuf,
}

fn deployment() -> Deployment {
    let up = Upstream::start(UpstreamKind::Plain);
    let dir = tempfile::tempdir().unwrap();
    let certs = dev_pki(dir.path());
    fs::write(dir.path().join("openai_api_key"), format!("{REAL}\n")).unwrap();
    let config = format!(
        "listeners:\n  - name: agents\n    address: {{listen}}\n    tls:\n\
         \x20     cert: {c}/gateway.crt\n      key: {c}/gateway.key\n      client_ca: {c}/root_ca.crt\n\
         admin:\n  address: {{admin}}\n\
         upstreams:\n  openai:\n    url: {url}\n\
         credentials:\n  openai:\n    dummy: {DUMMY}\n    real: {{ file: {{dir}}/openai_api_key }}\n    upstreams: [openai]\n\
         routes:\n  - host: api.openai.com\n    upstream: openai\n    clients: [spiffe://slapenir/agent/agent-1]\n",
        c = certs.display(),
        url = up.url(),
    );
    let gw = GatewayProcess::start_in(dir, &config, &[]);
    Deployment { gw, up, certs }
}

/// What one run of the reference agent produced.
struct AgentRun {
    code: Option<i32>,
    stderr: String,
    /// The JSON lines of AGENT_LOG_FILE.
    records: Vec<serde_json::Value>,
}

impl AgentRun {
    fn attempts(&self) -> Vec<&serde_json::Value> {
        self.records
            .iter()
            .filter(|r| r["event"] == "attempt")
            .collect()
    }

    fn outcomes(&self) -> Vec<String> {
        self.attempts()
            .iter()
            .map(|r| r["outcome"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// Runs the reference agent with the deployment's certificates and `env` on top.
fn run_agent(d: &Deployment, env: &[(&str, String)]) -> AgentRun {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("agent.jsonl");
    let mut cmd = Command::new(python());
    cmd.arg(agent_app())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "AGENT_GATEWAY",
            format!("https://127.0.0.1:{}", d.gw.listen.port()),
        )
        .env("AGENT_TARGET", "https://api.openai.com/echo")
        .env("AGENT_CERT", d.certs.join("agent-1.crt"))
        .env("AGENT_KEY", d.certs.join("agent-1.key"))
        .env("AGENT_CA", d.certs.join("root_ca.crt"))
        .env("AGENT_INTERVAL", "0")
        .env("AGENT_TIMEOUT", "5")
        .env("AGENT_BACKOFF_BASE", "0.01")
        .env("AGENT_BACKOFF_MAX", "0.05")
        .env("AGENT_LOG_FILE", &log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run_with_deadline(cmd, Duration::from_secs(60));
    let records = fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line {l:?}: {e}")))
        .collect();
    AgentRun {
        code: out.status.code(),
        stderr: text(&out.stderr),
        records,
    }
}

#[test]
fn reference_agent_completes_its_calls_through_the_gateway_with_mtls() {
    let d = deployment();
    let run = run_agent(&d, &[("AGENT_COUNT", "3".into())]);
    assert_eq!(run.code, Some(0), "agent stderr:\n{}", run.stderr);
    assert_eq!(run.outcomes(), ["ok", "ok", "ok"], "{}", run.stderr);
    for (i, attempt) in run.attempts().iter().enumerate() {
        assert_eq!(attempt["call"], i + 1);
        assert_eq!(attempt["attempt"], 1);
        assert_eq!(attempt["status"], 200);
    }
    let done = run.records.last().unwrap();
    assert_eq!(done["event"], "done");
    assert_eq!(done["exit_code"], 0);

    let requests = d.up.wait_for_requests_blocking(3, Duration::from_secs(10));
    assert_eq!(requests.len(), 3);
    for r in &requests {
        assert_eq!(r.path, "/echo");
        assert_eq!(
            r.header_str("authorization").as_deref(),
            Some(format!("Bearer {REAL}").as_str()),
            "the upstream must see the real key"
        );
    }
    // The agent never holds the real key: not in its log, not in what it printed.
    let log_text = serde_json::to_string(&run.records).unwrap();
    assert!(!log_text.contains(REAL) && !run.stderr.contains(REAL));
    assert!(!log_text.contains(DUMMY), "the agent logged its key");
    // The gateway's audit log names the client identity.
    assert!(
        d.gw.stdout().contains("agent-1"),
        "audit:\n{}",
        d.gw.stdout()
    );
}

/// The reference agent's documented exit codes, and its retries with backoff and jitter.
#[test]
fn reference_agent_exit_codes_and_retries() {
    struct Case {
        name: &'static str,
        env: Vec<(&'static str, String)>,
        code: i32,
        outcomes: &'static [&'static str],
        /// Text the agent's output (stderr) must contain.
        says: &'static str,
    }
    let d = deployment();
    let closed = format!("https://127.0.0.1:{}", free_port());
    let cases = [
        Case {
            name: "no route: refused at once",
            env: vec![("AGENT_TARGET", "https://api.elsewhere.test/echo".into())],
            code: 3,
            outcomes: &["refused"],
            says: "\"status\": 403",
        },
        Case {
            name: "5xx retried, then given up",
            env: vec![
                ("AGENT_TARGET", "https://api.openai.com/status/503".into()),
                ("AGENT_MAX_ATTEMPTS", "3".into()),
            ],
            code: 4,
            outcomes: &["retry", "retry", "gave_up"],
            says: "\"status\": 503",
        },
        Case {
            name: "429 retried like a 5xx",
            env: vec![
                ("AGENT_TARGET", "https://api.openai.com/status/429".into()),
                ("AGENT_MAX_ATTEMPTS", "2".into()),
            ],
            code: 4,
            outcomes: &["retry", "gave_up"],
            says: "\"status\": 429",
        },
        Case {
            name: "gateway unreachable: connection errors retried",
            env: vec![
                ("AGENT_GATEWAY", closed.clone()),
                ("AGENT_MAX_ATTEMPTS", "4".into()),
            ],
            code: 4,
            outcomes: &["retry", "retry", "retry", "gave_up"],
            says: "ConnectionRefusedError",
        },
        Case {
            name: "bad number",
            env: vec![("AGENT_COUNT", "lots".into())],
            code: 2,
            outcomes: &[],
            says: "AGENT_COUNT",
        },
        Case {
            name: "missing client certificate",
            env: vec![("AGENT_CERT", "/nonexistent/agent-1.crt".into())],
            code: 2,
            outcomes: &[],
            says: "AGENT_CERT: no file at /nonexistent/agent-1.crt",
        },
        Case {
            name: "plain-http gateway refused",
            env: vec![("AGENT_GATEWAY", "http://127.0.0.1:1".into())],
            code: 2,
            outcomes: &[],
            says: "must be an https:// URL",
        },
    ];
    for case in cases {
        let mut env = vec![("AGENT_COUNT", "1".to_owned())];
        env.extend(case.env.iter().cloned());
        let run = run_agent(&d, &env);
        let context = format!("case `{}`: stderr:\n{}", case.name, run.stderr);
        assert_eq!(run.code, Some(case.code), "{context}");
        assert_eq!(run.outcomes(), case.outcomes, "{context}");
        assert!(run.stderr.contains(case.says), "{context}");
        assert!(!run.stderr.contains("Traceback"), "{context}");
        // Backoff: the wait after attempt n is drawn from [0, min(max, base * 2^(n-1))].
        for attempt in run.attempts() {
            if attempt["outcome"] == "retry" {
                let n = attempt["attempt"].as_u64().unwrap() as i32;
                let wait = attempt["retry_in_s"].as_f64().unwrap();
                let ceiling = (0.01 * 2f64.powi(n - 1)).min(0.05);
                assert!(
                    (0.0..=ceiling + 1e-9).contains(&wait),
                    "{context}: attempt {n} waited {wait} s, ceiling {ceiling} s"
                );
            }
        }
    }
}

/// Every AGENT_* variable the agent reads is documented in its module docstring, and every
/// exit code in the docstring is one the finish script names.
#[test]
fn agent_settings_and_exit_codes_are_documented() {
    let source = fs::read_to_string(agent_app()).unwrap();
    let (doc, code) = source.split_once("\"\"\"\n\nimport").unwrap();
    let mut read = BTreeSet::new();
    for (i, _) in code.match_indices("\"AGENT_") {
        let var: String = code[i + 1..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || *c == '_')
            .collect();
        read.insert(var);
    }
    assert!(read.len() >= 10, "found {read:?}");
    for var in &read {
        assert!(
            doc.contains(var.as_str()),
            "{var} is read but not documented"
        );
    }
    let finish = fs::read_to_string(agent_service_dir().join("finish")).unwrap();
    for code in ["0)", "2)", "3)", "4)", "256)"] {
        assert!(finish.contains(code), "finish has no branch `{code}`");
    }
}
