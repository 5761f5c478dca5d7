//! The throughput model. A model, not a measurement: every node sequences at most `node_capacity` sends a
//! second and every partition at most `partition_capacity` (its owner is serial), the offered load keeps its
//! mix across conversations (Zipf), and nothing else is shared. The largest load a cluster carries in full is
//! where its hottest node or its hottest partition saturates; past that, the other nodes idle while the hot
//! ones refuse.

use herald_core::log::partition_of;
use herald_proto::ConversationId;

use crate::assignors;
use crate::membership::Membership;
use crate::population::zipf_shares;
use crate::table::{Table, percent, rate, ratio};

/// The load on each partition for one partition count and one skew.
pub struct Load {
    pub partitions: u32,
    pub exponent: f64,
    /// Each partition's share of all sends.
    shares: Vec<f64>,
    /// The busiest conversation's share of all sends: no partition count and no cluster size goes below it.
    hottest_conversation: f64,
}

/// The partition loads of every pair of partition count and exponent, through the real `partition_of`.
pub fn loads(conversations: &[ConversationId], partition_counts: &[u32], exponents: &[f64]) -> Vec<Load> {
    let placed: Vec<Vec<u32>> =
        partition_counts.iter().map(|&p| conversations.iter().map(|&c| partition_of(c, p)).collect()).collect();
    let mut loads = Vec::new();
    for &exponent in exponents {
        let conversation_shares = zipf_shares(conversations.len(), exponent);
        let hottest_conversation = conversation_shares.iter().copied().fold(0.0, f64::max);
        for (&partitions, partition_of_each) in partition_counts.iter().zip(&placed) {
            let mut shares = vec![0.0; partitions as usize];
            for (&partition, &share) in partition_of_each.iter().zip(&conversation_shares) {
                shares[partition as usize] += share;
            }
            loads.push(Load { partitions, exponent, shares, hottest_conversation });
        }
    }
    loads
}

/// What one cluster size does with one load.
pub struct Outcome {
    pub n: usize,
    pub partitions: u32,
    pub exponent: f64,
    owning_nodes: usize,
    hottest_partition: f64,
    hottest_conversation: f64,
    hottest_node: f64,
    /// The largest offered load carried in full, in sends per second.
    carried: f64,
    /// Whether a node (rather than a single partition) saturates first.
    node_bound: bool,
    /// Of an offered load of N × node capacity, the fraction carried.
    served_at_nominal: f64,
    /// `carried` with Kafka's range assignor placing the partitions instead.
    carried_by_range: f64,
}

struct Capacities {
    node: f64,
    partition: f64,
}

/// The largest load carried in full, whether a node binds first, and the fraction of `N × node` carried.
fn carry(load: &Load, owners: &[u32], n: usize, capacity: &Capacities) -> (f64, bool, f64, Vec<f64>) {
    let mut node_shares = vec![0.0; n];
    for (&owner, &share) in owners.iter().zip(&load.shares) {
        if let Some(s) = node_shares.get_mut(owner as usize) {
            *s += share;
        }
    }
    let hottest_node = node_shares.iter().copied().fold(0.0, f64::max);
    let hottest_partition = load.shares.iter().copied().fold(0.0, f64::max);
    let (by_node, by_partition) = (capacity.node / hottest_node, capacity.partition / hottest_partition);

    let offered = n as f64 * capacity.node;
    let mut served = vec![0.0; n];
    for (&owner, &share) in owners.iter().zip(&load.shares) {
        if let Some(s) = served.get_mut(owner as usize) {
            *s += (share * offered).min(capacity.partition);
        }
    }
    let carried_at_nominal: f64 = served.iter().map(|s| s.min(capacity.node)).sum();
    (by_node.min(by_partition), by_node <= by_partition, carried_at_nominal / offered, node_shares)
}

pub fn measure(membership: &Membership, loads: &[Load], node_capacity: f64, partition_capacity: f64) -> Vec<Outcome> {
    let n = membership.n;
    let capacity = Capacities { node: node_capacity, partition: partition_capacity };
    let members: Vec<u32> = (0..n as u32).collect();
    loads
        .iter()
        .map(|load| {
            let owners = membership.partition_owners(&membership.base, load.partitions);
            let (carried, node_bound, served_at_nominal, node_shares) = carry(load, &owners, n, &capacity);
            let by_range = assignors::range(&members, load.partitions);
            let (carried_by_range, ..) = carry(load, &by_range, n, &capacity);
            Outcome {
                n,
                partitions: load.partitions,
                exponent: load.exponent,
                owning_nodes: node_shares.iter().filter(|&&s| s > 0.0).count(),
                hottest_partition: load.shares.iter().copied().fold(0.0, f64::max),
                hottest_conversation: load.hottest_conversation,
                hottest_node: node_shares.iter().copied().fold(0.0, f64::max),
                carried,
                node_bound,
                served_at_nominal,
                carried_by_range,
            }
        })
        .collect()
}

pub fn print(outcomes: &[Outcome], chosen: u32, exponents: &[f64], node_capacity: f64, partition_capacity: f64) {
    let main = exponents.first().copied().unwrap_or(1.0);
    let is = |a: f64, b: f64| (a - b).abs() < 1e-12;
    println!(
        "### Throughput model: {chosen} partitions, Zipf exponent {main} over the conversations, {} sends/s per \
         node, {} per partition\n",
        rate(node_capacity),
        rate(partition_capacity)
    );
    let mut main_table = Table::new(&[
        "nodes",
        "nodes owning partitions",
        "hottest conversation",
        "hottest partition",
        "hottest node",
        "hottest node / fair share",
        "carried in full (sends/s)",
        "÷ (N × node)",
        "saturates first",
        "carried of N × node offered",
        "Kafka range: carried in full",
        "ceiling: hottest conversation",
    ]);
    for o in outcomes.iter().filter(|o| o.partitions == chosen && is(o.exponent, main)) {
        main_table.row(vec![
            o.n.to_string(),
            o.owning_nodes.to_string(),
            percent(o.hottest_conversation),
            percent(o.hottest_partition),
            percent(o.hottest_node),
            ratio(o.hottest_node * o.n as f64),
            rate(o.carried),
            percent(o.carried / (o.n as f64 * node_capacity)),
            if o.node_bound { "a node" } else { "a partition" }.to_owned(),
            percent(o.served_at_nominal),
            rate(o.carried_by_range),
            rate(partition_capacity / o.hottest_conversation),
        ]);
    }
    main_table.print();

    let mut nodes: Vec<usize> = outcomes.iter().map(|o| o.n).collect();
    nodes.dedup();
    let mut partition_counts: Vec<u32> = outcomes.iter().map(|o| o.partitions).collect();
    partition_counts.sort_unstable();
    partition_counts.dedup();

    let carried_in_nodes = |filter: &dyn Fn(&Outcome) -> bool, by_range: bool| -> Vec<String> {
        nodes
            .iter()
            .map(|&n| {
                outcomes.iter().find(|o| o.n == n && filter(o)).map_or_else(String::new, |o| {
                    let carried = if by_range { o.carried_by_range } else { o.carried };
                    format!("{:.1}", carried / node_capacity)
                })
            })
            .collect()
    };
    let header = |first: &str| -> Vec<String> {
        std::iter::once(first.to_owned()).chain(nodes.iter().map(|n| format!("N = {n}"))).collect()
    };

    // The main skew, and an even load (exponent 0) when it was asked for: with no hot conversation, what is
    // left is the placement of the partitions themselves.
    let mut matrices = vec![main];
    if !is(main, 0.0) && exponents.iter().any(|&e| is(e, 0.0)) {
        matrices.push(0.0);
    }
    for exponent in matrices {
        println!(
            "### Load carried in full, in nodes' worth (÷ {} sends/s), by partition count (Zipf {exponent})\n",
            rate(node_capacity)
        );
        let header_cells = header("partitions (ring unless said)");
        let mut by_partitions = Table::new(&header_cells.iter().map(String::as_str).collect::<Vec<_>>());
        for by_range in [false, true] {
            for &p in &partition_counts {
                let mut row = vec![if by_range { format!("{p}, Kafka range") } else { p.to_string() }];
                row.extend(carried_in_nodes(&|o: &Outcome| o.partitions == p && is(o.exponent, exponent), by_range));
                by_partitions.row(row);
            }
        }
        by_partitions.print();
    }

    println!("### Load carried in full, in nodes' worth, by skew ({chosen} partitions)\n");
    let header_cells = header("Zipf exponent (hottest conversation)");
    let mut by_skew = Table::new(&header_cells.iter().map(String::as_str).collect::<Vec<_>>());
    let mut sorted = exponents.to_vec();
    sorted.sort_by(f64::total_cmp);
    for &exponent in &sorted {
        let hottest = outcomes.iter().find(|o| is(o.exponent, exponent)).map_or(0.0, |o| o.hottest_conversation);
        let mut row = vec![format!("{exponent} ({})", percent(hottest))];
        row.extend(carried_in_nodes(&|o: &Outcome| o.partitions == chosen && is(o.exponent, exponent), false));
        by_skew.row(row);
    }
    by_skew.print();
}
