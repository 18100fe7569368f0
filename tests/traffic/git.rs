//! A real `git` client through the gateway (`http.proxy` = the gateway, `CONNECT` with TLS
//! interception, mTLS to the proxy) cloning from and pushing to a git smart-HTTP server
//! (`git http-backend` behind a small TLS server, `tests/traffic/git/git_http_server.py`) that requires
//! Basic auth with the real token. The agent's remote URL holds only the dummy; git turns it into
//! `Authorization: Basic`, which the gateway decodes, swaps and encodes again.
use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::child::ServerProcess;
use common::decode::any_decoding_holds;
use common::gateway::GatewayProcess;
use common::pki::TestPki;

const GH_DUMMY: &str = "ghp-dummy-github";
const GH_REAL: &str = "ghp_REALgithubToken0123456789abcdef";
const OPENAI_DUMMY: &str = "sk-dummy-openai";
const OPENAI_REAL: &str = "sk-real-OPENAI-7f3a9c1e5b2d4f6a8c0e";
const USER: &str = "x-access-token";

/// The git server.
struct GitServer {
    server: ServerProcess,
    stats: PathBuf,
    root: PathBuf,
}

impl GitServer {
    fn start(dir: &Path, pki: &TestPki) -> GitServer {
        let root = dir.join("repos");
        std::fs::create_dir_all(&root).unwrap();
        let stats = dir.join("stats.jsonl");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/traffic/git/git_http_server.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .arg("--cert")
            .arg(pki.server_cert_path())
            .arg("--key")
            .arg(pki.server_key_path())
            .arg("--root")
            .arg(&root)
            .args(["--user", USER, "--stats"])
            .arg(&stats)
            .env("GIT_SERVER_TOKEN", GH_REAL);
        GitServer {
            server: ServerProcess::start(cmd, "the git server (python3)"),
            stats,
            root,
        }
    }

    /// The `auth` field of every request the server has seen.
    fn auths(&self) -> Vec<String> {
        std::fs::read_to_string(&self.stats)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["auth"].as_str().unwrap().to_owned()
            })
            .collect()
    }
}

fn git(args: &[&str], cwd: &Path, env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new("git");
    cmd.args(args)
        .current_dir(cwd)
        // No configuration, credential helper or proxy from the machine running the test.
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "agent")
        .env("GIT_AUTHOR_EMAIL", "agent@example.invalid")
        .env("GIT_COMMITTER_NAME", "agent")
        .env("GIT_COMMITTER_EMAIL", "agent@example.invalid")
        .env_remove("GIT_SSL_CAINFO")
        .env_remove("SSL_CERT_FILE")
        .env_remove("CURL_CA_BUNDLE")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run git")
}

fn ok(out: &Output, what: &str) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

/// The agent side: the gateway (mTLS listener, interception CA), its certificates, and the
/// environment git needs to use it as an HTTPS proxy.
struct Agent {
    gw: GatewayProcess,
    certs: PathBuf,
}

impl Agent {
    /// `github_extra`: more keys of the `github` credential (e.g. `allow` rules), indented.
    fn start(server: &GitServer, pki_dir: &Path, github_extra: &str) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        slapenir::pki::init(&certs, slapenir::pki::InitOptions::default()).unwrap();
        let c = certs.display();
        let listener = common::gateway::mtls_listener(&certs);
        let config = format!(
            "{listener}admin:\n  address: {{admin}}\n\
             interception:\n  ca_cert: {c}/intercept_ca.crt\n  ca_key: {c}/intercept_ca.key\n\
             upstreams:\n  github:\n    url: https://127.0.0.1:{port}\n    ca: {ca}\n\
             \x20 openai:\n    url: http://127.0.0.1:9\n\
             credentials:\n\
             \x20 github:\n    dummy: {GH_DUMMY}\n    real: {{ env: TEST_GITHUB_KEY }}\n    upstreams: [github]\n{github_extra}\
             \x20 openai:\n    dummy: {OPENAI_DUMMY}\n    real: {{ env: TEST_OPENAI_KEY }}\n    upstreams: [openai]\n\
             routes:\n  - host: git.test\n    upstream: github\n",
            port = server.server.port,
            ca = pki_dir.join("ca.crt").display(),
        );
        let gw = GatewayProcess::start_in(
            dir,
            &config,
            &[
                ("TEST_GITHUB_KEY", GH_REAL),
                ("TEST_OPENAI_KEY", OPENAI_REAL),
            ],
        );
        Agent { gw, certs }
    }

    /// `-c` options that make git use the gateway as its HTTPS proxy, with the agent's client
    /// certificate.
    fn proxy_config(&self) -> Vec<String> {
        let f = |n: &str| self.certs.join(n).display().to_string();
        vec![
            format!("http.proxy=https://127.0.0.1:{}", self.gw.listen.port()),
            format!("http.proxySSLCert={}", f("agent-1.crt")),
            format!("http.proxySSLKey={}", f("agent-1.key")),
            format!("http.proxySSLCAInfo={}", f("root_ca.crt")),
        ]
    }

    fn git(&self, args: &[&str], cwd: &Path) -> Output {
        let mut all: Vec<String> = Vec::new();
        for c in self.proxy_config() {
            all.push("-c".into());
            all.push(c);
        }
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        // The interception CA's leaves chain to the development root.
        let ca = self.certs.join("root_ca.crt");
        git(&all, cwd, &[("GIT_SSL_CAINFO", &ca)])
    }
}

/// A bare repository `repo.git` on the server with one commit holding `README`.
fn seed_repository(server: &GitServer, scratch: &Path) {
    let bare = server.root.join("repo.git");
    ok(
        &git(
            &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
            scratch,
            &[],
        ),
        "init --bare",
    );
    let work = scratch.join("seed");
    ok(
        &git(
            &["init", "-q", "-b", "main", work.to_str().unwrap()],
            scratch,
            &[],
        ),
        "init",
    );
    std::fs::write(work.join("README"), "hello from the server\n").unwrap();
    ok(&git(&["add", "README"], &work, &[]), "add");
    ok(&git(&["commit", "-q", "-m", "seed"], &work, &[]), "commit");
    ok(
        &git(&["push", "-q", bare.to_str().unwrap(), "main"], &work, &[]),
        "seed push",
    );
}

/// A git server with a seeded repository, and the agent's gateway in front of it.
fn setup() -> (tempfile::TempDir, GitServer, Agent) {
    setup_with("")
}

/// As [`setup`], with more keys for the `github` credential.
fn setup_with(github_extra: &str) -> (tempfile::TempDir, GitServer, Agent) {
    let tmp = tempfile::tempdir().unwrap();
    let pki_dir = tmp.path().join("server-pki");
    let pki = TestPki::new(&pki_dir);
    let server = GitServer::start(tmp.path(), &pki);
    seed_repository(&server, tmp.path());
    let agent = Agent::start(&server, &pki_dir, github_extra);
    (tmp, server, agent)
}

#[test]
fn git_clones_and_pushes_through_the_gateway_with_a_dummy_token() {
    let (tmp, server, agent) = setup();

    let url = format!("https://{USER}:{GH_DUMMY}@git.test/repo.git");
    let clone_dir = tmp.path().join("clone");
    let clone = agent.git(&["clone", &url, clone_dir.to_str().unwrap()], tmp.path());
    let mut agent_saw = ok(&clone, "clone through the gateway");
    assert_eq!(
        std::fs::read_to_string(clone_dir.join("README")).unwrap(),
        "hello from the server\n"
    );

    std::fs::write(clone_dir.join("CHANGES"), "pushed by the agent\n").unwrap();
    ok(&git(&["add", "CHANGES"], &clone_dir, &[]), "add");
    ok(
        &git(&["commit", "-q", "-m", "agent change"], &clone_dir, &[]),
        "commit",
    );
    let push = agent.git(&["push", "origin", "main"], &clone_dir);
    agent_saw += &ok(&push, "push through the gateway");

    // The server has the agent's commit.
    let bare = server.root.join("repo.git");
    let log = ok(
        &git(
            &[
                "--git-dir",
                bare.to_str().unwrap(),
                "log",
                "--format=%s",
                "main",
            ],
            tmp.path(),
            &[],
        ),
        "server log",
    );
    assert_eq!(log.lines().next(), Some("agent change"), "{log}");

    // The server accepted the real token and never saw wrong credentials (the dummy).
    let auths = server.auths();
    assert!(auths.iter().any(|a| a == "ok"), "{auths:?}");
    assert!(!auths.iter().any(|a| a == "wrong"), "{auths:?}");

    // Nothing on the agent's side holds the real token: git's output, the clone's config (which
    // keeps the remote URL with the dummy), every file in the clone.
    let config = std::fs::read_to_string(clone_dir.join(".git/config")).unwrap();
    assert!(config.contains(GH_DUMMY), "{config}");
    agent_saw += &config;
    assert!(!any_decoding_holds(
        agent_saw.as_bytes(),
        GH_REAL.as_bytes()
    ));
    for entry in walk(&clone_dir) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !any_decoding_holds(&bytes, GH_REAL.as_bytes()),
            "{} holds the real token",
            entry.display()
        );
    }
    let gw_out = format!("{}{}", agent.gw.stdout(), agent.gw.stderr());
    assert!(
        !any_decoding_holds(gw_out.as_bytes(), GH_REAL.as_bytes()),
        "the gateway logged the token"
    );
}

#[test]
fn a_foreign_dummy_in_the_remote_url_is_refused_and_nothing_reaches_the_server() {
    let (tmp, server, agent) = setup();

    // The OpenAI dummy is bound to another upstream: sending it to the git host is refused.
    let url = format!("https://{USER}:{OPENAI_DUMMY}@git.test/repo.git");
    let out = agent.git(&["clone", &url, "refused"], tmp.path());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "the clone succeeded:\n{text}");
    assert!(text.contains("403"), "{text}");
    // git's first request carries no credentials (answered 401 by the server); the one with
    // the foreign dummy never arrives.
    let auths = server.auths();
    assert!(auths.iter().all(|a| a == "missing"), "{auths:?}");
    assert!(!any_decoding_holds(text.as_bytes(), OPENAI_REAL.as_bytes()));
    let audit = agent.gw.stdout();
    assert!(audit.contains("credential_bound_elsewhere"), "{audit}");
}

/// A read-only token: its `allow` rules admit what a clone or fetch sends (smart HTTP's
/// `info/refs` and `git-upload-pack`), so cloning works and a push is refused with 403 before its
/// pack reaches the server, which never sees the token on a push.
#[test]
fn allow_rules_make_a_token_read_only_for_git() {
    let (tmp, server, agent) = setup_with(
        "    allow:\n\
         \x20     - methods: [GET]\n        paths: [\"/*/info/refs\"]\n        query: [service]\n\
         \x20     - methods: [POST]\n        paths: [\"/*/git-upload-pack\"]\n",
    );
    let url = format!("https://{USER}:{GH_DUMMY}@git.test/repo.git");
    let clone_dir = tmp.path().join("clone");
    let clone = agent.git(&["clone", &url, clone_dir.to_str().unwrap()], tmp.path());
    ok(&clone, "clone through the gateway with a read-only token");
    let served_before_push = server.auths().iter().filter(|a| *a == "ok").count();

    std::fs::write(clone_dir.join("CHANGES"), "pushed by the agent\n").unwrap();
    ok(&git(&["add", "CHANGES"], &clone_dir, &[]), "add");
    ok(
        &git(&["commit", "-q", "-m", "agent change"], &clone_dir, &[]),
        "commit",
    );
    let push = agent.git(&["push", "origin", "main"], &clone_dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&push.stdout),
        String::from_utf8_lossy(&push.stderr)
    );
    assert!(!push.status.success(), "the push succeeded:\n{text}");
    // git shows the 403, or, when the refusal resets its HTTP/2 stream while it is still
    // uploading, the reset; the audit line below says which refusal it was either way.
    assert!(
        text.contains("403") || text.contains("RPC failed"),
        "{text}"
    );
    // The refs advertisement for the push is a GET the rules admit; the pack itself never left.
    let bare = server.root.join("repo.git");
    let log = ok(
        &git(
            &[
                "--git-dir",
                bare.to_str().unwrap(),
                "log",
                "--format=%s",
                "main",
            ],
            tmp.path(),
            &[],
        ),
        "server log",
    );
    assert_eq!(
        log.lines().next(),
        Some("seed"),
        "the push reached the server: {log}"
    );
    assert!(server.auths().iter().filter(|a| *a == "ok").count() >= served_before_push);
    let audit = agent.gw.stdout();
    assert!(
        audit.contains(r#""refusal":"credential_rule_denied""#),
        "{audit}"
    );
    assert!(!any_decoding_holds(text.as_bytes(), GH_REAL.as_bytes()));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files
}
