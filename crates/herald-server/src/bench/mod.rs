//! `herald bench SCENARIO`: load generators that print numbers. Every run checks correctness while it
//! measures (acked seqs dense and unique, every delivery in order, none lost or doubled) and fails loudly
//! otherwise. By default each run starts its own server as a child process (so its memory and CPU can be
//! read from /proc), or targets `--server URL`.

mod client;
mod groups;
mod idle;
mod node;
mod sends;

use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub scenario: Scenario,
    /// Also write the results as JSON to this file.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
    /// Target an existing server (e.g. http://127.0.0.1:8080) instead of starting one. Its limits apply,
    /// and its memory and CPU are not reported.
    #[arg(long, global = true)]
    pub server: Option<String>,
}

#[derive(clap::Subcommand, Debug)]
pub enum Scenario {
    /// Durable acked sends per second over REST.
    Sends(sends::SendsArgs),
    /// N authenticated, synced, idle WebSocket connections: server memory per connection and idle CPU.
    Idle(idle::IdleArgs),
    /// Rooms of members over WebSockets, senders at a target rate: deliveries per second and latency.
    Groups(groups::GroupsArgs),
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let target = node::Target::start(args.server.as_deref()).await?;
    let report: serde_json::Value = match &args.scenario {
        Scenario::Sends(a) => {
            let r = sends::run(&target, a).await?;
            println!("{}", r.table());
            serde_json::to_value(&r)?
        }
        Scenario::Idle(a) => {
            let r = idle::run(&target, a).await?;
            println!("{}", r.table());
            serde_json::to_value(&r)?
        }
        Scenario::Groups(a) => {
            let r = groups::run(&target, a).await?;
            println!("{}", r.table());
            serde_json::to_value(&r)?
        }
    };
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    target.stop().await;
    Ok(())
}

/// Milliseconds from a histogram of microseconds.
fn ms(h: &hdrhistogram::Histogram<u64>, quantile: f64) -> f64 {
    h.value_at_quantile(quantile) as f64 / 1000.0
}
