//! The compose stack of `containers/` on a real Docker engine on this machine: brought up by
//! `containers/local/run` (the shipped `compose.yaml` plus an override that replaces only what
//! cannot be had here: step-ca with the step CLI, s6-overlay and cloudflared; see
//! `containers/local/compose.local.yaml`), then attacked and broken on purpose, then removed
//! with `containers/local/run --down`.
//!
//! One test, in steps that share the stack (bringing it up is the slow part):
//!
//! 1. every service healthy within the run's deadline;
//! 2. the agent's calls reach the fake API (`fake-api` on the egress network, which records what
//!    it receives and echoes the `Authorization` header) with the real key, while the agent —
//!    its reference client, and curl through `HTTPS_PROXY` with mTLS — only ever holds or sees
//!    the dummy; first shown to leak when the gateway is not in the way; cert-renew stays up
//!    as `agent` and the health check fails near the certificate's expiry;
//! 3. from inside the agent container nothing but the gateway and the CA is reachable: not the
//!    fake API, not the egress network, not the host, not the admin port, not DNS for outside
//!    names; first shown reachable from a container on the egress network;
//! 4. crashes: the gateway's process killed (`kill -9` of its PID 1 from the host, which is
//!    how a crash looks to Docker) comes back by its restart policy and a pending agent call
//!    completes after its backoff; the agent process killed inside (s6 restarts it, the
//!    container stays); the agent container's PID 1 killed (Docker restarts it);
//! 5. an allocation beyond `mem_limit` in the agent is OOM-killed inside the agent's cgroup,
//!    the gateway untouched;
//! 6. dockerd restarted: the stack comes back healthy with no manual step;
//! 7. `run --down` leaves no container, network or volume, and (when the run started dockerd)
//!    stops dockerd and removes its firewall tables and bridges.
//!
//! It needs root and a Docker engine that can start; when either is missing the test fails
//! with the reason, it is never skipped. The networks are compose.yaml's fixed subnets
//! (172.30.0.0/24, 172.31.0.0/24): the test checks they are free first, and nothing it sends
//! leaves them and loopback. `docker kill` is not used to simulate crashes: Docker treats it
//! as a manual stop, after which `unless-stopped` does not restart the container.
use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const GATEWAY: &str = "slapenir-gateway";
const AGENT: &str = "slapenir-agent";
const PROJECT: &str = "slapenir-local";
const DUMMY: &str = "sk-dummy-openai";
const SUBNETS: [&str; 2] = ["172.30.0.0/24", "172.31.0.0/24"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run_script() -> PathBuf {
    repo().join("containers/local/run")
}

fn state_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("containers-local")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `containers/local/run ARGS` with this build's binary and the test's state directory,
/// failing the test with its output when it fails or outlives `limit`.
fn local_run(args: &[&str], limit: Duration) -> String {
    let mut child = Command::new(run_script())
        .args(args)
        .env("SLAPENIR_BIN", env!("CARGO_BIN_EXE_slapenir"))
        .env("SLAPENIR_LOCAL_STATE", state_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start containers/local/run");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        stdout.read_to_end(&mut s).ok();
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        stderr.read_to_end(&mut s).ok();
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            child.kill().ok();
            child.wait().ok();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = format!(
        "{}{}",
        text(&out_reader.join().unwrap()),
        text(&err_reader.join().unwrap())
    );
    assert!(
        status.success() && started.elapsed() <= limit,
        "containers/local/run {args:?} failed ({status}, after {:?}):\n{output}",
        started.elapsed()
    );
    output
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run the docker client")
}

/// `docker ARGS`, which must succeed; its stdout.
fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn inspect(container: &str, format: &str) -> String {
    docker_ok(&["inspect", "-f", format, container])
        .trim()
        .to_owned()
}

/// Polls `probe` every 500 ms until it returns `Some`, or fails with `what` and `context()`.
fn wait_for<T>(
    limit: Duration,
    what: &str,
    mut probe: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}:\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The stack's containers (compose's project label), by name.
fn stack_containers() -> Vec<String> {
    docker_ok(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=com.docker.compose.project={PROJECT}"),
        "--format",
        "{{.Names}}",
    ])
    .lines()
    .map(str::to_owned)
    .collect()
}

/// `name status` of every container that is not healthy; empty when all are.
fn unhealthy() -> Vec<String> {
    stack_containers()
        .into_iter()
        .map(|c| {
            let h = inspect(
                &c,
                "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}",
            );
            (c, h)
        })
        .filter(|(_, h)| h != "healthy")
        .map(|(c, h)| format!("{c} {h}"))
        .collect()
}

fn wait_all_healthy(limit: Duration, after: &str) {
    assert_eq!(stack_containers().len(), 5, "{:?}", stack_containers());
    wait_for(
        limit,
        &format!("every service healthy {after}"),
        || unhealthy().is_empty().then_some(()),
        || format!("{:?}\n{}", unhealthy(), compose_logs()),
    );
}

fn compose_logs() -> String {
    let mut all = String::new();
    for c in stack_containers() {
        let out = docker(&["logs", "--tail", "15", &c]);
        all += &format!("--- {c}\n{}{}", text(&out.stdout), text(&out.stderr));
    }
    all
}

/// The requests the fake API recorded, one JSON object each.
fn fake_api_requests() -> Vec<serde_json::Value> {
    fs::read_to_string(state_dir().join("fake-api/log/requests.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The recorded request whose path contains `marker`, once it arrived.
fn request_with(marker: &str) -> Option<serde_json::Value> {
    fake_api_requests()
        .into_iter()
        .find(|r| r["path"].as_str().is_some_and(|p| p.contains(marker)))
}

/// How many requests the service's own reference agent has made so far.
fn reference_agent_requests() -> usize {
    fake_api_requests()
        .iter()
        .filter(|r| r["headers"]["user-agent"] == "slapenir-reference-agent/1")
        .count()
}

/// The host-side PID of a container's PID 1.
fn host_pid(container: &str) -> i32 {
    inspect(container, "{{.State.Pid}}").parse().unwrap()
}

/// Kills a container's PID 1 from the host with SIGKILL: a crash, as Docker sees one.
fn crash(container: &str) {
    let pid = host_pid(container);
    assert!(pid > 0, "{container} is not running");
    let status = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -9 {pid} ({container})");
}

/// A one-call run of the reference agent inside the agent container (as user `agent`), with a
/// short backoff, calling `/v1/models?probe=MARKER`. Returns the child, still running.
fn agent_call(marker: &str) -> std::process::Child {
    Command::new("docker")
        .args([
            "exec",
            "-u",
            "agent",
            "-e",
            "AGENT_COUNT=1",
            "-e",
            "AGENT_INTERVAL=0",
            "-e",
            "AGENT_BACKOFF_BASE=0.5",
            "-e",
            "AGENT_BACKOFF_MAX=2",
            "-e",
            "AGENT_LOG_FILE=",
            "-e",
            &format!("AGENT_TARGET=https://api.openai.com/v1/models?probe={marker}"),
            AGENT,
            "python3",
            "/app/agent.py",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `agent_call` to finish; its stderr (one JSON line per attempt).
fn finish_call(mut child: std::process::Child, limit: Duration) -> String {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let log = text(&out.stderr);
            assert!(
                status.success(),
                "the agent's call failed ({status}):\n{log}"
            );
            return log;
        }
        if started.elapsed() > limit {
            child.kill().ok();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the agent's call did not complete within {limit:?}:\n{}",
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Python run inside a container: tries each `host:port` (TCP, 2 s) and resolves each name,
/// printing one line `TARGET reached|blocked ...` per target.
const PROBE: &str = r#"
import socket, sys
for target in sys.argv[1:]:
    if target.startswith("dns:"):
        try:
            socket.getaddrinfo(target[4:], 443)
            print(target, "reached")
        except OSError as e:
            print(target, "blocked", e)
        continue
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), 2).close()
        print(target, "reached")
    except OSError as e:
        print(target, "blocked", e)
"#;

/// Runs `PROBE` in `container` as `user`; target → reached.
fn probe(container: &str, user: &str, targets: &[String]) -> Vec<(String, bool)> {
    let mut args = vec![
        "exec".to_owned(),
        "-u".to_owned(),
        user.to_owned(),
        container.to_owned(),
        "python3".to_owned(),
        "-c".to_owned(),
        PROBE.to_owned(),
    ];
    args.extend(targets.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    docker_ok(&args)
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let target = parts.next().unwrap().to_owned();
            (target, parts.next() == Some("reached"))
        })
        .collect()
}

/// The host's own source address towards the outside (no packet is sent to find it).
fn host_address() -> String {
    let out = Command::new("ip")
        .args(["-4", "-o", "route", "get", "192.0.2.1"])
        .output()
        .unwrap();
    let line = text(&out.stdout);
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == "src" {
            return words.next().unwrap().to_owned();
        }
    }
    panic!("no source address in `ip route get`: {line}");
}

/// Removes the stack (and the dockerd the run started) when the test ends, pass or fail.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", compose_logs());
            let _ = Command::new(run_script())
                .arg("--down")
                .env("SLAPENIR_LOCAL_STATE", state_dir())
                .status();
        }
    }
}

#[test]
fn compose_stack_runs_and_recovers_on_a_real_engine() {
    // Docker's firewall rules and image builds must not overlap the chaos runs' faults.
    let _turn = crate::take_turn();
    let t0 = Instant::now();
    let uid = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        text(&uid.stdout).trim(),
        "0",
        "this test needs root: it installs and starts dockerd and builds images"
    );
    // Leftovers of an interrupted run first, then the subnets must be free.
    local_run(&["--down"], Duration::from_secs(120));
    let routes = text(
        &Command::new("ip")
            .args(["-4", "route"])
            .output()
            .unwrap()
            .stdout,
    );
    for subnet in SUBNETS {
        assert!(
            !routes.lines().any(|l| l.starts_with(subnet)),
            "{subnet} (compose.yaml's fixed subnet) is already in use on this host:\n{routes}"
        );
    }
    let nft_before = text(
        &Command::new("nft")
            .args(["list", "tables"])
            .output()
            .unwrap()
            .stdout,
    );
    let _cleanup = Cleanup;

    // 1. Up, every service healthy (the run exits 0 only then).
    local_run(&[], Duration::from_secs(900));
    wait_all_healthy(Duration::from_secs(10), "after the run");
    let started_docker = state_dir().join("dockerd.pid").exists();
    eprintln!("[{:?}] stack healthy", t0.elapsed());

    // 2. The real key reaches the API; the agent sees only the dummy.
    let real = fs::read_to_string(state_dir().join("secrets/openai_api_key.txt")).unwrap();
    assert!(real.starts_with("sk-real-local-"));
    let first = wait_for(
        Duration::from_secs(60),
        "the reference agent's first call at the fake API",
        || {
            fake_api_requests()
                .into_iter()
                .find(|r| r["headers"]["user-agent"] == "slapenir-reference-agent/1")
        },
        compose_logs,
    );
    assert_eq!(first["headers"]["authorization"], format!("Bearer {real}"));
    // Without the gateway in the way the echo leaks: the fake API, asked with the real key
    // (from the gateway's container, on the egress network), sends it back.
    let leak = docker_ok(&[
        "exec",
        GATEWAY,
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-H",
        &format!("Authorization: Bearer {real}"),
        "https://api.openai.com/v1/models?probe=direct",
    ]);
    assert!(leak.contains(&real), "the fake API does not echo: {leak}");
    // Through the gateway: curl in the sandbox, HTTPS_PROXY with the agent's certificate
    // (/etc/slapenir/.curlrc), CONNECT and the interception CA.
    let seen = docker_ok(&[
        "exec",
        "-u",
        "agent",
        AGENT,
        "curl",
        "-sS",
        "--max-time",
        "20",
        "-H",
        &format!("Authorization: Bearer {DUMMY}"),
        "https://api.openai.com/v1/models?probe=curl-proxy",
    ]);
    assert!(seen.contains(&format!("Bearer {DUMMY}")), "{seen}");
    assert!(!seen.contains(&real), "the agent saw the real key: {seen}");
    let via_proxy = request_with("probe=curl-proxy").expect("curl's request did not arrive");
    assert_eq!(
        via_proxy["headers"]["authorization"],
        format!("Bearer {real}")
    );
    let env = docker_ok(&["exec", AGENT, "env"]);
    assert!(
        !env.contains(&real),
        "the real key is in the agent's environment"
    );
    assert!(
        !docker(&["exec", AGENT, "ls", "/run/secrets"])
            .status
            .success(),
        "the agent has /run/secrets"
    );
    eprintln!("[{:?}] key swap checked", t0.elapsed());

    // 2b. The agent's certificate stays fresh: cert-renew runs as `agent` and stays up (with
    // HOME=/root it exits at start and s6 restarts it every second: issue 19, fault 5), and the
    // health check fails once the certificate is within AGENT_HEALTH_CERT_MIN of expiry.
    let renew = text(
        &docker(&[
            "exec",
            AGENT,
            "s6-svstat",
            "-o",
            "up,updownfor",
            "/run/service/cert-renew",
        ])
        .stdout,
    );
    let mut fields = renew.split_whitespace();
    assert_eq!(fields.next(), Some("true"), "cert-renew is not up: {renew}");
    let up_for: u64 = fields.next().unwrap().parse().unwrap();
    assert!(up_for >= 5, "cert-renew restarted {up_for} s ago: {renew}");
    let health = docker_ok(&["exec", AGENT, "/usr/local/bin/agent-healthcheck"]);
    assert!(health.contains("certificate valid"), "{health}");
    let near_expiry = docker(&[
        "exec",
        "-e",
        "AGENT_HEALTH_CERT_MIN=100000000",
        AGENT,
        "/usr/local/bin/agent-healthcheck",
    ]);
    assert!(
        !near_expiry.status.success() && text(&near_expiry.stdout).contains("expires within"),
        "the health check passes a certificate that expires within ~3 years: {}",
        text(&near_expiry.stdout)
    );

    // 3. Isolation. A listener on every host address, then the same probes from the fake API's
    // container (egress: everything reachable, so the probe can succeed) and from the agent.
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    {
        let accepted = Arc::clone(&accepted);
        listener.set_nonblocking(false).unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if conn.is_ok() {
                    accepted.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }
    let host = host_address();
    // Compose v1 names it slapenir-local_fake-api_1, v2 slapenir-local-fake-api-1.
    let fake_api = stack_containers()
        .into_iter()
        .find(|c| c.contains("fake-api"))
        .expect("no fake-api container");
    let egress_targets = vec![
        "172.30.0.20:443".to_owned(),  // the fake API directly
        "172.30.0.10:9090".to_owned(), // the gateway's admin port
        format!("172.30.0.1:{port}"),  // the host, on the egress bridge
    ];
    for (target, reached) in probe(&fake_api, "root", &egress_targets) {
        assert!(
            reached,
            "from the egress network, {target} is not reachable: the probe cannot tell"
        );
    }
    let before = accepted.load(Ordering::SeqCst);
    assert!(
        before >= 1,
        "the host listener saw nothing from the egress probe"
    );
    let agent_targets = vec![
        "172.30.0.20:443".to_owned(),
        "172.30.0.10:9090".to_owned(),
        "gateway:9090".to_owned(), // the admin port through the agent's network
        format!("172.30.0.1:{port}"),
        format!("172.31.0.1:{port}"),
        format!("{host}:{port}"),
        "dns:example.com".to_owned(),
    ];
    let results = probe(AGENT, "agent", &agent_targets);
    assert_eq!(results.len(), agent_targets.len(), "{results:?}");
    for (target, reached) in &results {
        assert!(!reached, "the agent reached {target}: {results:?}");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        before,
        "the host accepted a connection from the agent"
    );
    // ... while its way out works: the gateway and the CA.
    let allowed = probe(
        AGENT,
        "agent",
        &["gateway:443".to_owned(), "step-ca:9000".to_owned()],
    );
    assert!(allowed.iter().all(|(_, r)| *r), "{allowed:?}");
    eprintln!("[{:?}] isolation checked", t0.elapsed());

    // 4a. The gateway crashes; a pending agent call completes once it is back.
    let restarts: u32 = inspect(GATEWAY, "{{.RestartCount}}").parse().unwrap();
    crash(GATEWAY);
    let call = agent_call("gateway-crash");
    let log = finish_call(call, Duration::from_secs(120));
    // Pending: an attempt failed and a later one got through after the backoff, or the one
    // attempt waited out the restart (its connection retried by TCP while the container was
    // down: seconds, against tens of milliseconds for a call to a running gateway).
    let waited = log.lines().any(|l| {
        l.contains("\"outcome\": \"ok\"")
            && l.split("\"elapsed_ms\": ")
                .nth(1)
                .and_then(|v| v.split([',', '}']).next())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .is_some_and(|ms| ms >= 1000.0)
    });
    assert!(
        log.contains("\"outcome\": \"retry\"") || waited,
        "no attempt failed or waited: the call was not pending\n{log}"
    );
    assert!(log.contains("\"outcome\": \"ok\""), "{log}");
    let after: u32 = inspect(GATEWAY, "{{.RestartCount}}").parse().unwrap();
    assert_eq!(
        after,
        restarts + 1,
        "the gateway was not restarted by its policy"
    );
    let crashed_call = request_with("probe=gateway-crash").expect("the call did not arrive");
    assert_eq!(
        crashed_call["headers"]["authorization"],
        format!("Bearer {real}")
    );
    wait_all_healthy(Duration::from_secs(60), "after the gateway crashed");
    eprintln!("[{:?}] gateway crash recovered", t0.elapsed());

    // 4b. The agent process is killed inside the container: s6 restarts it, the container
    // stays, and the restarted agent calls again.
    let container_start = inspect(AGENT, "{{.State.StartedAt}}");
    let svstat = || {
        text(
            &docker(&[
                "exec",
                AGENT,
                "s6-svstat",
                "-o",
                "up,pid",
                "/run/service/agent-svc",
            ])
            .stdout,
        )
        .trim()
        .to_owned()
    };
    let old = svstat();
    let old_pid = old.split_whitespace().nth(1).unwrap().to_owned();
    let calls_before = reference_agent_requests();
    docker_ok(&["exec", AGENT, "kill", "-9", &old_pid]);
    wait_for(
        Duration::from_secs(10),
        "s6 to restart the agent",
        || {
            let now = svstat();
            (now.starts_with("true") && !now.ends_with(&format!(" {old_pid}"))).then_some(())
        },
        || format!("{} / {}", svstat(), compose_logs()),
    );
    assert_eq!(
        inspect(AGENT, "{{.State.StartedAt}}"),
        container_start,
        "the container restarted"
    );
    wait_for(
        Duration::from_secs(30),
        "the restarted agent's call",
        || (reference_agent_requests() > calls_before).then_some(()),
        compose_logs,
    );
    eprintln!("[{:?}] agent process restarted by s6", t0.elapsed());

    // 4c. The agent container's PID 1 is killed: Docker restarts the container.
    let calls_before = reference_agent_requests();
    crash(AGENT);
    wait_for(
        Duration::from_secs(60),
        "Docker to restart the agent container",
        || {
            (inspect(AGENT, "{{.State.StartedAt}}") != container_start
                && inspect(AGENT, "{{.State.Running}}") == "true")
                .then_some(())
        },
        compose_logs,
    );
    wait_for(
        Duration::from_secs(60),
        "the restarted container's agent to call",
        || (reference_agent_requests() > calls_before).then_some(()),
        compose_logs,
    );
    wait_all_healthy(Duration::from_secs(60), "after the agent container crashed");
    eprintln!("[{:?}] agent container restarted", t0.elapsed());

    // 5. Beyond mem_limit (640m) in the agent: the kernel kills the allocation inside the
    // agent's own cgroup; the container and the gateway are untouched.
    let agent_id = inspect(AGENT, "{{.Id}}");
    let gateway_id = inspect(GATEWAY, "{{.Id}}");
    let oom_kills = |id: &str| -> u64 {
        let file = Path::new("/sys/fs/cgroup/memory/docker")
            .join(id)
            .join("memory.oom_control");
        let text = fs::read_to_string(&file)
            .or_else(|_| {
                fs::read_to_string(
                    Path::new("/sys/fs/cgroup/system.slice")
                        .join(format!("docker-{id}.scope"))
                        .join("memory.events"),
                )
            })
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .map_or(0, |n| n.trim().parse().unwrap())
    };
    let agent_start = inspect(AGENT, "{{.State.StartedAt}}");
    let gateway_start = inspect(GATEWAY, "{{.State.StartedAt}}");
    let gateway_oom = oom_kills(&gateway_id);
    let agent_oom = oom_kills(&agent_id);
    let hog = docker(&[
        "exec",
        "-u",
        "agent",
        AGENT,
        "python3",
        "-c",
        "b = bytearray(900 * 1024 * 1024); print('allocated', len(b))",
    ]);
    assert_eq!(
        hog.status.code(),
        Some(137),
        "the allocation was not killed: {}{}",
        text(&hog.stdout),
        text(&hog.stderr)
    );
    assert!(
        oom_kills(&agent_id) > agent_oom,
        "no OOM kill counted in the agent's cgroup"
    );
    assert_eq!(
        oom_kills(&gateway_id),
        gateway_oom,
        "an OOM kill in the gateway's cgroup"
    );
    assert_eq!(inspect(AGENT, "{{.State.StartedAt}}"), agent_start);
    assert_eq!(inspect(GATEWAY, "{{.State.StartedAt}}"), gateway_start);
    wait_all_healthy(Duration::from_secs(30), "after the OOM kill");
    eprintln!("[{:?}] OOM kill confined to the agent", t0.elapsed());

    // 6. dockerd restarted: the stack comes back by itself (restart policies; init-certs and
    // the gateway wait for what they need, whatever order Docker starts them in).
    assert!(
        started_docker,
        "dockerd was already running before the test, so the test cannot restart it; stop it and run again"
    );
    let calls_before = reference_agent_requests();
    local_run(&["--restart-docker"], Duration::from_secs(180));
    wait_all_healthy(Duration::from_secs(240), "after dockerd restarted");
    wait_for(
        Duration::from_secs(60),
        "the agent to call again after dockerd restarted",
        || (reference_agent_requests() > calls_before).then_some(()),
        compose_logs,
    );
    eprintln!("[{:?}] stack back after a dockerd restart", t0.elapsed());

    // 7. Down: nothing left, and the host as it was.
    let out = local_run(&["--down"], Duration::from_secs(180));
    assert!(
        out.contains("left behind: containers=0 networks=0 volumes=0"),
        "{out}"
    );
    let routes = text(
        &Command::new("ip")
            .args(["-4", "route"])
            .output()
            .unwrap()
            .stdout,
    );
    for subnet in SUBNETS {
        assert!(
            !routes.lines().any(|l| l.starts_with(subnet)),
            "{subnet} still routed:\n{routes}"
        );
    }
    let nft_after = text(
        &Command::new("nft")
            .args(["list", "tables"])
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(nft_after, nft_before, "firewall tables differ after --down");
    assert!(!state_dir().join("dockerd.pid").exists());
    eprintln!("[{:?}] down: nothing left", t0.elapsed());
}

/// Cargo.toml's `rust-version` is the highest `rust-version` any locked dependency (for this
/// platform) declares, and the gateway image's builder is that Rust: a guessed value let the
/// image build fail (issue 19: `rust:1.85` against dependencies that need 1.95).
#[test]
fn rust_version_is_the_locks_minimum_and_the_builders() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let rustc = Command::new("rustc").arg("-vV").output().unwrap();
    let host = text(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .expect("rustc -vV names no host");
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--locked"])
        .args(["--filter-platform", &host])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        text(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let resolved: Vec<&str> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    let version = |v: &str| -> Vec<u32> { v.split('.').map(|n| n.parse().unwrap()).collect() };
    let (highest, by) = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| !p["source"].is_null() && resolved.contains(&p["id"].as_str().unwrap()))
        .filter_map(|p| {
            let rv = p["rust_version"].as_str()?;
            Some((version(rv), format!("{} {}", p["name"], p["version"])))
        })
        .max()
        .unwrap();
    let ours = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["source"].is_null() && p["name"] == "slapenir")
        .unwrap()["rust_version"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        version(&ours),
        highest,
        "Cargo.toml's rust-version is {ours}; the lock needs {highest:?} ({by})"
    );
    let dockerfile = fs::read_to_string(repo().join("containers/gateway/Dockerfile")).unwrap();
    assert!(
        dockerfile.contains(&format!("ARG RUST_IMAGE=rust:{ours}-bookworm\n")),
        "the gateway's builder is not rust:{ours}"
    );
}
