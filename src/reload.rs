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
//! A bad new file — certificate or configuration — is refused with an error log line naming
//! what is wrong (never a secret), counted in `slapenir_config_reloads_total{result="failure"}`,
//! and the old one keeps serving. Listeners, the admin address and interception are read at
//! start only: a reload logs that they need a restart and applies everything else.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::Config;
use crate::plan::Plan;
use crate::policy::Policy;
use crate::secret::SecretSource;
use crate::tls::ListenerTlsState;

/// The configuration file of a running gateway and its current policy.
pub struct ConfigReload {
    pub path: PathBuf,
    pub policy: Arc<ArcSwap<Policy>>,
    /// (file, mtime) of every watched file as last applied, and a pending change.
    state: Mutex<WatchState>,
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
        Policy::compile(loaded.config).map_err(|errs| errs.join("\n"))
    }

    /// What reloading the file on disk would change.
    ///
    /// # Errors
    /// As [`Self::load_candidate`].
    pub fn plan(&self) -> Result<Plan, String> {
        let candidate = self.load_candidate()?;
        Ok(Plan::between(&self.policy.load().config, &candidate.config))
    }

    /// Reloads now: validates, compiles, swaps.
    ///
    /// # Errors
    /// What is wrong with the new file; nothing is swapped.
    pub fn reload(&self) -> Result<Plan, String> {
        let result = self.load_candidate().map(|candidate| {
            let plan = Plan::between(&self.policy.load().config, &candidate.config);
            let files = watched_files(&self.path, &candidate.config);
            self.policy.store(Arc::new(candidate));
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

    /// Called every poll: reloads when a watched file changed and stayed the same for one poll.
    fn poll(&self) {
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
