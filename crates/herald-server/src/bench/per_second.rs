//! Latency second by second. A run's p99 hides a one-second stall among ten quiet seconds; recorded under the
//! second it arrived in as well, each delivery shows when the tail happened, so a spike can be matched to what the
//! server was doing then (a checkpoint, a big fan-out).

use super::lock;
use hdrhistogram::Histogram;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Seconds of a phase, counted from when it began on the fleet's clock.
pub struct PerSecond {
    origin_us: AtomicU64,
    seconds: Mutex<Vec<Histogram<u64>>>,
}

/// One second of a phase.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Second {
    pub second: usize,
    pub deliveries: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl PerSecond {
    pub fn new() -> Self {
        Self { origin_us: AtomicU64::new(0), seconds: Mutex::new(Vec::new()) }
    }

    /// Starts counting seconds from `now_us` (on the fleet's clock), forgetting the previous phase's.
    pub fn restart(&self, now_us: u64) {
        let mut seconds = lock(&self.seconds);
        seconds.clear();
        self.origin_us.store(now_us, Ordering::Relaxed);
    }

    /// Records a delivery received at `now_us` that took `latency_us`.
    pub fn record(&self, now_us: u64, latency_us: u64) -> anyhow::Result<()> {
        let second = (now_us.saturating_sub(self.origin_us.load(Ordering::Relaxed)) / 1_000_000) as usize;
        let mut seconds = lock(&self.seconds);
        while seconds.len() <= second {
            // Two significant digits: a tenth of the memory of the run's own histograms, plenty for a p99.
            seconds.push(Histogram::new_with_bounds(1, 120_000_000, 2)?);
        }
        seconds[second].record(latency_us.max(1))?;
        Ok(())
    }

    /// Every second that received something, in order.
    pub fn report(&self) -> Vec<Second> {
        let ms = |us: u64| us as f64 / 1000.0;
        lock(&self.seconds)
            .iter()
            .enumerate()
            .filter(|(_, h)| !h.is_empty())
            .map(|(second, h)| Second {
                second,
                deliveries: h.len(),
                p50_ms: ms(h.value_at_quantile(0.5)),
                p99_ms: ms(h.value_at_quantile(0.99)),
                max_ms: ms(h.max()),
            })
            .collect()
    }
}

/// One line on the seconds of a phase: the median and worst per-second p99, and how many seconds had a p99 above
/// `bound_ms`.
pub fn summary(seconds: &[Second], bound_ms: f64) -> String {
    if seconds.is_empty() {
        return "per second: no deliveries".into();
    }
    let mut p99s: Vec<f64> = seconds.iter().map(|s| s.p99_ms).collect();
    p99s.sort_by(f64::total_cmp);
    let worst = seconds.iter().max_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms)).expect("not empty");
    let over = seconds.iter().filter(|s| s.p99_ms > bound_ms).count();
    format!(
        "p99 per second: median {:.2} ms, worst {:.2} ms (second {}); seconds above {bound_ms} ms: {over} of {}",
        p99s[p99s.len() / 2],
        worst.p99_ms,
        worst.second,
        seconds.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_land_in_the_second_they_arrived_and_a_stall_shows() {
        let per_second = PerSecond::new();
        per_second.restart(5_000_000);
        for i in 0..100 {
            per_second.record(5_000_000 + i * 10_000, 1_000).expect("record"); // second 0: 1 ms each
        }
        per_second.record(7_500_000, 250_000).expect("record"); // second 2: one 250 ms stall
        let seconds = per_second.report();
        assert_eq!(seconds.iter().map(|s| s.second).collect::<Vec<_>>(), [0, 2], "an empty second is left out");
        assert_eq!(seconds[0].deliveries, 100);
        assert!((seconds[0].p99_ms - 1.0).abs() < 0.05, "{:?}", seconds[0]);
        assert!(seconds[1].p99_ms > 240.0, "{:?}", seconds[1]);
        let line = summary(&seconds, 20.0);
        assert!(line.contains("(second 2)") && line.contains("1 of 2"), "{line}");
        per_second.restart(9_000_000);
        assert!(per_second.report().is_empty(), "a new phase starts empty");
    }
}
