//! `direct`: pairs of users in direct conversations, both sides sending at a combined target rate over
//! WebSockets: acked durable sends per second and send-to-receive latency, every delivery checked.

use super::fleet::{Fleet, Phase};
use super::groups::{latency_chart, phase_table};
use super::node::Target;

#[derive(clap::Args, Debug)]
pub struct DirectArgs {
    /// Pairs of users chatting.
    #[arg(long, default_value_t = 500)]
    pub pairs: usize,
    /// Messages per second, all pairs together.
    #[arg(long, default_value_t = 5000)]
    pub rate: u64,
    /// Seconds to send for.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
}

#[derive(Debug, serde::Serialize)]
pub struct DirectReport {
    pub pairs: usize,
    #[serde(flatten)]
    pub phase: Phase,
}

impl DirectReport {
    pub fn table(&self) -> String {
        format!("scenario direct: {} pairs\n{}", self.pairs, phase_table(std::slice::from_ref(&self.phase)))
    }

    pub fn chart(&self) -> String {
        latency_chart(
            &format!("direct: {} pairs, {} msg/s", self.pairs, self.phase.target_messages_per_second),
            &self.phase,
        )
    }
}

pub async fn run(target: &Target, args: &DirectArgs) -> anyhow::Result<DirectReport> {
    let mut fleet = Fleet::assemble(target, args.pairs, 2, 2).await?;
    eprintln!("sending {} msg/s for {} s ...", args.rate, args.duration);
    let phase = fleet.phase(target, args.rate, args.duration).await?;
    fleet.finish().await?;
    Ok(DirectReport { pairs: args.pairs, phase })
}
