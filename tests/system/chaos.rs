//! The chaos and isolation harness (`chaos/`), run for real against the gateway binary.
//!
//! - `chaos/local/run-all` with short faults passes every scenario and prints the summary table.
//! - Interrupted (SIGINT) in the middle of a fault, it leaves no namespace, veth, nft table,
//!   cgroup, temporary directory or process behind, and exits 130.
//! - Run twice in a row with the same prefix, both runs pass: the clean-up is complete (the
//!   second run refuses to start over leftovers).
//! - `chaos/local/find-mem-limit --quick` bisects a small build to a bracket no wider than its
//!   precision.
//! - Every shell script under `chaos/` passes `shellcheck`, and the Pumba compose override and
//!   its gateway config are valid (the Pumba scenarios need a Docker engine; these are their
//!   checks).
//!
//! The harness needs root (network namespaces, nft, tc, memory cgroups), as CI has: without it
//! these tests fail with a message saying so, they are not skipped. The leftover checks here
//! look at the system directly rather than asking the scripts under test. The tests take turns
//! (one lock, shared with the compose stack's test): each run gets its own prefix, but they
//! share the CPU the timings depend on.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

static RUNS: AtomicU32 = AtomicU32::new(0);

const MEMCG_ROOT: &str = "/sys/fs/cgroup/memory";

/// The scenarios `run-all` runs by default, each a row of its table, and the secrets check.
const SCENARIOS: [&str; 8] = [
    "isolation",
    "loss",
    "partial-loss",
    "bandwidth",
    "kill-agent",
    "kill-gateway",
    "oom",
    "secrets",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chaos(script: &str) -> PathBuf {
    repo().join("chaos/local").join(script)
}

/// Takes this test's turn and checks that it runs as root.
fn turn() -> MutexGuard<'static, ()> {
    let guard = crate::take_turn();
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap();
    assert_eq!(
        uid, "0",
        "the chaos harness needs root (network namespaces, nft, tc, memory cgroups): run \
         `cargo test --release --test chaos` as root, as CI does"
    );
    guard
}

/// A prefix no other run uses: `slt`, this process's PID and a counter (at most 12 characters).
fn unique_prefix() -> String {
    format!(
        "slt{}x{}",
        std::process::id() % 100_000,
        RUNS.fetch_add(1, Ordering::SeqCst)
    )
}

/// A harness script started with its output in files (read them with `stdout`/`stderr`).
struct Run {
    child: Child,
    dir: tempfile::TempDir,
}

impl Run {
    fn start(script: &str, prefix: &str, args: &[&str]) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(chaos(script))
            .args(args)
            .env("SLAPENIR_BIN", env!("CARGO_BIN_EXE_slapenir"))
            .env("CHAOS_PREFIX", prefix)
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.path().join("stdout")).unwrap())
            .stderr(fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .unwrap();
        Run { child, dir }
    }

    fn stdout(&self) -> String {
        fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// Waits for the script to exit; kills it and fails the test after `timeout`.
    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "still running after {timeout:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls until `check` holds or fails the test after `timeout` (or if the script ends).
    fn wait_until(&mut self, timeout: Duration, what: &str, check: impl Fn(&Run) -> bool) {
        let deadline = Instant::now() + timeout;
        while !check(self) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "exited ({status}) before {what}; stderr:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn describe(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout(), self.stderr())
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn output_of(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Directories named `name_prefix*` under `dir`, searched `depth` levels down.
fn dirs_named(dir: &Path, name_prefix: &str, depth: usize, found: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        if entry.file_name().to_string_lossy().starts_with(name_prefix) {
            found.push(path.clone());
        }
        if depth > 1 {
            dirs_named(&path, name_prefix, depth - 1, found);
        }
    }
}

/// Whatever of the run with `prefix` still exists, looked up on the system itself.
fn leftovers(prefix: &str) -> Vec<String> {
    let mut left = Vec::new();
    for line in output_of("ip", &["netns", "list"]).lines() {
        if line.starts_with(&format!("{prefix}-")) {
            left.push(format!("namespace {line}"));
        }
    }
    for line in output_of("ip", &["-o", "link", "show"]).lines() {
        let name = line.split(": ").nth(1).unwrap_or("");
        if name.starts_with(prefix) {
            left.push(format!("interface {name}"));
        }
    }
    for line in output_of("nft", &["list", "tables"]).lines() {
        if line.contains(prefix) {
            left.push(format!("nft {line}"));
        }
    }
    let mut cgroups = Vec::new();
    dirs_named(
        Path::new(MEMCG_ROOT),
        &format!("{prefix}-"),
        8,
        &mut cgroups,
    );
    left.extend(cgroups.iter().map(|c| format!("cgroup {}", c.display())));
    let mut tmp = Vec::new();
    dirs_named(
        &std::env::temp_dir(),
        &format!("{prefix}-chaos."),
        1,
        &mut tmp,
    );
    left.extend(tmp.iter().map(|d| format!("directory {}", d.display())));
    // Processes started by the run: their command lines name its temporary directory.
    let marker = format!("{prefix}-chaos.");
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&marker) {
                left.push(format!(
                    "process {}: {cmdline}",
                    entry.file_name().to_string_lossy()
                ));
            }
        }
    }
    left
}

/// The table's row for `scenario`, as its cells.
fn row<'a>(table: &'a str, scenario: &str) -> Option<Vec<&'a str>> {
    table
        .lines()
        .map(|l| l.trim().trim_matches('|').split(" | ").collect::<Vec<_>>())
        .find(|cells| cells.first().map(|c| c.trim()) == Some(scenario))
}

#[test]
fn run_all_passes_every_scenario_with_short_faults() {
    let _turn = turn();
    let prefix = unique_prefix();
    let mut run = Run::start("run-all", &prefix, &["--quick", "--duration", "5"]);
    let status = run.wait(Duration::from_secs(600));
    let out = run.stdout();
    assert!(
        status.success(),
        "run-all failed ({status}); {}",
        run.describe()
    );
    assert!(
        out.contains(
            "| scenario | result | recovery | calls | attempts | succeeded | duplicated | notes |"
        ),
        "no summary table; {}",
        run.describe()
    );
    for scenario in SCENARIOS {
        let cells = row(&out, scenario)
            .unwrap_or_else(|| panic!("no row for {scenario}; {}", run.describe()));
        assert_eq!(cells[1].trim(), "pass", "{scenario}: {cells:?}");
    }
    // Calls were counted at the upstream in the fault scenarios, and none was lost.
    for scenario in ["loss", "partial-loss", "kill-gateway"] {
        let cells = row(&out, scenario).unwrap();
        let calls: u32 = cells[3].trim().parse().unwrap();
        let succeeded: u32 = cells[5].trim().parse().unwrap();
        assert!(calls >= 1, "{scenario}: no call measured: {cells:?}");
        assert_eq!(calls, succeeded, "{scenario}: {cells:?}");
    }
    let left = leftovers(&prefix);
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn interrupting_a_run_mid_fault_leaves_nothing_behind() {
    let _turn = turn();
    let prefix = unique_prefix();
    let mut run = Run::start(
        "run-all",
        &prefix,
        &["--duration", "60", "--only", "isolation,loss"],
    );
    // Mid-scenario: the loss scenario's nft table is in place in the gateway's namespace.
    let gw_ns = format!("{prefix}-gw");
    let table = format!("{prefix}chaos");
    run.wait_until(
        Duration::from_secs(120),
        "the loss scenario's fault",
        |_| {
            Command::new("ip")
                .args([
                    "netns", "exec", &gw_ns, "nft", "list", "table", "inet", &table,
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        },
    );
    let before = leftovers(&prefix);
    assert!(
        before.iter().any(|l| l.starts_with("namespace"))
            && before.iter().any(|l| l.starts_with("cgroup"))
            && before.iter().any(|l| l.starts_with("process")),
        "the leftover check sees nothing of a live run: {before:#?}"
    );
    let pid = run.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let status = run.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(130), "{}", run.describe());
    assert!(run.stderr().contains("interrupted"), "{}", run.describe());
    let left = leftovers(&prefix);
    assert!(left.is_empty(), "left behind after SIGINT: {left:#?}");
}

#[test]
fn running_twice_in_a_row_with_the_same_prefix_works() {
    let _turn = turn();
    let prefix = unique_prefix();
    for round in 1..=2 {
        let mut run = Run::start(
            "run-all",
            &prefix,
            &["--quick", "--only", "isolation,kill-agent"],
        );
        let status = run.wait(Duration::from_secs(300));
        assert!(status.success(), "run {round} failed; {}", run.describe());
        assert_eq!(row(&run.stdout(), "kill-agent").unwrap()[1].trim(), "pass");
        let left = leftovers(&prefix);
        assert!(left.is_empty(), "left behind by run {round}: {left:#?}");
    }
}

#[test]
fn find_mem_limit_brackets_the_smallest_limit_within_its_precision() {
    let _turn = turn();
    let prefix = unique_prefix();
    let mut run = Run::start("find-mem-limit", &prefix, &["--quick", "--precision", "8"]);
    let status = run.wait(Duration::from_secs(600));
    assert!(status.success(), "{}", run.describe());
    let out = run.stdout();
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("smallest limit that completes: "))
        .unwrap_or_else(|| panic!("no result; {}", run.describe()));
    // "75 MiB (fails at 70 MiB)"
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let (passes, fails) = (numbers[0], numbers[1]);
    assert!(
        fails < passes && passes - fails <= 8,
        "bracket [{fails}, {passes}] MiB; {}",
        run.describe()
    );
    assert!(
        out.contains("compose (agent): mem_limit: "),
        "{}",
        run.describe()
    );
    let left = leftovers(&prefix);
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// Every file under `dir` (recursively) that is a shell script: a shell shebang, or a library
/// that declares its shell for shellcheck.
fn shell_scripts(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            shell_scripts(&path, found);
            continue;
        }
        let text = fs::read_to_string(&path).unwrap_or_default();
        if text.starts_with("#!/usr/bin/env bash")
            || text.starts_with("#!/bin/sh")
            || text.starts_with("# shellcheck shell=")
        {
            found.push(path);
        }
    }
}

#[test]
fn every_chaos_shell_script_passes_shellcheck() {
    let mut scripts = Vec::new();
    shell_scripts(&repo().join("chaos"), &mut scripts);
    for expected in [
        "chaos/local/run-all",
        "chaos/local/cleanup",
        "chaos/local/find-mem-limit",
        "chaos/local/lib/common.sh",
        "chaos/local/services/gateway/run",
        "chaos/local/services/gateway/data/check",
        "chaos/pumba/run-all",
    ] {
        assert!(
            scripts.contains(&repo().join(expected)),
            "{expected} not found among {scripts:?}"
        );
    }
    let out = Command::new("shellcheck")
        .arg("-x")
        .args(&scripts)
        .output()
        .expect("shellcheck (apt-get install -y shellcheck)");
    assert!(
        out.status.success(),
        "shellcheck:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The Pumba override is a valid compose file on top of the deployment's, and the gateway
/// config it mounts passes `slapenir check` once its container paths point at a development
/// PKI and a secret file.
#[test]
fn pumba_override_and_its_gateway_config_are_valid() {
    let out = Command::new("docker-compose")
        .args([
            "-f",
            "containers/compose.yaml",
            "-f",
            "chaos/pumba/compose.chaos.yaml",
        ])
        .args(["config", "-q"])
        .current_dir(repo())
        .output()
        .expect("docker-compose (apt-get install -y docker-compose)");
    assert!(
        out.status.success(),
        "docker-compose config:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let pki = Command::new(env!("CARGO_BIN_EXE_slapenir"))
        .args(["pki", "init", "--dir"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(pki.status.success());
    fs::write(
        dir.path().join("openai_api_key"),
        "sk-real-chaos-check-0123456789\n",
    )
    .unwrap();
    let config = fs::read_to_string(repo().join("chaos/pumba/gateway-chaos.yaml"))
        .unwrap()
        .replace("/certs/", &format!("{}/", certs.display()))
        .replace("/run/secrets/", &format!("{}/", dir.path().display()));
    let path = dir.path().join("slapenir.yaml");
    fs::write(&path, config).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_slapenir"))
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "slapenir check refused chaos/pumba/gateway-chaos.yaml:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}
