//! `herald autoscale simulate`: the scaling brief's autoscaling policy as code, replayed over a load trace.
//!
//! The policy (the same as deploy/k8s/hpa.yaml): utilisation is connections over the servers' total
//! connection capacity; above 80 % the fleet scales out, below 40 % it scales in, each time to the count that
//! puts utilisation at the target (60 %, the middle of the band, so the count just chosen triggers neither
//! rule); no scaling event within the cooldown (5 minutes) of the previous one; never fewer than 50 servers
//! nor more than 1,000. New servers are taken to be ready at once: the simulation shows the policy's
//! decisions, not a cloud's boot times.

use std::fmt::Write;

/// The policy's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Connections one server holds at 100 % utilisation.
    pub capacity_per_server: u64,
    /// Scale out when utilisation is above this (0.8).
    pub scale_out_above: f64,
    /// Scale in when utilisation is below this (0.4).
    pub scale_in_below: f64,
    /// The utilisation a scaling event aims for (0.6).
    pub target: f64,
    /// Seconds after a scaling event during which no other happens (300).
    pub cooldown_secs: u64,
    pub min_servers: u64,
    pub max_servers: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            capacity_per_server: 5_000,
            scale_out_above: 0.8,
            scale_in_below: 0.4,
            target: 0.6,
            cooldown_secs: 300,
            min_servers: 50,
            max_servers: 1_000,
        }
    }
}

impl Policy {
    /// A policy that can decide anything: thresholds ordered, target inside the band, bounds ordered.
    pub fn validate(&self) -> Result<(), String> {
        if self.capacity_per_server == 0 {
            return Err("the capacity per server must be at least 1".into());
        }
        if !(0.0 < self.scale_in_below && self.scale_in_below < self.target && self.target < self.scale_out_above) {
            return Err(format!(
                "need 0 < scale-in ({}) < target ({}) < scale-out ({})",
                self.scale_in_below, self.target, self.scale_out_above
            ));
        }
        if self.min_servers == 0 || self.min_servers > self.max_servers {
            return Err(format!("need 1 <= min ({}) <= max ({}) servers", self.min_servers, self.max_servers));
        }
        Ok(())
    }

    /// The servers that put `connections` at the target utilisation, within the bounds.
    fn servers_for(&self, connections: u64) -> u64 {
        let at_target = self.capacity_per_server as f64 * self.target;
        ((connections as f64 / at_target).ceil() as u64).clamp(self.min_servers, self.max_servers)
    }
}

/// One point of a load trace: seconds since the trace began, and the connections open then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    pub time_secs: u64,
    pub connections: u64,
}

/// What the policy did at a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Hold,
    ScaleOut,
    ScaleIn,
    /// A rule would have fired, but the cooldown of the previous event was still running.
    CoolingDown,
}

/// The fleet at one point of the trace, after the policy's decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub load: Load,
    pub servers: u64,
    /// Connections over capacity after the decision (above 1.0: connections refused or nodes overloaded).
    pub utilisation: f64,
    pub action: Action,
}

/// Replays `trace` (time ascending) from `initial` servers (clamped to the bounds).
pub fn simulate(policy: &Policy, initial: u64, trace: &[Load]) -> Vec<Step> {
    let mut servers = initial.clamp(policy.min_servers, policy.max_servers);
    let mut last_event: Option<u64> = None;
    let utilisation =
        |connections: u64, servers: u64| connections as f64 / (servers * policy.capacity_per_server) as f64;
    trace
        .iter()
        .map(|&load| {
            let before = utilisation(load.connections, servers);
            let wanted = policy.servers_for(load.connections);
            let fires = (before > policy.scale_out_above && wanted > servers)
                || (before < policy.scale_in_below && wanted < servers);
            let cooling = last_event.is_some_and(|at| load.time_secs < at + policy.cooldown_secs);
            let action = match (fires, cooling) {
                (false, _) => Action::Hold,
                (true, true) => Action::CoolingDown,
                (true, false) => {
                    let action = if wanted > servers { Action::ScaleOut } else { Action::ScaleIn };
                    servers = wanted;
                    last_event = Some(load.time_secs);
                    action
                }
            };
            Step { load, servers, utilisation: utilisation(load.connections, servers), action }
        })
        .collect()
}

/// Reads a trace: `time,connections` lines (seconds since the start, open connections), an optional header
/// line, `#` comments. Times must not go backwards.
pub fn parse_trace(csv: &str) -> Result<Vec<Load>, String> {
    let mut trace: Vec<Load> = Vec::new();
    for (number, line) in csv.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [time, connections] = fields[..] else {
            return Err(format!("line {number}: expected time,connections, got {line:?}"));
        };
        let (Ok(time_secs), Ok(connections)) = (time.parse::<u64>(), connections.parse::<u64>()) else {
            if trace.is_empty() && time.parse::<f64>().is_err() {
                continue; // the header
            }
            return Err(format!("line {number}: time and connections must be whole numbers, got {line:?}"));
        };
        if trace.last().is_some_and(|last| time_secs < last.time_secs) {
            return Err(format!("line {number}: time {time_secs} goes backwards"));
        }
        trace.push(Load { time_secs, connections });
    }
    if trace.is_empty() {
        return Err("the trace has no points".into());
    }
    Ok(trace)
}

/// The steps as a table, one line per point, then a summary.
pub fn report(policy: &Policy, steps: &[Step]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:>8} {:>12} {:>8} {:>12}  action", "time_s", "connections", "servers", "utilisation");
    for s in steps {
        let action = match s.action {
            Action::Hold => "",
            Action::ScaleOut => "scale out",
            Action::ScaleIn => "scale in",
            Action::CoolingDown => "(cooldown)",
        };
        let _ = writeln!(
            out,
            "{:>8} {:>12} {:>8} {:>11.1}%  {action}",
            s.load.time_secs,
            s.load.connections,
            s.servers,
            s.utilisation * 100.0
        );
    }
    let events = steps.iter().filter(|s| matches!(s.action, Action::ScaleOut | Action::ScaleIn)).count();
    let peak = steps.iter().map(|s| s.servers).max().unwrap_or(0);
    let over = steps.iter().filter(|s| s.utilisation > 1.0).count();
    let _ = writeln!(
        out,
        "\n{events} scaling event(s); at most {peak} servers; {over} point(s) over capacity; capacity {} connections \
         per server, out above {:.0}%, in below {:.0}%, to {:.0}%, cooldown {} s, {}-{} servers",
        policy.capacity_per_server,
        policy.scale_out_above * 100.0,
        policy.scale_in_below * 100.0,
        policy.target * 100.0,
        policy.cooldown_secs,
        policy.min_servers,
        policy.max_servers
    );
    out
}

/// Servers over time, beside the servers the load needs at 100 % (connections over capacity).
pub fn chart(policy: &Policy, steps: &[Step]) -> String {
    let minutes = |s: &Step| s.load.time_secs as f64 / 60.0;
    let servers: Vec<(f64, f64)> = steps.iter().map(|s| (minutes(s), s.servers as f64)).collect();
    let needed: Vec<(f64, f64)> =
        steps.iter().map(|s| (minutes(s), s.load.connections as f64 / policy.capacity_per_server as f64)).collect();
    crate::chart::lines(
        "Autoscaling: servers over time",
        "minutes",
        "servers",
        &[("servers", servers), ("needed at 100 %", needed)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Capacity 100 per server, 1-10 servers, 60 s cooldown: figures small enough to check by hand.
    fn small() -> Policy {
        Policy { capacity_per_server: 100, cooldown_secs: 60, min_servers: 1, max_servers: 10, ..Policy::default() }
    }

    fn trace(points: &[(u64, u64)]) -> Vec<Load> {
        points.iter().map(|&(time_secs, connections)| Load { time_secs, connections }).collect()
    }

    fn servers(steps: &[Step]) -> Vec<u64> {
        steps.iter().map(|s| s.servers).collect()
    }

    #[test]
    fn load_inside_the_band_changes_nothing() {
        // 2 servers = 200 connections of capacity; 80..160 connections is 40 %..80 %, bounds included.
        let steps = simulate(&small(), 2, &trace(&[(0, 120), (30, 80), (60, 160), (90, 100)]));
        assert_eq!(servers(&steps), [2, 2, 2, 2]);
        assert!(steps.iter().all(|s| s.action == Action::Hold));
    }

    #[test]
    fn above_80_percent_scales_out_to_60_percent() {
        // 161/200 = 80.5 % > 80 %: ceil(161 / 60) = 3 servers, 161/300 = 53.7 %.
        let steps = simulate(&small(), 2, &trace(&[(0, 161)]));
        assert_eq!((steps[0].servers, steps[0].action), (3, Action::ScaleOut));
        assert!((steps[0].utilisation - 161.0 / 300.0).abs() < 1e-9);
    }

    #[test]
    fn below_40_percent_scales_in_to_60_percent() {
        // 10 servers, 390 connections = 39 %: ceil(390 / 60) = 7 servers (55.7 %).
        let steps = simulate(&small(), 10, &trace(&[(0, 390)]));
        assert_eq!((steps[0].servers, steps[0].action), (7, Action::ScaleIn));
    }

    #[test]
    fn the_cooldown_holds_back_the_next_event_until_it_has_run() {
        // Out at 0 s (161 -> 3 servers); at 30 s 250/300 = 83 % wants 5 but waits; at 59 s still waiting; at 60 s
        // the cooldown is over: ceil(250 / 60) = 5.
        let steps = simulate(&small(), 2, &trace(&[(0, 161), (30, 250), (59, 250), (60, 250)]));
        assert_eq!(servers(&steps), [3, 3, 3, 5]);
        let actions: Vec<Action> = steps.iter().map(|s| s.action).collect();
        assert_eq!(actions, [Action::ScaleOut, Action::CoolingDown, Action::CoolingDown, Action::ScaleOut]);
        assert!(steps[1].utilisation > 0.8, "over the threshold while cooling down");
    }

    #[test]
    fn the_bounds_hold_whatever_the_load() {
        // 5,000 connections want 84 servers: capped at 10 (500 % utilisation). Nothing wants 0: floor at 1.
        let steps = simulate(&small(), 1, &trace(&[(0, 5_000), (60, 0)]));
        assert_eq!(servers(&steps), [10, 1]);
        assert!((steps[0].utilisation - 5.0).abs() < 1e-9);
        // Already at the cap: over 80 % but nothing to add, so no event (and no cooldown started).
        let steps = simulate(&small(), 10, &trace(&[(0, 900), (10, 100)]));
        assert_eq!(servers(&steps), [10, 2]);
        assert_eq!(steps[0].action, Action::Hold);
        // Initial counts outside the bounds are brought inside.
        assert_eq!(simulate(&small(), 50, &trace(&[(0, 500)]))[0].servers, 10);
    }

    #[test]
    fn a_daily_peak_with_the_briefs_defaults() {
        // 50 servers x 5,000 = 250,000 capacity. 150,000 (60 %): hold. 210,000 (84 %): out to
        // ceil(210,000 / 3,000) = 70. 260,000 two minutes later: 74 % of 350,000, hold. 300,000 at 6 min:
        // 85.7 %, out to 100 (the cooldown of the event at 1 min ends at 6 min exactly). 90,000 at 12 min: 18 %, in to 50 (30 = ceil(90,000 / 3,000) is under the minimum).
        let p = Policy::default();
        let steps =
            simulate(&p, 50, &trace(&[(0, 150_000), (60, 210_000), (180, 260_000), (360, 300_000), (720, 90_000)]));
        assert_eq!(servers(&steps), [50, 70, 70, 100, 50]);
    }

    #[test]
    fn traces_are_read_with_or_without_a_header() {
        let t = parse_trace("time_s,connections\n0, 10\n# a comment\n\n60,20\n").expect("trace");
        assert_eq!(t, trace(&[(0, 10), (60, 20)]));
        assert_eq!(parse_trace("0,10\n30,5\n").expect("no header"), trace(&[(0, 10), (30, 5)]));
        assert!(parse_trace("0,10\n-5,1\n").is_err());
        assert!(parse_trace("60,10\n30,1\n").expect_err("backwards").contains("backwards"));
        assert!(parse_trace("0,10,3\n").is_err());
        assert!(parse_trace("time,connections\n").is_err());
    }

    #[test]
    fn a_policy_with_crossed_thresholds_is_refused() {
        assert!(Policy::default().validate().is_ok());
        assert!(Policy { target: 0.9, ..Policy::default() }.validate().is_err());
        assert!(Policy { min_servers: 2_000, ..Policy::default() }.validate().is_err());
        assert!(Policy { capacity_per_server: 0, ..Policy::default() }.validate().is_err());
    }

    #[test]
    fn the_report_and_the_chart_show_the_run() {
        let p = small();
        // Out to 3 at 0 s; at 30 s 100/300 = 33 % wants 2 servers, but the cooldown runs until 60 s.
        let steps = simulate(&p, 2, &trace(&[(0, 161), (30, 100)]));
        let text = report(&p, &steps);
        assert!(text.contains("scale out") && text.contains("(cooldown)"), "{text}");
        assert!(text.contains("1 scaling event(s); at most 3 servers; 0 point(s) over capacity"), "{text}");
        let svg = chart(&p, &steps);
        assert!(svg.starts_with("<svg") && svg.matches("<polyline").count() == 2);
    }
}
