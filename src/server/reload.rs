//! Reloading while serving.
//!
//! - Listener certificates, keys and client CAs: re-read on `SIGHUP` and when a file changes.
//! - The configuration file and every file it names for secrets and upstream trust: re-read on
//!   `SIGHUP` and when one of them changes (polled every second; a change must be stable for
//!   one poll before it is applied, so an editor's half-written file is not picked up). The new
//!   file is parsed, validated and compiled off the request path, then swapped in atomically:
//!   a request keeps the policy it started with, so it sees the old or the new secrets, never a
//!   mix. Old secrets are zeroized when the last request holding the old policy ends.
//!
//! A reload that replaces or removes a real value *retires* it: the new policy keeps scrubbing
//! it from responses for `rotation.retired_grace` (see [`crate::policy::retired`]). Each poll also
//! checks whether a retired value's grace has ended; if so it compiles the *running*
//! configuration again without it (never the file on disk: a timer must not apply an edit) and
//! swaps that in, and the value is zeroized once no request holds the old policy. Log lines
//! name the credential, never the value.
//!
//! A bad new file — certificate or configuration — is refused with an error log line naming
//! what is wrong (never a secret), counted in `slapenir_config_reloads_total{result="failure"}`,
//! and the old one keeps serving. Listeners, the admin address and interception are read at
//! start only: a reload logs that they need a restart and applies everything else.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::Config;
use crate::connect::tls::ListenerTlsState;
use crate::policy::retired::{self, Changes, Retired};
use crate::policy::Policy;
use crate::secret::SecretSource;
use crate::server::plan::Plan;

/// The configuration file of a running gateway and its current policy.
pub struct ConfigReload {
    pub path: PathBuf,
    pub policy: Arc<ArcSwap<Policy>>,
    /// (file, mtime) of every watched file as last applied, and a pending change.
    state: Mutex<WatchState>,
    /// Held while a new policy is built from the current one and swapped in, so that a reload
    /// and the end of a grace never build on the same policy.
    swap: Mutex<()>,
}

#[derive(Default)]
struct WatchState {
    applied: Vec<(PathBuf, Option<SystemTime>)>,
    pending: Option<Vec<(PathBuf, Option<SystemTime>)>>,
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Files whose change should trigger a reload.
fn watched_files(path: &Path, config: &Config) -> Vec<PathBuf> {
    let mut files = vec![path.to_path_buf()];
    for v in config.credentials.iter().flat_map(|c| &c.values) {
        if let SecretSource::File(f) = &v.source {
            files.push(f.clone());
        }
    }
    files
}

impl ConfigReload {
    /// Watches `path`, whose current compiled form is in `policy`.
    pub fn new(path: PathBuf, policy: Arc<ArcSwap<Policy>>) -> Self {
        let files = watched_files(&path, &policy.load().config);
        let applied = files.into_iter().map(|f| {
            let m = mtime(&f);
            (f, m)
        });
        Self {
            path,
            policy,
            state: Mutex::new(WatchState {
                applied: applied.collect(),
                pending: None,
            }),
            swap: Mutex::new(()),
        }
    }

    /// Loads and compiles the file on disk without applying it.
    ///
    /// # Errors
    /// Every configuration error, one per line, with its location.
    pub fn load_candidate(&self) -> Result<Policy, String> {
        let loaded = Config::load(&self.path).map_err(|e| e.to_string())?;
        for w in &loaded.warnings {
            log::warn!("{w}");
        }
        let retired = retired::retire(&self.policy.load(), &loaded.config, Instant::now());
        Policy::compile_with_retired(loaded.config, retired).map_err(|errs| errs.join("\n"))
    }

    /// What reloading the file on disk would change.
    ///
    /// # Errors
    /// As [`Self::load_candidate`].
    pub fn plan(&self) -> Result<Plan, String> {
        let candidate = self.load_candidate()?;
        let current = self.policy.load();
        Ok(Plan::between(&current.config, &candidate.config)
            .with_retirement(&Changes::between(&current, &candidate)))
    }

    /// Reloads now: validates, compiles, swaps.
    ///
    /// # Errors
    /// What is wrong with the new file; nothing is swapped.
    pub fn reload(&self) -> Result<Plan, String> {
        let _swap = self.swap.lock();
        let result = self.load_candidate().map(|candidate| {
            let current = self.policy.load_full();
            let changes = Changes::between(&current, &candidate);
            let plan = Plan::between(&current.config, &candidate.config).with_retirement(&changes);
            let files = watched_files(&self.path, &candidate.config);
            crate::proxy::peer::configure(&candidate.config);
            self.policy.store(Arc::new(candidate));
            drop(current);
            log_retirement(&changes);
            if let Ok(mut st) = self.state.lock() {
                st.applied = files
                    .into_iter()
                    .map(|f| {
                        let m = mtime(&f);
                        (f, m)
                    })
                    .collect();
                st.pending = None;
            }
            plan
        });
        crate::metrics::config_reload(result.is_ok());
        match &result {
            Ok(plan) => log::info!(
                "configuration reloaded from {}: {plan}",
                self.path.display()
            ),
            Err(e) => log::error!(
                "configuration NOT reloaded from {}, the old one keeps serving:\n{e}",
                self.path.display()
            ),
        }
        result
    }

    /// Drops the retired values whose grace has ended: compiles the running configuration again
    /// without them and swaps it in. The file on disk is not read.
    fn expire_retired(&self) {
        let _swap = self.swap.lock();
        let current = self.policy.load_full();
        let now = Instant::now();
        if current.retired.iter().all(|r| r.until > now) {
            return;
        }
        let kept: Vec<Retired> = current
            .retired
            .iter()
            .filter(|r| r.until > now)
            .cloned()
            .collect();
        match Policy::compile_with_retired(current.config.clone(), kept) {
            Ok(next) => {
                let changes = Changes::between(&current, &next);
                self.policy.store(Arc::new(next));
                drop(current);
                log_retirement(&changes);
            }
            // Not expected (the same configuration compiled before); the value stays scrubbed.
            Err(errs) => log::error!(
                "retired values NOT dropped, they stay scrubbed: {}",
                errs.join("; ")
            ),
        }
    }

    /// Called every poll: reloads when a watched file changed and stayed the same for one poll,
    /// and drops retired values whose grace has ended.
    fn poll(&self) {
        self.expire_retired();
        let reload = {
            let Ok(mut st) = self.state.lock() else {
                return;
            };
            let now: Vec<_> = st
                .applied
                .iter()
                .map(|(f, _)| (f.clone(), mtime(f)))
                .collect();
            if now == st.applied {
                st.pending = None;
                false
            } else if st.pending.as_ref() == Some(&now) {
                // Stable since the last poll. Whatever the outcome, do not retry until the
                // files change again.
                st.applied = now;
                st.pending = None;
                true
            } else {
                st.pending = Some(now);
                false
            }
        };
        if reload {
            let _ = self.reload();
        }
    }
}

/// One log line per credential whose old value was retired or dropped (never the value).
fn log_retirement(changes: &Changes) {
    let now = Instant::now();
    for (name, until) in &changes.retired {
        log::info!(
            "credential `{name}`: the retired value stays scrubbed from responses until {}",
            retired::wall_clock(*until, now)
        );
    }
    for name in &changes.dropped {
        log::info!("credential `{name}`: retired value dropped");
    }
}

/// The background service that watches and reloads.
pub struct Reloader {
    pub tls: Vec<Arc<ListenerTlsState>>,
    pub config: Option<Arc<ConfigReload>>,
}

impl Reloader {
    fn reload_tls(&self, only_changed: bool) {
        for t in &self.tls {
            if only_changed && !t.files_changed() {
                continue;
            }
            match t.reload() {
                Ok(()) => {
                    t.record_expiry();
                    log::info!("listener `{}`: certificates reloaded", t.name)
                }
                Err(e) => log::error!(
                    "listener `{}`: certificates NOT reloaded, the old ones keep serving: {e}",
                    t.name
                ),
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot listen for SIGHUP: {e}");
                return;
            }
        };
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = hup.recv() => {
                    log::info!("SIGHUP: reloading");
                    self.reload_tls(false);
                    if let Some(c) = &self.config {
                        let c = c.clone();
                        // Reading files and compiling rewriters is blocking work.
                        let _ = tokio::task::spawn_blocking(move || c.reload()).await;
                    }
                }
                _ = tick.tick() => {
                    self.reload_tls(true);
                    if let Some(c) = &self.config {
                        let c = c.clone();
                        let _ = tokio::task::spawn_blocking(move || c.poll()).await;
                    }
                }
            }
        }
    }
}
