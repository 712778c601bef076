//! The `zonectl` command line: one module per subcommand.

pub mod format;
pub mod image;
pub mod run;

use clap::{Parser, Subcommand};

/// Launch and inspect zones: KVM microVMs, each booting its own kernel.
#[derive(Debug, Parser)]
#[command(name = "zonectl", version, about, long_about = None)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// `zonectl` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a zone in the foreground and stream its console.
    Run(run::RunArgs),
    /// Build zone images.
    #[command(subcommand)]
    Image(image::ImageCommand),
}

/// Runs the parsed command; returns the process exit code.
pub fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Image(cmd) => image::run(cmd),
    }
}

/// The whole `zonectl` program: logging to stderr, parse, run, exit.
pub fn main() -> ! {
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
