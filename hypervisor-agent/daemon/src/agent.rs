//! The `hypervisor-agent` program: `hypervisor-agent [daemon] [--config FILE]`
//! runs the host daemon.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{DEFAULT_CONFIG_PATH, DaemonConfig};
use crate::manager::Daemon;

/// The zone attestor's host daemon: launches zones (KVM microVMs, each in its
/// own jailed VMM process), measures them into the TPM-backed event log and
/// serves the control API that `zonectl` talks to.
#[derive(Debug, Parser)]
#[command(name = "hypervisor-agent", version, about)]
struct Args {
    /// Config file (TOML; default /etc/zone-attestor/hypervisor-agent.toml).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Daemon,
}

/// Entry point.
pub fn main() -> ! {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A log that cannot be written (a full disk) loses the line; the
        // default would eprintln! about it, which panics when stderr fails.
        .log_internal_errors(false)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("ZONE_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let result = match args.command.unwrap_or(Command::Daemon) {
        Command::Daemon => run_daemon(args.config),
    };
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("hypervisor-agent: error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run_daemon(config: Option<PathBuf>) -> anyhow::Result<()> {
    let explicit = config.is_some();
    let path = config.unwrap_or_else(|| DEFAULT_CONFIG_PATH.into());
    let cfg = DaemonConfig::load(&path, explicit)?;
    // Nothing the daemon creates is for other users: files at most 0640,
    // directories 0750 (sockets and records get explicit modes too).
    // SAFETY: umask(2) only sets the process's file-mode mask.
    unsafe { libc::umask(0o027) };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let daemon = Daemon::start(cfg).await?;
        tracing::info!(state_dir = %daemon.state_dir().display(), zones = daemon.list().len(), "daemon started");
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
            tracing::info!("shutting down; zones keep running");
        };
        crate::api::serve(daemon, shutdown).await
    })
}
