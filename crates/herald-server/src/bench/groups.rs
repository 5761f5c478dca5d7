//! `groups`: R rooms of M members, everyone connected over WebSockets, one sender per room at a combined
//! target rate: deliveries per second and send-to-receive latency, every delivery checked.

use super::fleet::{Fleet, Phase, Traffic};
use super::node::Target;

#[derive(clap::Args, Debug)]
pub struct GroupsArgs {
    #[command(flatten)]
    pub traffic: Traffic,
    /// Seconds to send for.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
}

#[derive(Debug, serde::Serialize)]
pub struct GroupsReport {
    pub rooms: usize,
    pub members: usize,
    #[serde(flatten)]
    pub phase: Phase,
}

impl GroupsReport {
    pub fn table(&self) -> String {
        format!(
            "scenario groups: {} rooms x {} members\n{}",
            self.rooms,
            self.members,
            phase_table(std::slice::from_ref(&self.phase))
        )
    }

    pub fn chart(&self) -> String {
        latency_chart(
            &format!(
                "groups: {} rooms x {} members, {} msg/s",
                self.rooms, self.members, self.phase.target_messages_per_second
            ),
            &self.phase,
        )
    }
}

pub async fn run(target: &Target, args: &GroupsArgs) -> anyhow::Result<GroupsReport> {
    let Traffic { rooms, members, rate } = args.traffic;
    let mut fleet = Fleet::assemble(target, rooms, members, 1).await?;
    eprintln!("sending {rate} msg/s for {} s ...", args.duration);
    let phase = fleet.phase(target, rate, args.duration).await?;
    fleet.finish().await?;
    Ok(GroupsReport { rooms, members, phase })
}

/// One row per phase; on a cluster, then a table of the same phases by route.
pub fn phase_table(phases: &[Phase]) -> String {
    let mut out = String::from(
        "| msg/s target | sent | acked/s | deliveries | deliveries/s | p50 ms | p99 ms | p99.9 ms | max ms | server CPU % |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for p in phases {
        out.push_str(&format!(
            "| {} | {} | {:.0} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} |\n",
            p.target_messages_per_second,
            p.messages_sent,
            p.acked_per_second,
            p.deliveries,
            p.deliveries_per_second,
            p.latency.p50,
            p.latency.p99,
            p.latency.p999,
            p.latency.max,
            p.server_cpu_percent.map_or("n/a".into(), |c| format!("{c:.0}"))
        ));
    }
    out.push_str(&route_table(phases));
    for p in phases {
        out.push_str(&format!(
            "\n{} msg/s: {}",
            p.target_messages_per_second,
            super::per_second::summary(&p.per_second, PER_SECOND_BOUND_MS)
        ));
    }
    out
}

/// The per-second p99 the tail-latency target holds every second of a run to.
const PER_SECOND_BOUND_MS: f64 = 20.0;

/// Same-node and cross-node deliveries of each phase, one row each; empty when the fleet was on one node.
fn route_table(phases: &[Phase]) -> String {
    let mut rows = String::new();
    for p in phases {
        for (route, r) in p.routes() {
            let l = &r.latency;
            rows.push_str(&format!(
                "| {} | {route} node | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
                p.target_messages_per_second, r.deliveries, l.p50, l.p90, l.p99, l.p999, l.max
            ));
        }
    }
    if rows.is_empty() {
        return rows;
    }
    format!(
        "\n| msg/s target | route | deliveries | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |\n\
         |---|---|---|---|---|---|---|---|\n{rows}"
    )
}

/// A phase over time: p99, p50 and deliveries of each second.
pub fn latency_chart(title: &str, p: &Phase) -> String {
    // Over time rather than one figure per phase: a stall shows as a spike in the second it happened, which
    // a run's p99 hides (the table has the run's percentiles).
    let series = |f: fn(&super::per_second::Second) -> f64| -> Vec<(f64, f64)> {
        p.per_second.iter().map(|s| (s.second as f64, f(s))).collect()
    };
    crate::chart::stack(
        title,
        "second of the run",
        &[
            ("p99 ms, each second", series(|s| s.p99_ms)),
            ("p50 ms, each second", series(|s| s.p50_ms)),
            ("deliveries, each second", series(|s| s.deliveries as f64)),
        ],
    )
}
