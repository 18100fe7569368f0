//! The programs the end-to-end tests drive: found on `PATH` (or the test fails with the command
//! that installs them), run to their end under a deadline, their output read as text.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The path of `name` on `PATH`, or a test failure saying how to install it.
pub fn tool(name: &str, install: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| panic!("`{name}` is not installed; install it with: {install}"))
}

/// Bytes a program printed, as text (lossy).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `cmd` to its end with stdin closed and both outputs captured; if it outlives `timeout`
/// it is killed and the test fails with what it wrote to stderr.
pub fn run_with_deadline(mut cmd: Command, timeout: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    // `wait_with_output` drains both pipes, so a chatty child never blocks on a full one.
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

/// `kill -9 pid`, ignoring a process that is already gone.
pub fn kill9(pid: u32) {
    let _ = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}
