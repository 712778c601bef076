//! `zonectl`: the zone attestor's command line.

use clap::Parser;
use hypervisor_agent::cli::{Cli, dispatch};

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ZONECTL_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("zonectl: error: {e:#}");
            std::process::exit(1);
        }
    }
}
