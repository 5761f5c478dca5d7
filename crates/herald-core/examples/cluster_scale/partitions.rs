//! The log's partitions on nodes: how evenly the ring spreads them, and how many change owner when one node
//! joins, leaves or starts draining — next to `% n` and Kafka's range assignor.

use crate::assignors;
use crate::membership::Membership;
use crate::table::{Table, percent, ratio};

/// Partitions per node among the `n` nodes of the cluster (nodes owning none count as 0).
struct Spread {
    min: usize,
    max: usize,
    average: f64,
    idle: usize,
}

fn spread(owners: &[u32], n: usize) -> Spread {
    let mut per_node = vec![0usize; n];
    for &owner in owners {
        if let Some(count) = per_node.get_mut(owner as usize) {
            *count += 1;
        }
    }
    Spread {
        min: per_node.iter().copied().min().unwrap_or(0),
        max: per_node.iter().copied().max().unwrap_or(0),
        average: owners.len() as f64 / n as f64,
        idle: per_node.iter().filter(|&&c| c == 0).count(),
    }
}

fn changed(before: &[u32], after: &[u32]) -> f64 {
    let moved = before.iter().zip(after).filter(|(b, a)| b != a).count();
    moved as f64 / before.len() as f64
}

/// The rows of both partition tables for one cluster size, every partition count.
pub struct PartitionRows {
    pub balance: Vec<Vec<String>>,
    pub moves: Vec<Vec<String>>,
}

pub fn measure(membership: &Membership, partition_counts: &[u32]) -> PartitionRows {
    let n = membership.n;
    let mut rows = PartitionRows { balance: Vec::new(), moves: Vec::new() };
    let members: Vec<u32> = (0..n as u32).collect();
    let staying: Vec<u32> = members.iter().copied().filter(|&m| m as usize != membership.changed).collect();
    let joining: Vec<u32> = (0..=n as u32).collect();
    for &p in partition_counts {
        let base = membership.partition_owners(&membership.base, p);
        let joined = membership.partition_owners(&membership.joined, p);
        let left = membership.partition_owners(&membership.left, p);
        let draining = membership.partition_owners(&membership.draining, p);

        let ring = spread(&base, n);
        let range_base = assignors::range(&members, p);
        let range = spread(&range_base, n);
        rows.balance.push(vec![
            p.to_string(),
            n.to_string(),
            ring.min.to_string(),
            format!("{:.2}", ring.average),
            ring.max.to_string(),
            ratio(ring.max as f64 / ring.average),
            format!("{} ({})", ring.idle, percent(ring.idle as f64 / n as f64)),
            ratio(range.max as f64 / range.average),
            range.idle.to_string(),
        ]);

        // `% n` renumbers the nodes on every change: the leaver's place is taken by the others shifting down.
        let modulo = |nodes: usize| -> Vec<u32> { (0..p).map(|q| assignors::modulo(u64::from(q), nodes)).collect() };
        let (modulo_base, modulo_joined, modulo_left) = (modulo(n), modulo(n + 1), modulo(n - 1));
        rows.moves.push(vec![
            p.to_string(),
            n.to_string(),
            percent(changed(&base, &joined)),
            percent(changed(&modulo_base, &modulo_joined)),
            percent(changed(&range_base, &assignors::range(&joining, p))),
            percent(1.0 / (n + 1) as f64),
            percent(changed(&base, &left)),
            percent(changed(&base, &draining)),
            percent(changed(&modulo_base, &modulo_left)),
            percent(changed(&range_base, &assignors::range(&staying, p))),
            percent(1.0 / n as f64),
        ]);
    }
    rows
}

pub fn print(rows: &[PartitionRows]) {
    println!("### Partitions per node (ring over `owner_of_u32(partition)`, as the leases log places them)\n");
    let mut balance = Table::new(&[
        "partitions",
        "nodes",
        "min",
        "avg",
        "max",
        "max/avg",
        "nodes owning none",
        "Kafka range max/avg",
        "range: none",
    ]);
    let mut moves = Table::new(&[
        "partitions",
        "nodes",
        "join: ring",
        "join: % n",
        "join: range",
        "ideal 1/(N+1)",
        "leave: ring",
        "drain: ring",
        "leave: % n",
        "leave: range",
        "ideal 1/N",
    ]);
    for r in rows {
        r.balance.iter().for_each(|row| balance.row(row.clone()));
        r.moves.iter().for_each(|row| moves.row(row.clone()));
    }
    let by_partitions = |table: &mut Table| table.sort_by_first_two_numbers();
    by_partitions(&mut balance);
    by_partitions(&mut moves);
    balance.print();
    println!(
        "### Partitions that change owner when one node joins (node-N), leaves or drains (the node with the \
         largest share)\n"
    );
    moves.print();
}
