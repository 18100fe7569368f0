//! Reloading while serving: on `SIGHUP`, and when a watched file changes (checked every two
//! seconds), the listeners' certificates, keys and client CAs are re-read. A bad new file is
//! refused with an error log line and the old one keeps serving.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::tls::ListenerTlsState;

/// The background service that watches and reloads.
pub struct Reloader {
    pub tls: Vec<Arc<ListenerTlsState>>,
}

impl Reloader {
    fn reload_tls(&self, only_changed: bool) {
        for t in &self.tls {
            if only_changed && !t.files_changed() {
                continue;
            }
            match t.reload() {
                Ok(()) => log::info!("listener `{}`: certificates reloaded", t.name),
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
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = hup.recv() => {
                    log::info!("SIGHUP: reloading");
                    self.reload_tls(false);
                }
                _ = tick.tick() => self.reload_tls(true),
            }
        }
    }
}
