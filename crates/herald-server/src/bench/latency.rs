//! Send-to-receive latency: what a fleet's readers record into and what a phase reports. Each delivery is
//! recorded under its route, by whether the receiver is connected to the sender's node or to another one, so
//! that on a cluster the cost of the hop between nodes shows beside the local path from one run (on one node
//! every delivery is same-node, and only the overall figures are reported).

use hdrhistogram::Histogram;

/// Microseconds from 1 µs to two minutes, three significant digits.
pub fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?)
}

/// Percentiles of a set of deliveries, in milliseconds. The JSON names are those the reports have always used.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Latency {
    #[serde(rename = "latency_ms_p50")]
    pub p50: f64,
    #[serde(rename = "latency_ms_p90")]
    pub p90: f64,
    #[serde(rename = "latency_ms_p99")]
    pub p99: f64,
    #[serde(rename = "latency_ms_p999")]
    pub p999: f64,
    #[serde(rename = "latency_ms_max")]
    pub max: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// The deliveries of one route and their latency.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct RouteLatency {
    pub deliveries: u64,
    #[serde(flatten)]
    pub latency: Latency,
}

impl RouteLatency {
    fn of(h: &Histogram<u64>) -> RouteLatency {
        RouteLatency { deliveries: h.len(), latency: Latency::of(h) }
    }
}

/// Latencies recorded apart by route. The overall figures are the two added together, so no delivery is
/// recorded twice.
pub struct ByRoute {
    same_node: Histogram<u64>,
    cross_node: Histogram<u64>,
}

impl ByRoute {
    pub fn new() -> anyhow::Result<ByRoute> {
        Ok(ByRoute { same_node: histogram()?, cross_node: histogram()? })
    }

    /// Records one delivery that took `micros` (at least 1, the histogram's floor).
    pub fn record(&mut self, same_node: bool, micros: u64) -> anyhow::Result<()> {
        let h = if same_node { &mut self.same_node } else { &mut self.cross_node };
        Ok(h.record(micros.max(1))?)
    }

    pub fn add(&mut self, other: &ByRoute) -> anyhow::Result<()> {
        self.same_node.add(&other.same_node)?;
        Ok(self.cross_node.add(&other.cross_node)?)
    }

    pub fn reset(&mut self) {
        self.same_node.reset();
        self.cross_node.reset();
    }

    /// Every delivery, whichever its route.
    pub fn overall(&self) -> anyhow::Result<Latency> {
        let mut all = self.same_node.clone();
        all.add(&self.cross_node)?;
        Ok(Latency::of(&all))
    }

    pub fn same_node(&self) -> RouteLatency {
        RouteLatency::of(&self.same_node)
    }

    pub fn cross_node(&self) -> RouteLatency {
        RouteLatency::of(&self.cross_node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_kept_apart_and_added_up_overall() -> anyhow::Result<()> {
        let mut a = ByRoute::new()?;
        let mut b = ByRoute::new()?;
        for _ in 0..99 {
            a.record(true, 1_000)?;
        }
        b.record(false, 50_000)?;
        b.record(false, 0)?;
        a.add(&b)?;
        let (same, cross) = (a.same_node(), a.cross_node());
        assert_eq!((same.deliveries, cross.deliveries), (99, 2));
        assert!((same.latency.max - 1.0).abs() < 0.01, "{same:?}");
        assert!((cross.latency.max - 50.0).abs() < 0.1, "{cross:?}");
        assert!(cross.latency.p50 <= 0.001, "a 0 µs delivery counts as 1 µs: {cross:?}");
        let overall = a.overall()?;
        assert!((overall.p50 - 1.0).abs() < 0.01 && (overall.max - 50.0).abs() < 0.1, "{overall:?}");
        a.reset();
        assert_eq!(a.same_node().deliveries + a.cross_node().deliveries, 0);
        Ok(())
    }
}
