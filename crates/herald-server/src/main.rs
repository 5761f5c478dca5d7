//! `herald`: run a node, or benchmark one.

mod chat;

use anyhow::Context;
use clap::{Parser, Subcommand};
use herald_server::config::Config;
use std::net::SocketAddr;
use std::path::PathBuf;

/// mimalloc instead of glibc's malloc: a delivery or a REST send allocates and frees many small buffers on
/// different threads, where glibc spends its time consolidating and unlinking chunks (~10 % of the server's
/// samples). Measured in BENCHMARKS.md: +29 % acked sends/s, and fewer bytes per idle connection. Built without
/// transparent huge pages (`no_thp`), which would otherwise add ~18 MiB of RSS at start (2 MiB pages for the
/// few KiB each thread's heap touches).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "herald", version, about = "Herald messaging server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a Herald node (embedded storage; nothing to install).
    Serve {
        /// Address to listen on [default: 127.0.0.1:8080]
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Data directory [default: ./herald-data]
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// TOML configuration file (see herald.example.toml)
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Measure a node: see BENCHMARKS.md.
    Bench(herald_server::bench::BenchArgs),
    /// Chat in the terminal: a line-based client (log in, /list, /dm USER, /open N, type to send).
    Chat(chat::ChatArgs),
    /// Apply the PostgreSQL schema migrations this build has and the database lacks, then exit (nodes also
    /// apply them at start; this is for operators who run them as a separate step).
    Migrate {
        /// TOML configuration file with `[storage.postgres]` (HERALD_STORAGE__POSTGRES__URL works too)
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Look at or cut the write-ahead journal of a stopped node (see docs/operations.md).
    Journal {
        #[command(subcommand)]
        action: JournalAction,
    },
    /// Check the database file of a stopped node: every page checksum and every row (see docs/operations.md).
    Database {
        #[command(subcommand)]
        action: DatabaseAction,
    },
    /// The autoscaling policy of deploy/k8s/hpa.yaml, offline (see docs/operations.md#scale).
    Autoscale {
        #[command(subcommand)]
        action: AutoscaleAction,
    },
    /// Plan servers, connections, messages/s and storage month by month from a history of daily users.
    Capacity(CapacityArgs),
}

#[derive(Subcommand)]
enum DatabaseAction {
    /// Read every page and row of a copy of the database; changes nothing (exit 1 when damaged).
    Check {
        /// Data directory [default: ./herald-data]
        #[arg(long, default_value = "herald-data")]
        data_dir: PathBuf,
        /// Where the copy is made (it needs the database's size free) [default: the data directory]
        #[arg(long)]
        scratch: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AutoscaleAction {
    /// Replay a load trace through the policy; print the server count at each point.
    Simulate(SimulateArgs),
}

#[derive(clap::Args)]
struct SimulateArgs {
    /// CSV of `time_s,connections` (seconds since the start, connections open then), time ascending
    #[arg(long)]
    trace: PathBuf,
    /// Also write an SVG chart of servers over time here
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Connections one server holds at 100 % utilisation
    #[arg(long, default_value_t = 5_000)]
    capacity: u64,
    /// Scale out above this utilisation
    #[arg(long, default_value_t = 0.8)]
    scale_out_above: f64,
    /// Scale in below this utilisation
    #[arg(long, default_value_t = 0.4)]
    scale_in_below: f64,
    /// The utilisation a scaling event aims for
    #[arg(long, default_value_t = 0.6)]
    target: f64,
    /// Seconds after a scaling event during which no other happens
    #[arg(long, default_value_t = 300)]
    cooldown_secs: u64,
    #[arg(long, default_value_t = 50)]
    min_servers: u64,
    #[arg(long, default_value_t = 1_000)]
    max_servers: u64,
    /// Servers at the start of the trace [default: the minimum]
    #[arg(long)]
    initial: Option<u64>,
}

#[derive(clap::Args)]
struct CapacityArgs {
    /// CSV of `day,users`: the day as a number or YYYY-MM-DD, daily active users
    #[arg(long)]
    history: PathBuf,
    /// Months to plan after the history's last day
    #[arg(long, default_value_t = 12)]
    months: u64,
    /// Also write an SVG chart of the plan here
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Added to the forecast of daily users
    #[arg(long, default_value_t = 0.2)]
    headroom: f64,
    /// Peak rate over the day's average
    #[arg(long, default_value_t = 3.0)]
    peak_multiplier: f64,
    #[arg(long, default_value_t = 80.0)]
    messages_per_user_per_day: f64,
    /// Share of the daily users connected at an average moment
    #[arg(long, default_value_t = 0.1)]
    concurrent_share: f64,
    #[arg(long, default_value_t = 5_000.0)]
    connections_per_server: f64,
    #[arg(long, default_value_t = 1_000.0)]
    messages_per_server_per_second: f64,
    /// Bytes one stored message takes, indexes included, in one replica
    #[arg(long, default_value_t = 1_024.0)]
    bytes_per_message: f64,
    /// Copies of every message the store keeps
    #[arg(long, default_value_t = 3.0)]
    replicas: f64,
}

#[derive(Subcommand)]
enum JournalAction {
    /// Say what the journal holds and whether it is damaged; changes nothing (exit 1 when damaged).
    Check {
        /// Data directory [default: ./herald-data]
        #[arg(long, default_value = "herald-data")]
        data_dir: PathBuf,
    },
    /// Cut a damaged journal at the damage, dropping the records after it, and list what was dropped.
    Truncate {
        /// Data directory [default: ./herald-data]
        #[arg(long, default_value = "herald-data")]
        data_dir: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Journal { action } => journal(action),
        Command::Database { action: DatabaseAction::Check { data_dir, scratch } } => {
            check_database(data_dir, scratch.as_deref())
        }
        Command::Autoscale { action: AutoscaleAction::Simulate(args) } => return simulate(args),
        Command::Capacity(args) => return capacity(args),
        _ => {}
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Serve { listen, data_dir, config } => serve(listen, data_dir, config).await,
            Command::Bench(args) => herald_server::bench::run(args).await,
            Command::Chat(args) => chat::run(args).await,
            Command::Migrate { config } => migrate(config).await,
            Command::Journal { .. } | Command::Database { .. } | Command::Autoscale { .. } | Command::Capacity(_) => {
                Ok(())
            }
        }
    })
}

/// `herald journal check|truncate`: prints the report and exits (1: damaged and not cut, 2: could not read).
fn check_database(data_dir: &std::path::Path, scratch: Option<&std::path::Path>) -> ! {
    let code = match herald_embedded::check_database(data_dir, scratch) {
        Ok(report) => {
            println!("{report}");
            i32::from(report.damaged())
        }
        Err(e) => {
            eprintln!("herald: {e}");
            2
        }
    };
    std::process::exit(code)
}

fn journal(action: &JournalAction) -> ! {
    let code = match action {
        JournalAction::Check { data_dir } => match herald_embedded::check_journal(data_dir) {
            Ok(report) => {
                println!("{report}");
                i32::from(report.damage.is_some())
            }
            Err(e) => {
                eprintln!("herald: {e}");
                2
            }
        },
        JournalAction::Truncate { data_dir } => match herald_embedded::truncate_journal(data_dir) {
            Ok(None) => {
                println!("the journal is not damaged: nothing was changed");
                0
            }
            Ok(Some(report)) => {
                if let Some(d) = &report.damage {
                    println!(
                        "cut {} at byte {}: dropped {} byte(s) holding {} intact record(s) (LSNs {} to {}) that \
                         followed the damage; the {} record(s) before it are replayed at the next start",
                        d.path.display(),
                        d.offset,
                        report.bytes - d.offset,
                        d.following,
                        d.first_lsn,
                        d.last_lsn,
                        report.replayable
                    );
                }
                0
            }
            Err(e) => {
                eprintln!("herald: {e}");
                2
            }
        },
    };
    std::process::exit(code)
}

/// `herald autoscale simulate`: the table on stdout, the chart where asked.
fn simulate(args: &SimulateArgs) -> anyhow::Result<()> {
    use herald_server::autoscale;
    let policy = autoscale::Policy {
        capacity_per_server: args.capacity,
        scale_out_above: args.scale_out_above,
        scale_in_below: args.scale_in_below,
        target: args.target,
        cooldown_secs: args.cooldown_secs,
        min_servers: args.min_servers,
        max_servers: args.max_servers,
    };
    policy.validate().map_err(anyhow::Error::msg)?;
    let csv = std::fs::read_to_string(&args.trace).with_context(|| format!("reading {}", args.trace.display()))?;
    let trace = autoscale::parse_trace(&csv).map_err(|e| anyhow::anyhow!("{}: {e}", args.trace.display()))?;
    let steps = autoscale::simulate(&policy, args.initial.unwrap_or(policy.min_servers), &trace);
    print!("{}", autoscale::report(&policy, &steps));
    if let Some(svg) = &args.svg {
        std::fs::write(svg, autoscale::chart(&policy, &steps)).with_context(|| format!("writing {}", svg.display()))?;
    }
    Ok(())
}

/// `herald capacity`: the plan on stdout, the chart where asked.
fn capacity(args: &CapacityArgs) -> anyhow::Result<()> {
    use herald_server::capacity;
    let csv = std::fs::read_to_string(&args.history).with_context(|| format!("reading {}", args.history.display()))?;
    let history = capacity::parse_history(&csv).map_err(|e| anyhow::anyhow!("{}: {e}", args.history.display()))?;
    let trend = capacity::Trend::fit(&history).map_err(anyhow::Error::msg)?;
    let last_day = history.iter().map(|p| p.0).fold(f64::MIN, f64::max);
    let assumptions = capacity::Assumptions {
        headroom: args.headroom,
        peak_multiplier: args.peak_multiplier,
        messages_per_user_per_day: args.messages_per_user_per_day,
        concurrent_share: args.concurrent_share,
        connections_per_server: args.connections_per_server,
        messages_per_server_per_second: args.messages_per_server_per_second,
        bytes_per_message: args.bytes_per_message,
        replicas: args.replicas,
    };
    assumptions.validate().map_err(anyhow::Error::msg)?;
    let months = capacity::plan(trend, last_day, args.months, &assumptions);
    print!("{}", capacity::report(trend, &assumptions, &months));
    if let Some(svg) = &args.svg {
        std::fs::write(svg, capacity::chart(&months)).with_context(|| format!("writing {}", svg.display()))?;
    }
    Ok(())
}

async fn migrate(file: Option<PathBuf>) -> anyhow::Result<()> {
    let config = match Config::load(file.as_deref(), std::env::vars()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("herald: {e}");
            std::process::exit(2);
        }
    };
    let settings = config.storage.postgres_settings();
    let db = herald_postgres::PostgresDb::connect(&settings).await.context("connecting to PostgreSQL")?;
    let migrated = db.migrate().await.context("migrating")?;
    db.close().await;
    if migrated.from == migrated.to {
        println!("the schema is up to date (version {})", migrated.to);
    } else {
        println!("migrated the schema from version {} to {}", migrated.from, migrated.to);
    }
    Ok(())
}

async fn serve(listen: Option<SocketAddr>, data_dir: Option<PathBuf>, file: Option<PathBuf>) -> anyhow::Result<()> {
    let mut config = match Config::load(file.as_deref(), std::env::vars()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("herald: {e}");
            std::process::exit(2);
        }
    };
    if let Some(listen) = listen {
        config.server.listen = listen;
    }
    if let Some(dir) = data_dir {
        config.server.data_dir = dir;
    }
    if let Err(e) = config.validate() {
        eprintln!("herald: {e}");
        std::process::exit(2);
    }
    let running = herald_server::server::start(config).await?;
    // A line scripts and tests can read to learn the bound address.
    println!("herald listening on http://{}", running.addr);
    let stop = running.stop_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.cancel();
    });
    running.wait().await
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
