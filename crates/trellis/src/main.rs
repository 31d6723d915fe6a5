//! The `trellis` command: run the proxy, check a configuration, talk to a running daemon through its admin
//! API (status, reload, targets, scale, instances), or serve a demo backend.

mod admin;
mod check;
mod ctl;
mod daemon;
mod echo;
mod run;
mod scaling;
mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "trellis",
    version,
    about = "A Lattice-style L7 proxy: host and rule routing to weighted, health-checked, autoscaled target groups"
)]
struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    /// How the daemon's own log lines look: `text` (for people; colored on a terminal) or `json` (one
    /// object per line, for log collectors).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every listener of a configuration file until SIGTERM or SIGINT.
    Run {
        /// The configuration file (TOML).
        #[arg(short, long, default_value = "/etc/trellis/trellis.toml")]
        config: PathBuf,
        /// Worker threads for the data plane (default: one per CPU).
        #[arg(long)]
        workers: Option<usize>,
        /// On SIGTERM/SIGINT, how long in-flight requests may take to finish before exit.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        shutdown_grace: Duration,
        /// Where targets registered through the admin API (and scaler state) are kept across restarts
        /// (default: /var/lib/trellis when writable, else ./.trellis-state).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Validate a configuration file: exit 0 with a summary, or 1 with every error (file:line: key: message).
    Check {
        #[arg(short, long, default_value = "/etc/trellis/trellis.toml")]
        config: PathBuf,
    },
    /// A tiny, fast HTTP backend for demos, tests and load tests.
    Echo {
        /// Address to listen on (port 0 picks a free port, printed at start).
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: SocketAddr,
        /// Name reported in `x-served-by` and bodies (default: the listening address).
        #[arg(long)]
        name: Option<String>,
        /// Worker threads (default: one per CPU).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Show what a running trellis serves: services and listeners, then every target's state, for how
    /// long, and why.
    Status {
        /// Print the admin API's JSON (pretty-printed) instead of the tables.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: ctl::AdminArgs,
    },
    /// Make a running trellis re-read its configuration file: exit 0 with a summary, or 1 with every
    /// error (file:line: key: message) while the running configuration stays in place.
    Reload {
        #[command(flatten)]
        admin: ctl::AdminArgs,
    },
    /// Register or deregister targets of a running trellis through its admin API.
    Targets {
        #[command(subcommand)]
        command: ctl::TargetsCommand,
    },
    /// Set the desired capacity of a scaling group of a running trellis; it is clamped to the group's
    /// min and max, and the scaler launches or drains instances to reach it.
    Scale {
        /// The scaling group.
        group: String,
        /// The number of instances wanted.
        desired: u32,
        #[command(flatten)]
        admin: ctl::AdminArgs,
    },
    /// Protect instances of a scaling group of a running trellis from scale-in, or lift the protection.
    Instances {
        #[command(subcommand)]
        command: ctl::InstancesCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level, cli.log_format);
    let result = match cli.command {
        Command::Run {
            config,
            workers,
            shutdown_grace,
            state_dir,
        } => run::run(&config, workers, shutdown_grace, state_dir),
        Command::Check { config } => return check::check(&config),
        Command::Status { json, admin } => return ctl::status(&admin, json),
        Command::Reload { admin } => return ctl::reload(&admin),
        Command::Targets { command } => return ctl::targets(&command),
        Command::Scale {
            group,
            desired,
            admin,
        } => return ctl::scale(&group, desired, &admin),
        Command::Instances { command } => return ctl::instances(&command),
        Command::Echo {
            listen,
            name,
            workers,
        } => runtime(workers)
            .and_then(|rt| rt.block_on(echo::run(echo::EchoOptions { listen, name }))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trellis: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        // Without the module path: events use `target` for the backend they are about.
        LogFormat::Json => builder.json().flatten_event(true).with_target(false).init(),
    }
}

/// The runtime for `workers` threads (default: one per CPU). One worker gets tokio's current-thread
/// scheduler: everything on the calling thread, no work-stealing queues or cross-thread wake-ups, which
/// is what a proxy pinned to one core wants.
pub fn runtime(workers: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = match workers {
        Some(0) => anyhow::bail!("--workers must be at least 1"),
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    Ok(builder.enable_all().build()?)
}
