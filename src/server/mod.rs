//! The process: builds the Pingora server from a validated config — one proxy service with a
//! listener per configured address, the admin service — and runs it until SIGTERM (graceful)
//! or SIGINT (fast).

pub mod admin;
pub mod log_scrub;
pub mod plan;
pub mod reload;
pub mod status;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use pingora::apps::http_app::HttpServer;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{ExecutionPhase, Server};
use pingora::services::listening::Service;

use crate::config::Loaded;
use crate::connect::tls::ListenerTlsState;
use crate::connect::GatewayApp;
use crate::limits::client::Shutdown;
use crate::policy::Policy;
use crate::proxy::Gateway;
use crate::server::admin::Admin;
use crate::server::reload::{ConfigReload, Reloader};
use pingora::services::background::background_service;

/// Bytes each agent connection reads ahead from its socket. Pingora's default (64 KiB) is
/// allocated for every connection and, once touched, stays resident: with a thousand idle
/// keep-alive connections it was most of the gateway's memory. Plain HTTP/1 reads request
/// heads and bodies into Pingora's own buffers, so it needs no read-ahead; TLS reads records
/// of up to 16 KiB, and reading ahead by one record saves system calls on uploads.
/// (`benches/compare`: idle connections and 10 MB uploads, docs/performance.md.)
const PLAIN_READ_AHEAD: usize = 0;
const TLS_READ_AHEAD: usize = 16 * 1024;
/// Bytes written before a flush is forced: Pingora's default, one TCP segment.
const WRITE_BUFFER: usize = 1460;

/// Serves `loaded` until the process is told to stop.
///
/// # Errors
/// A message when the configuration cannot be compiled or a listener is not supported.
pub fn run(loaded: Loaded, config_path: Option<PathBuf>) -> Result<(), String> {
    for w in &loaded.warnings {
        log::warn!("{w}");
    }
    let listeners = loaded.config.listeners.clone();
    let admin = loaded.config.admin.clone();
    let minter = loaded
        .config
        .interception
        .as_ref()
        .map(|i| Arc::clone(&i.minter));
    crate::limits::overload::raise_nofile();
    let h2_options = crate::limits::overload::h2_options(&loaded.config.limits);
    let h2_server = crate::limits::overload::h2_server_options(&loaded.config.limits);
    let policy = Policy::compile(loaded.config).map_err(|errs| errs.join("\n"))?;
    for c in &policy.config.credentials {
        for v in &c.values {
            if let Err(why) = &v.real {
                match &v.client {
                    None => log::warn!("credential `{}` is unavailable: {why}", c.name),
                    Some(id) => log::warn!(
                        "credential `{}` is unavailable for client `{id}`: {why}",
                        c.name
                    ),
                }
            }
        }
    }
    crate::proxy::peer::configure(&policy.config);
    let policy = Arc::new(ArcSwap::from_pointee(policy));
    // Before any peer is talked to: third-party log records lose the real values from now on.
    crate::server::log_scrub::follow(policy.clone());
    let admin_policy = policy.clone();
    crate::metrics::init();
    crate::server::status::init();
    // The embedded default has no file to re-read.
    let config_reload = config_path.map(|p| Arc::new(ConfigReload::new(p, policy.clone())));

    // The allocator hands pages freed by bursts (10 MB bodies, a thousand connections closing)
    // back to the system after its decay time (10 s) even on threads that go quiet, instead of
    // at the next allocation there: one jemalloc thread does it. Without it memory is only
    // returned later; nothing else changes, so a failure is only logged.
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        log::warn!("allocator: no background purging ({e})");
    }
    let conf = ServerConf {
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        // The longest a drain may take (`drain_then_exit` ends it as soon as it is done).
        grace_period_seconds: Some(DRAIN_MAX.as_secs()),
        graceful_shutdown_timeout_seconds: Some(5),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();

    let shutdown = Shutdown::default();
    let mut proxy = pingora::proxy::http_proxy(
        &server.configuration,
        Gateway::new(policy.clone(), shutdown.clone()),
    );
    proxy.h2_options = Some(h2_options);
    proxy.server_options = Some(h2_server);
    let proxy = Arc::new(proxy);
    if minter.is_none() {
        log::info!("no `interception` configured: CONNECT (HTTPS_PROXY) is refused with 501");
    }
    let mut proxy = Service::new(
        "slapenir".to_string(),
        GatewayApp::new(proxy, policy, minter, shutdown),
    );
    let mut tls_states = Vec::new();
    for l in &listeners {
        match &l.tls {
            None => {
                proxy.add_listener(
                    ListenerConfig::tcp(l.address.to_string())
                        .l4_buffer(L4BufferSettings::new(PLAIN_READ_AHEAD, WRITE_BUFFER)),
                );
                log::info!("listener `{}` on {} (plain)", l.name, l.address);
            }
            Some(files) => {
                let state = ListenerTlsState::load(&l.name, files)
                    .map_err(|e| format!("listener `{}`: {e}", l.name))?;
                let settings = state
                    .settings()
                    .map_err(|e| format!("listener `{}`: {e}", l.name))?;
                proxy.add_listener(
                    ListenerConfig::tcp(l.address.to_string())
                        .tls(settings)
                        .l4_buffer(L4BufferSettings::new(TLS_READ_AHEAD, WRITE_BUFFER)),
                );
                log::info!(
                    "listener `{}` on {} (TLS, client certificates {})",
                    l.name,
                    l.address,
                    if files.client_ca.is_some() {
                        "required"
                    } else {
                        "not required"
                    }
                );
                state.record_expiry();
                tls_states.push(state);
            }
        }
    }
    server.add_service(proxy);
    server.add_service(background_service(
        "reloader",
        Reloader {
            tls: tls_states.clone(),
            config: config_reload.clone(),
        },
    ));

    if let Some(admin) = admin {
        let mut svc = Service::new(
            "admin".to_string(),
            HttpServer::new_app(Admin {
                reload: config_reload,
                policy: admin_policy,
                tls: tls_states,
            }),
        );
        svc.add_tcp(&admin.address.to_string());
        log::info!("admin on http://{}", admin.address);
        server.add_service(svc);
    }
    let phases = server.watch_execution_phase();
    std::thread::Builder::new()
        .name("drain".into())
        .spawn(move || drain_then_exit(phases))
        .map_err(|e| format!("cannot start the drain watcher: {e}"))?;
    server.run_forever()
}

/// How long `SIGTERM` waits for the agents' connections to end: with the runtimes' 5 s to stop
/// after it, under the 30 s a container stop allows (`containers/compose.yaml`).
const DRAIN_MAX: Duration = Duration::from_secs(20);
/// How often a drain looks at the connections still open.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// `SIGTERM` drains: the listeners stop accepting and idle connections are closed (Pingora's
/// graceful shutdown), requests in flight are answered (refusals in the tarpit at once), and
/// the process exits as soon as the last agent connection has ended — or after [`DRAIN_MAX`],
/// when Pingora stops the runtimes and what is left (a long stream, a tunnel) is cut.
fn drain_then_exit(mut phases: tokio::sync::broadcast::Receiver<ExecutionPhase>) {
    loop {
        match phases.blocking_recv() {
            Ok(ExecutionPhase::ShutdownGracePeriod) => break,
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
    let open = crate::limits::overload::open_connections();
    log::info!("draining: {open} agent connection(s) open, waiting at most {DRAIN_MAX:?}");
    let started = Instant::now();
    while crate::limits::overload::open_connections() > 0 {
        if started.elapsed() >= DRAIN_MAX {
            return;
        }
        std::thread::sleep(DRAIN_POLL);
    }
    log::info!("drained in {:?}", started.elapsed());
    let _ = std::io::stdout().lock().flush();
    let _ = std::io::stderr().lock().flush();
    std::process::exit(0);
}
