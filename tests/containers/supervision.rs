//! The agent's s6 service directory under Debian's plain `s6-svscan`: restart after `kill -9`
//! and the `finish` policy for each exit code.

use super::*;

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
