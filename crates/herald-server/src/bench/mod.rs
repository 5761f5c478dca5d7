//! `herald bench SCENARIO`: load generators that print numbers. Every run checks correctness while it
//! measures (acked seqs dense and unique, every delivery in order, none lost or doubled) and fails loudly
//! otherwise. By default each run starts its own server as a child process (so its memory and CPU can be
//! read from /proc), or targets `--server URL` (given several times: the nodes of a cluster).

mod broadcast;
mod calibration;
mod churn;
mod client;
mod crowd;
mod direct;
mod fleet;
mod groups;
mod idle;
mod latency;
mod media;
mod node;
mod overload;
mod per_second;
mod saturate;
mod search;
mod sends;
mod soak;
mod storm;

use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub scenario: Scenario,
    /// Also write the results as JSON to this file.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
    /// Spread client sockets over this many loopback source addresses (127.0.0.1, 127.0.0.2 …), each with its
    /// own range of ephemeral ports.
    #[arg(long, global = true, default_value_t = 1)]
    pub source_ips: usize,
    /// Also draw the results as an SVG chart into this file.
    #[arg(long, global = true)]
    pub chart: Option<PathBuf>,
    /// Target an existing server (e.g. http://127.0.0.1:8080) instead of starting one. Its limits apply,
    /// and its memory and CPU are not reported. Given several times, the servers are the nodes of one
    /// cluster: the fleet scenarios (groups, direct, saturate, soak) connect a room's members to every node
    /// and report same-node and cross-node latency apart; the other scenarios use the first server.
    #[arg(long, global = true, action = clap::ArgAction::Append)]
    pub server: Vec<String>,
}

#[derive(clap::Subcommand, Debug)]
pub enum Scenario {
    /// Durable acked sends per second over REST.
    Sends(sends::SendsArgs),
    /// N authenticated, synced, idle WebSocket connections: server memory per connection and idle CPU.
    Idle(idle::IdleArgs),
    /// Rooms of members over WebSockets, senders at a target rate: deliveries per second and latency.
    Groups(groups::GroupsArgs),
    /// Pairs chatting over WebSockets at a target rate: acked durable sends per second and latency.
    Direct(direct::DirectArgs),
    /// The highest delivery rate at which p99 latency stays under a bound.
    Saturate(saturate::SaturateArgs),
    /// Photos and videos through the media pipeline: uploads per second and time to ready.
    Media(media::MediaArgs),
    /// All connections drop at once and reconnect at once: time until all resumed, nothing lost.
    Storm(storm::StormArgs),
    /// Groups traffic for minutes: server memory, open descriptors and p99 sampled each interval.
    Soak(soak::SoakArgs),
    /// One big group (10,000 members) and a small conversation beside it: mass connect, messages to every
    /// member, a reconnect storm; slow-consumer disconnects, presence cost, latency of each conversation.
    Crowd(crowd::CrowdArgs),
    /// More sends than the node sustains, then few: offered vs served vs refused, p99 and memory each second.
    Overload(overload::OverloadArgs),
    /// Many connections over the nodes of a cluster, each receiving one message sent into its group: server
    /// memory per connection on every node (from its /metrics) and the time until every socket had it.
    Broadcast(broadcast::BroadcastArgs),
    /// A million messages, then searches of five kinds over them: query latency (p50/p99) through the REST API.
    Search(search::SearchArgs),
    /// A helper process of `idle --processes` and `broadcast`: holds the connections of the tokens it is given.
    #[command(hide = true)]
    Hold(idle::HoldArgs),
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    client::set_source_ips(args.source_ips);
    if let Scenario::Hold(a) = &args.scenario {
        return idle::hold(a).await;
    }
    let calibration = calibration::Calibration::measure();
    println!("{}", calibration.line());
    let target = node::Target::start(&args.server).await?;
    let (mut report, chart): (serde_json::Value, Option<String>) = match &args.scenario {
        Scenario::Sends(a) => {
            let r = sends::run(&target, a).await?;
            println!("{}", r.table());
            (serde_json::to_value(&r)?, None)
        }
        Scenario::Hold(_) => unreachable_hold()?,
        Scenario::Idle(a) => {
            let r = idle::run(&target, a, args.source_ips).await?;
            println!("{}", r.table());
            (serde_json::to_value(&r)?, r.chart())
        }
        Scenario::Broadcast(a) => {
            let r = broadcast::run(&target, a, args.source_ips).await?;
            println!("{}", r.table());
            (serde_json::to_value(&r)?, Some(r.chart()))
        }
        Scenario::Groups(a) => {
            let r = groups::run(&target, a).await?;
            println!("{}", r.table());
            (serde_json::to_value(&r)?, Some(r.chart()))
        }
        Scenario::Direct(a) => {
            let r = direct::run(&target, a).await?;
            println!("{}", r.table());
            (serde_json::to_value(&r)?, Some(r.chart()))
        }
        Scenario::Saturate(a) => {
            let r = saturate::run(&target, a).await?;
            println!("{}", r.table());
            (serde_json::to_value(&r)?, Some(r.chart()))
        }
        Scenario::Media(a) => {
            let r = media::run(&target, a).await?;
            println!("{}", r.table());
            (serde_json::to_value(&r)?, None)
        }
        Scenario::Storm(a) => {
            let r = storm::run(&target, a).await?;
            println!("{}", r.table());
            (serde_json::to_value(&r)?, Some(r.chart()))
        }
        Scenario::Crowd(a) => {
            let r = crowd::run(&target, a).await?;
            println!("{}", r.table());
            (serde_json::to_value(&r)?, Some(r.chart()))
        }
        Scenario::Overload(a) => {
            let r = overload::run(&target, a).await?;
            println!("{}", r.table());
            (serde_json::to_value(&r)?, Some(r.chart()))
        }
        Scenario::Search(a) => {
            let r = search::run(&target, a).await?;
            println!("{}", r.table());
            (serde_json::to_value(&r)?, None)
        }
        Scenario::Soak(a) => {
            let r = soak::run(&target, a).await?;
            println!("{}", r.table());
            (serde_json::to_value(&r)?, Some(r.chart()))
        }
    };
    if let Some(fields) = report.as_object_mut() {
        fields.insert("calibration".into(), serde_json::to_value(&calibration)?);
    }
    if let (Some(path), Some(svg)) = (&args.chart, chart) {
        std::fs::write(path, svg)?;
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    target.stop().await;
    Ok(())
}

/// Locks a bench counter's mutex, and takes it over when a task panicked while holding it: what was counted is
/// still worth reporting, and the panic itself fails the run where the task is joined.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `hold` runs before a target is started (see `run`); reaching the scenario match with it is a bug.
fn unreachable_hold() -> anyhow::Result<(serde_json::Value, Option<String>)> {
    anyhow::bail!("the hold helper does not start a server")
}
