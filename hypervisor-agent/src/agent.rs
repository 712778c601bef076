//! The `hypervisor-agent` program: `hypervisor-agent [daemon]` runs the host
//! daemon; `hypervisor-agent vmm --zone-dir DIR` is the per-zone VMM process
//! the daemon starts (not meant to be run by hand).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::daemon::Daemon;
use crate::daemon::config::{DEFAULT_CONFIG_PATH, DaemonConfig};

/// The zone attestor's host daemon.
#[derive(Debug, Parser)]
#[command(name = "hypervisor-agent", version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Daemon {
        /// Config file (TOML).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run one zone's VMM (started by the daemon).
    Vmm {
        /// The zone's directory (holds launch.json).
        #[arg(long)]
        zone_dir: PathBuf,
    },
}

/// Entry point.
pub fn main() -> ! {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("ZONE_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let result = match args.command.unwrap_or(Command::Daemon { config: None }) {
        Command::Vmm { zone_dir } => crate::vmm::process::run(&zone_dir),
        Command::Daemon { config } => run_daemon(config).map(|()| 0),
    };
    match result {
        Ok(code) => std::process::exit(code),
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
