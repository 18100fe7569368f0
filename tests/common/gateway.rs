//! A real `slapenir` process for end-to-end tests: config written to a temporary directory,
//! listener and admin ports picked from the ephemeral range, readiness awaited by connecting
//! (never by sleeping), output captured to files, process killed on drop.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running gateway.
pub struct GatewayProcess {
    child: Child,
    pub dir: tempfile::TempDir,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub config_path: PathBuf,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// An unused loopback port: bound with port 0, then released for the gateway to take.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// The `listeners:` section of one mTLS listener, `agents` on `{listen}`, with the
/// development PKI that `slapenir::pki::init` wrote to `certs`.
pub fn mtls_listener(certs: &Path) -> String {
    format!(
        "listeners:\n  - name: agents\n    address: {{listen}}\n    tls:\n\
         \x20     cert: {c}/gateway.crt\n      key: {c}/gateway.key\n      client_ca: {c}/root_ca.crt\n",
        c = certs.display()
    )
}

impl GatewayProcess {
    /// Starts the gateway on `config`, in which `{listen}` and `{admin}` are replaced by the
    /// picked addresses and `{dir}` by the temporary directory. `env` is added to the gateway's
    /// environment (real secrets go here).
    pub fn start(config: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, config, env)
    }

    /// As [`Self::start`], in a prepared directory (holding secret files, CA files...).
    pub fn start_in(dir: tempfile::TempDir, config: &str, env: &[(&str, &str)]) -> Self {
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let text = config
            .replace("{listen}", &listen.to_string())
            .replace("{admin}", &admin.to_string())
            .replace("{dir}", &dir.path().display().to_string());
        let config_path = dir.path().join("slapenir.yaml");
        std::fs::write(&config_path, text).expect("write config");
        let stdout = dir.path().join("stdout.log");
        let stderr = dir.path().join("stderr.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_slapenir"));
        cmd.arg("run")
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn slapenir");
        let mut gw = GatewayProcess {
            child,
            dir,
            listen,
            admin,
            config_path,
            stdout,
            stderr,
        };
        gw.wait_ready(&[listen, admin]);
        gw
    }

    fn wait_ready(&mut self, addrs: &[SocketAddr]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for addr in addrs {
            loop {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!(
                        "gateway exited with {status} before listening:\n{}",
                        self.stderr()
                    );
                }
                if TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_ok() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "gateway not listening on {addr}:\n{}",
                    self.stderr()
                );
                // Poll interval of a readiness wait, not a synchronisation sleep.
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the gateway printed on stdout (the audit log).
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// The audit log once it holds at least `n` lines. The line of a request is written when
    /// the request ends, which may be just after the client has read the answer.
    pub fn stdout_with_lines(&self, n: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self.stdout();
            if out.lines().count() >= n {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "audit log has fewer than {n} lines:\n{out}"
            );
            // Poll interval of a deadline-bounded wait.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Everything the gateway printed on stderr (its log).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Peak resident set size in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    /// Current resident set size in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Sends a signal (e.g. `libc::SIGHUP`) with the `kill` command.
    /// The gateway's exit status, once it has exited.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{sig} failed");
    }
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
