//! The `zonectl` command line: one module per subcommand.

pub mod client;
pub mod console;
pub mod eventlog;
pub mod evidence;
pub mod format;
pub mod image;
pub mod inspect;
pub mod launch;
pub mod list;
pub mod logs;
pub mod measure;
pub mod policy;
pub mod run;
pub mod show;
pub mod stop;
pub mod verify;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use format::OutputFormat;

/// Launch and inspect zones: KVM microVMs, each booting its own kernel.
#[derive(Debug, Parser)]
#[command(name = "zonectl", version, about, long_about = None)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every command.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The daemon's control socket (default: $ZONE_SOCKET, else /run/zone-attestor/control.sock).
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t)]
    pub output: OutputFormat,
}

impl GlobalArgs {
    /// The control socket to use.
    pub fn socket(&self) -> PathBuf {
        client::socket_path(self.socket.as_deref())
    }
}

/// `zonectl` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Launch a zone through the daemon and wait until it is ready.
    Launch(launch::LaunchArgs),
    /// List zones.
    List,
    /// Show one zone.
    Inspect {
        /// Zone name.
        name: String,
    },
    /// Show a zone's workload output (stdout/stderr of its command).
    Logs {
        /// Zone name.
        name: String,
        /// Keep streaming until the zone ends.
        #[arg(long, short)]
        follow: bool,
        /// Show the serial console instead.
        #[arg(long)]
        console: bool,
    },
    /// Attach to a zone's serial console (Ctrl-] detaches).
    Console {
        /// Zone name.
        name: String,
    },
    /// Stop a zone (its record stays).
    Stop {
        /// Zone name.
        name: String,
    },
    /// Stop a zone if needed and delete it.
    Destroy {
        /// Zone name.
        name: String,
    },
    /// Boot a zone in the foreground, without the daemon, and stream its console.
    Run(run::RunArgs),
    /// Build zone images.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Compute a zone's expected digests offline (no daemon, no TPM).
    Measure(measure::MeasureArgs),
    /// Get fresh evidence about a running zone (`--export DIR` for tpm2-tools).
    Evidence(evidence::EvidenceArgs),
    /// Verify evidence against a policy, a nonce and trusted AKs (offline).
    Verify(verify::VerifyArgs),
    /// Show the host's event log, the zone PCR and the attestation key.
    Eventlog(eventlog::EventLogArgs),
    /// Verifier policies.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
}

/// Runs the parsed command; returns the process exit code.
pub fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let g = &cli.global;
    match cli.command {
        Command::Launch(args) => launch::run(g, args),
        Command::List => list::run(g),
        Command::Inspect { name } => inspect::run(g, name),
        Command::Logs { name, follow, console } => logs::run(g, name, follow, console),
        Command::Console { name } => console::run(g, name),
        Command::Stop { name } => stop::stop(g, name),
        Command::Destroy { name } => stop::destroy(g, name),
        Command::Run(args) => run::run(g, args),
        Command::Image(cmd) => image::run(g, cmd),
        Command::Measure(args) => measure::run(g, args),
        Command::Evidence(args) => evidence::run(g, args),
        Command::Verify(args) => verify::run(g, args),
        Command::Eventlog(args) => eventlog::run(g, args),
        Command::Policy(cmd) => policy::run(g, cmd),
    }
}

/// The whole `zonectl` program: logging to stderr, parse, run, exit.
pub fn main() -> ! {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
