//! The `trellis` command: run the proxy, check a configuration, talk to a running daemon through its admin
//! API (status, reload, targets, scale, instances), or serve a demo backend.

mod admin;
mod check;
mod ctl;
mod daemon;
mod echo;
mod fleet;
mod logging;
mod memory;
mod run;
mod scaling;
mod state;
mod store;
mod systemd;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "trellis",
    version,
    about = "A Lattice-style L7 proxy: host and rule routing to weighted, health-checked, autoscaled target groups",
    long_about = "A Lattice-style L7 proxy: host and rule routing to weighted, health-checked, autoscaled \
target groups.\n\n\
trellis terminates HTTP and HTTPS (or passes TLS through), routes each request by host and by prioritized \
listener rules to weighted target groups, balances over the healthy targets, probes them, and grows or \
shrinks scaling groups of local processes (or VMs, through hooks) from its own request metrics. The \
configuration is one TOML file; `trellis check` validates it and `trellis run` serves it. The commands \
status, reload, targets, scale, instances and healthcheck talk to a running trellis through its admin API.",
    after_long_help = "Files:\n  \
/etc/trellis/trellis.toml   the configuration (--config)\n  \
/var/lib/trellis            registrations and scaler state (--state-dir, $STATE_DIRECTORY)\n\n\
Signals (trellis run):\n  \
SIGHUP    re-read the configuration; a bad file keeps the running one\n  \
SIGUSR1   reopen the access log file (after logrotate moved it)\n  \
SIGTERM, SIGINT   stop accepting, let in-flight requests finish (--shutdown-grace), exit\n\n\
Environment:\n  \
RUST_LOG        log filter, overrides --log-level (e.g. info,trellis_health=debug)\n  \
NOTIFY_SOCKET   systemd's notify socket (Type=notify): READY=1, RELOADING=1, STOPPING=1\n  \
WATCHDOG_USEC   systemd's WatchdogSec: WATCHDOG=1 is sent at half of it\n\n\
The manual (configuration reference, operations, metrics) is README.md of the source tree."
)]
struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    // After each command's own options in its help.
    #[arg(long, global = true, default_value = "info", display_order = 900)]
    log_level: String,
    /// How the daemon's own log lines look: `text` (for people; colored on a terminal) or `json` (one
    /// object per line, for log collectors).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, display_order = 901)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every listener of a configuration file until SIGTERM or SIGINT
    ///
    /// SIGHUP re-reads the file (a bad file changes nothing), SIGUSR1 reopens the access log file, and
    /// SIGTERM or SIGINT stop accepting and let in-flight requests finish. Under systemd (`Type=notify`)
    /// it reports READY=1 once every listener is bound, RELOADING=1/READY=1 around reloads, STOPPING=1,
    /// and WATCHDOG=1 when the unit sets WatchdogSec.
    Run {
        /// The configuration file (TOML).
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Worker threads for the data plane [default: one per CPU].
        #[arg(long, value_name = "N")]
        workers: Option<usize>,
        /// On SIGTERM/SIGINT, how long in-flight requests may take to finish before exit.
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
        shutdown_grace: Duration,
        /// Where targets registered through the admin API and the scaler's state are kept across
        /// restarts [default: $STATE_DIRECTORY (systemd), else /var/lib/trellis when it exists and is
        /// writable, else ./.trellis-state].
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Validate a configuration file without starting anything
    ///
    /// Exit 0 with a one-line summary, or 1 with every error, one per line: `file:line: key: message`.
    /// Certificates, keys, CA files, JWKS files and the admin token file are read too.
    Check {
        /// The configuration file (TOML).
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// A tiny, fast HTTP backend for demos, tests and load tests
    ///
    /// Reads the request body, then answers `200 hello from NAME`, with an `x-served-by: NAME` header on
    /// every response. `GET /healthz` answers `200 ok`. Query parameters change the answer: `?status=N`
    /// answers that status, `?delay=MS` waits first, `?bytes=N` streams N bytes, `?echo` describes the
    /// request as JSON (method, path, query, version, headers, body size).
    Echo {
        /// Address to listen on (port 0 picks a free port, printed at start).
        #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:9001")]
        listen: SocketAddr,
        /// Name reported in `x-served-by` and bodies [default: the listening address].
        #[arg(long)]
        name: Option<String>,
        /// Worker threads [default: one per CPU].
        #[arg(long, value_name = "N")]
        workers: Option<usize>,
    },
    /// Show what a running trellis serves and the state of every target
    ///
    /// Services and listeners, then every target group with each target's state, for how long, and why;
    /// then scaling groups with their instances and recent activities.
    Status {
        /// Print the admin API's JSON (pretty-printed) instead of the tables.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: ctl::AdminArgs,
    },
    /// Make a running trellis re-read its configuration file
    ///
    /// Exit 0 with a summary, or 1 with every error (`file:line: key: message`) while the running
    /// configuration stays in place.
    Reload {
        #[command(flatten)]
        admin: ctl::AdminArgs,
    },
    /// Register or deregister targets of a running trellis
    Targets {
        #[command(subcommand)]
        command: ctl::TargetsCommand,
    },
    /// Set the desired capacity of a scaling group of a running trellis
    ///
    /// The number is clamped to the group's min and max; the scaler launches or drains instances to
    /// reach it.
    Scale {
        /// The scaling group.
        group: String,
        /// The number of instances wanted.
        desired: u32,
        #[command(flatten)]
        admin: ctl::AdminArgs,
    },
    /// Replace every instance of a scaling group, or cancel the refresh under way
    ///
    /// Instances are replaced in batches kept within the group's `instance_refresh` bounds (by default
    /// each new instance is in service before an old one drains). With --wait, follows the refresh to
    /// its end and exits 0 only if it ended `successful`.
    Refresh {
        /// The scaling group.
        group: String,
        /// Cancel the refresh in progress instead (the instances replaced so far stay).
        #[arg(long, conflicts_with_all = ["min_healthy_percent", "max_healthy_percent"])]
        cancel: bool,
        /// Follow the refresh until it ends.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up (exit 1) after this long; the refresh itself goes on.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, requires = "wait")]
        timeout: Option<Duration>,
        /// Of desired, the share that stays in service [default: the group's instance_refresh]
        #[arg(long, value_parser = clap::value_parser!(u32).range(0..=100))]
        min_healthy_percent: Option<u32>,
        /// Of desired, how far the refresh may go above it [default: the group's instance_refresh]
        #[arg(long, value_parser = clap::value_parser!(u32).range(100..=200))]
        max_healthy_percent: Option<u32>,
        #[command(flatten)]
        admin: ctl::AdminArgs,
    },
    /// Protect instances of a scaling group from scale-in, or lift the protection
    Instances {
        #[command(subcommand)]
        command: ctl::InstancesCommand,
    },
    /// Exit 0 if a running trellis answers on its admin API, else 1 with the reason
    ///
    /// Sends `GET /healthz` to the admin API (with the token of --config or --token-file, if one is
    /// set). Made for container HEALTHCHECKs and supervisors, which cannot count on curl being there.
    Healthcheck {
        /// How long to wait for the answer.
        #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        #[command(flatten)]
        admin: ctl::AdminArgs,
    },
    /// Fleet mode: the configuration every node of a fleet serves, in etcd
    Fleet {
        #[command(subcommand)]
        command: FleetCommand,
    },
    /// Print a shell completion script
    ///
    /// bash: `trellis completions bash > /etc/bash_completion.d/trellis`;
    /// zsh: `trellis completions zsh > "${fpath[1]}/_trellis"`;
    /// fish: `trellis completions fish > ~/.config/fish/completions/trellis.fish`.
    #[command(verbatim_doc_comment)]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page, or write one page per command
    ///
    /// `trellis man > /usr/local/share/man/man1/trellis.1`, or `trellis man --out-dir
    /// /usr/local/share/man/man1` for trellis.1 and a page per subcommand (trellis-run.1, ...).
    Man {
        /// Write trellis.1 and one page per subcommand into this directory instead of printing
        /// trellis.1.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

/// Where the fleet's store is.
#[derive(clap::Args)]
struct FleetArgs {
    /// etcd client URLs (separated by commas); any one reachable member is enough.
    #[arg(long, value_name = "URL,...", value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// The fleet's key namespace.
    #[arg(long, value_name = "PREFIX", default_value = "/trellis")]
    prefix: String,
    /// TLS to etcd (https endpoints): the PEM file of the CA that signed the members' certificates.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// A client certificate (PEM) for etcd's --client-cert-auth; needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// The client certificate's private key (PEM); needs --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
}

impl FleetArgs {
    /// The store to connect to, its TLS files read.
    fn connection(&self) -> Result<fleet::Connection, String> {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let tls = match &self.ca {
            None => None,
            Some(ca) => Some(trellis_config::FleetTls {
                ca: read(ca)?,
                identity: match (&self.cert, &self.key) {
                    (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
                    _ => None,
                },
            }),
        };
        Ok(fleet::Connection {
            endpoints: self.endpoints.clone(),
            prefix: self.prefix.clone(),
            tls,
        })
    }
}

#[derive(Subcommand)]
enum FleetCommand {
    /// Validate a configuration file as `check` does and make it the fleet's configuration
    ///
    /// Exit 1 with every error (`file:line: key: message`) and nothing written; else the file is written
    /// to etcd in one compare-and-swap on the revision read, every node of the fleet serves it, and the
    /// new revision is printed. Node-local sections ([admin], [access_log], [limits], [fleet]) belong in
    /// each node's file and are errors here.
    Apply {
        /// The configuration file (TOML): services, target groups, scaling groups, auth policies.
        file: PathBuf,
        #[command(flatten)]
        store: FleetArgs,
    },
    /// Write a single-file deployment (its file, and the targets registered in its state directory) into
    /// an empty fleet prefix
    ///
    /// The file is validated as `fleet apply` validates it; everything is written in one transaction,
    /// which fails if the prefix already holds a fleet.
    Import {
        /// The deployment's configuration file (TOML), without node-local sections.
        file: PathBuf,
        /// The deployment's state directory: its registered targets come along.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        #[command(flatten)]
        store: FleetArgs,
    },
    /// Write the fleet's configuration back to a file, and its registered targets into a state directory
    Export {
        /// Where to write the configuration [default: standard output].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// A state directory to write the registered targets into (registrations.json).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        #[command(flatten)]
        store: FleetArgs,
    },
    /// Show the fleet: its applied configuration, every live node and the revision it serves
    ///
    /// Nodes are listed while their lease lives: a node that stopped drops out within its lease_ttl.
    Status {
        #[command(flatten)]
        store: FleetArgs,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
}

/// Where `run` and `check` read their configuration unless told otherwise (the admin commands too).
const DEFAULT_CONFIG: &str = "/etc/trellis/trellis.toml";

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(&cli.log_level, cli.log_format);
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
        Command::Refresh {
            group,
            cancel,
            wait,
            timeout,
            min_healthy_percent,
            max_healthy_percent,
            admin,
        } => {
            return ctl::refresh(ctl::RefreshArgs {
                group: &group,
                cancel,
                wait,
                min_healthy_percent,
                max_healthy_percent,
                timeout,
                admin: &admin,
            })
        }
        Command::Instances { command } => return ctl::instances(&command),
        Command::Healthcheck { timeout, admin } => return ctl::healthcheck(&admin, timeout),
        Command::Fleet { command } => return fleet_command(command),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "trellis",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man { out_dir } => manual(out_dir.as_deref()),
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
pub enum LogFormat {
    Text,
    Json,
}

fn fleet_command(command: FleetCommand) -> ExitCode {
    let store = match &command {
        FleetCommand::Apply { store, .. }
        | FleetCommand::Status { store, .. }
        | FleetCommand::Import { store, .. }
        | FleetCommand::Export { store, .. } => store.connection(),
    };
    let store = match store {
        Ok(store) => store,
        Err(e) => {
            eprintln!("trellis: {e}");
            return ExitCode::FAILURE;
        }
    };
    match command {
        FleetCommand::Apply { file, .. } => fleet::apply(&file, &store),
        FleetCommand::Status { json, .. } => fleet::status(&store, json),
        FleetCommand::Import {
            file, state_dir, ..
        } => fleet::import(&file, state_dir.as_deref(), &store),
        FleetCommand::Export { out, state_dir, .. } => {
            fleet::export(out.as_deref(), state_dir.as_deref(), &store)
        }
    }
}

/// `trellis man`: the page to stdout, or every page into a directory.
fn manual(out_dir: Option<&std::path::Path>) -> anyhow::Result<()> {
    // As generate_to does for the pages of the subcommands: no `help` subcommand, which has no page.
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    match out_dir {
        Some(dir) => std::fs::create_dir_all(dir)
            .and_then(|()| clap_mangen::generate_to(command, dir))
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display())),
        None => match clap_mangen::Man::new(command).render(&mut std::io::stdout()) {
            // `trellis man | head` is fine.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => Ok(other?),
        },
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
