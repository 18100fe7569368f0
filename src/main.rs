//! The `slapenir` command line: `run` (the default), `check`, `pki init`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Every heap block is zeroed when it is freed, so a rotated or dropped secret does not linger
/// in freed memory — including the copies that libraries make and that no `Zeroize` reaches
/// (header values, TLS buffers, the matcher's tables). Memory allocated by C code (zstd, the
/// TLS provider's C parts) is not covered. The allocator underneath is jemalloc: it served
/// small requests about as fast as mimalloc did in A/B runs, returns freed pages to the system
/// after a few seconds (mimalloc kept them and grew in steps under a steady load), and reports
/// its statistics (`slapenir_allocator_bytes` on `/metrics`; docs/performance.md, "Memory").
#[global_allocator]
static ALLOC: zeroizing_alloc::ZeroAlloc<tikv_jemallocator::Jemalloc> =
    zeroizing_alloc::ZeroAlloc(tikv_jemallocator::Jemalloc);
use slapenir::config::{Config, ConfigErrors, Loaded};

#[derive(Parser)]
#[command(
    name = "slapenir",
    version,
    about = "A gateway that keeps real API keys away from LLM agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (for the default `run`); the embedded conf/slapenir.yaml when omitted.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Run,
    /// Validate a config file: exit 0, or print every error with file:line:column.
    Check {
        /// Also ask the gateway running with this admin address what reloading its config file
        /// would change (routes, upstreams, credentials — by name), without applying it.
        #[arg(long, value_name = "ADDR")]
        admin: Option<std::net::SocketAddr>,
    },
    /// Development PKI (for when step-ca is not running).
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Root and intermediate CA, gateway server certificate, interception CA and one agent
    /// client certificate, in step-ca's file layout.
    Init {
        /// Where to write the files.
        #[arg(long)]
        dir: PathBuf,
        /// Replace existing files.
        #[arg(long, conflicts_with = "keep_existing")]
        force: bool,
        /// Succeed without writing when a complete, valid set is already there.
        #[arg(long)]
        keep_existing: bool,
        /// Lifetime of the gateway and agent certificates, like 30d or 24h.
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        leaf_validity: std::time::Duration,
        /// Name of the agent certificate (CN and SANs).
        #[arg(long, default_value = slapenir::pki::DEFAULT_AGENT_NAME)]
        agent: String,
    },
}

/// Where the embedded default expects its development PKI.
const DEV_PKI_DIR: &str = "certs";

fn load(path: Option<&PathBuf>) -> Result<Loaded, ConfigErrors> {
    match path {
        Some(p) => Config::load(p),
        None => Config::embedded(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    slapenir::server::log_scrub::init();
    match cli.command.unwrap_or(Command::Run) {
        Command::Check { admin } => check(cli.config.as_ref(), admin),
        Command::Pki {
            command:
                PkiCommand::Init {
                    dir,
                    force,
                    keep_existing,
                    leaf_validity,
                    agent,
                },
        } => pki_init(
            &dir,
            slapenir::pki::InitOptions {
                force,
                keep_existing,
                leaf_validity,
                agent_name: agent,
            },
        ),
        Command::Run => run(cli.config),
    }
}

/// `check`: the config's summary or every error; with `--admin`, the running gateway's plan.
fn check(config: Option<&PathBuf>, admin: Option<std::net::SocketAddr>) -> ExitCode {
    let loaded = match load(config) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{} error(s)", errors.0.len());
            return ExitCode::FAILURE;
        }
    };
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    let c = &loaded.config;
    println!(
        "ok: {} listener(s), {} upstream(s), {} credential(s) ({} available), {} route(s)",
        c.listeners.len(),
        c.upstreams.len(),
        c.credentials.len(),
        c.credentials.iter().filter(|c| c.available()).count(),
        c.routes.len()
    );
    match admin.map(slapenir::server::admin::reload_plan) {
        None => ExitCode::SUCCESS,
        Some(Ok(plan)) => {
            println!("a reload of the running gateway would apply: {plan}");
            ExitCode::SUCCESS
        }
        Some(Err(e)) => {
            eprintln!("error: the running gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `pki init`: the development PKI, and what was written or kept.
fn pki_init(dir: &std::path::Path, opts: slapenir::pki::InitOptions) -> ExitCode {
    match slapenir::pki::init(dir, opts) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `run`: serve until `SIGTERM`; the embedded default first makes its development PKI.
fn run(config: Option<PathBuf>) -> ExitCode {
    if config.is_none() {
        // The embedded default uses a development PKI in ./certs: create it once.
        let opts = slapenir::pki::InitOptions {
            keep_existing: true,
            ..Default::default()
        };
        match slapenir::pki::init(std::path::Path::new(DEV_PKI_DIR), opts) {
            Ok(report) => log::info!(
                "development PKI in ./{DEV_PKI_DIR}: {}",
                match report.outcome {
                    slapenir::pki::Outcome::Written => "created",
                    slapenir::pki::Outcome::Kept => "kept",
                }
            ),
            Err(e) => {
                eprintln!("error: development PKI in ./{DEV_PKI_DIR}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let loaded = match load(config.as_ref()) {
        Ok(l) => l,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    match slapenir::server::run(loaded, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}
