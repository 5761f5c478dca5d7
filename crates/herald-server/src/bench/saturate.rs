//! `saturate`: the highest delivery rate at which p99 send-to-receive latency stays under a bound. One fleet
//! of rooms; phases at a doubling rate until the bound is broken (or the server falls behind), then a
//! bisection between the last good and the first bad rate.

use super::fleet::{Fleet, Phase};
use super::groups::phase_table;
use super::node::Target;

#[derive(clap::Args, Debug)]
pub struct SaturateArgs {
    #[arg(long, default_value_t = 20)]
    pub rooms: usize,
    #[arg(long, default_value_t = 50)]
    pub members: usize,
    /// The p99 bound, in milliseconds.
    #[arg(long, default_value_t = 100.0)]
    pub p99_ms: f64,
    /// First rate tried, messages per second.
    #[arg(long, default_value_t = 500)]
    pub start_rate: u64,
    /// Seconds per phase.
    #[arg(long, default_value_t = 5)]
    pub phase_seconds: u64,
    /// Bisection steps after the bound was first broken.
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
}

#[derive(Debug, serde::Serialize)]
pub struct SaturateReport {
    pub rooms: usize,
    pub members: usize,
    pub p99_bound_ms: f64,
    pub best: Option<Phase>,
    pub phases: Vec<Phase>,
}

impl SaturateReport {
    pub fn table(&self) -> String {
        let best = self.best.as_ref().map_or("none under the bound".to_owned(), |b| {
            format!("{:.0} deliveries/s (p99 {:.2} ms)", b.deliveries_per_second, b.latency.p99)
        });
        format!(
            "scenario saturate: {} rooms x {} members, p99 bound {} ms; best: {best}\n{}",
            self.rooms,
            self.members,
            self.p99_bound_ms,
            phase_table(&self.phases)
        )
    }

    pub fn chart(&self) -> String {
        let mut points: Vec<(f64, f64)> =
            self.phases.iter().map(|p| (p.deliveries_per_second, p.latency.p99)).collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        crate::chart::line(
            &format!("saturate: p99 by delivery rate ({} rooms x {} members)", self.rooms, self.members),
            "deliveries/s",
            "p99 ms",
            &points,
        )
    }
}

fn good(p: &Phase, bound: f64) -> bool {
    // Under the bound, and keeping up (a server that falls behind shows it in the achieved rate).
    p.latency.p99 <= bound && p.messages_sent as f64 >= 0.9 * p.target_messages_per_second as f64 * p.seconds
}

pub async fn run(target: &Target, args: &SaturateArgs) -> anyhow::Result<SaturateReport> {
    let mut fleet = Fleet::assemble(target, args.rooms, args.members, 1).await?;
    let mut phases = Vec::new();
    let mut best: Option<Phase> = None;
    let (mut low, mut high) = (0u64, None::<u64>);
    let mut bisections = 0;
    let mut rate = args.start_rate.max(1);
    loop {
        eprintln!("phase at {rate} msg/s ...");
        let phase = fleet.phase(target, rate, args.phase_seconds).await?;
        let ok = good(&phase, args.p99_ms);
        if ok && best.as_ref().is_none_or(|b| phase.deliveries_per_second > b.deliveries_per_second) {
            best = Some(phase.clone());
        }
        phases.push(phase);
        if ok {
            low = rate;
        } else {
            high = Some(rate);
        }
        rate = match high {
            None => rate.saturating_mul(2),
            Some(h) => {
                let mid = (low + h) / 2;
                if bisections >= args.steps || mid <= low {
                    break;
                }
                bisections += 1;
                mid
            }
        };
        if rate > 10_000_000 {
            break;
        }
    }
    fleet.finish().await?;
    Ok(SaturateReport { rooms: args.rooms, members: args.members, p99_bound_ms: args.p99_ms, best, phases })
}
