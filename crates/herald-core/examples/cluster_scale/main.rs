//! How the consistent-hash ring and the log's partition count behave from 3 to 1,000 nodes: partition and
//! user balance, what one node joining, leaving or draining moves, and a throughput model fed with the
//! measured single-node figures (BENCHMARKS.md). It places everything with Herald's own `Ring` and
//! `partition_of`, over synthetic ids from a fixed seed, so every run prints the same figures.
//!
//! ```text
//! cargo run --release -p herald-core --example cluster_scale
//! cargo run --release -p herald-core --example cluster_scale -- --node-capacity 3200 --zipf 1.0,0.8
//! ```
//!
//! The tables are Markdown; docs/cluster.md "Scaling from 3 to 1,000 nodes: a simulation" holds a run.

mod assignors;
mod membership;
mod params;
mod partitions;
mod population;
mod table;
mod throughput;
mod users;

use std::time::Instant;

use herald_core::ring::VNODES_PER_NODE;

use membership::Membership;
use params::Params;

fn main() {
    let params = match Params::from_env_and_args(std::env::args().skip(1)) {
        Ok(params) => params,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    println!(
        "cluster_scale: nodes {:?}, partitions {:?} (chosen {}), {} users, {} conversations, Zipf {:?}, \
         {} sends/s per node, {} per partition, seed {}, {VNODES_PER_NODE} points per node\n",
        params.nodes,
        params.partitions,
        params.chosen,
        table::count(params.users),
        table::count(params.conversations),
        params.zipf,
        table::rate(params.node_capacity),
        table::rate(params.partition_capacity()),
        params.seed,
    );

    let phase = Instant::now();
    let users = users::UserKeys::new(&population::users(params.seed, params.users));
    let conversations = population::conversations(params.seed, params.conversations);
    let loads = throughput::loads(&conversations, &params.partitions, &params.zipf);
    drop(conversations);
    let mut timings = vec![format!("ids and partition loads {:.2?}", phase.elapsed())];

    let (mut partition_rows, mut user_rows, mut outcomes) = (Vec::new(), Vec::new(), Vec::new());
    for &n in &params.nodes {
        let phase = Instant::now();
        let membership = Membership::new(n);
        let built = phase.elapsed();
        partition_rows.push(partitions::measure(&membership, &params.partitions));
        outcomes.extend(throughput::measure(&membership, &loads, params.node_capacity, params.partition_capacity()));
        let placed = Instant::now();
        user_rows.push(users::measure(&membership, &users));
        timings.push(format!(
            "N = {n}: four rings built in {built:.2?}, users placed in {:.2?}, all {:.2?}",
            placed.elapsed(),
            phase.elapsed()
        ));
    }

    partitions::print(&partition_rows);
    users::print(&user_rows, params.users);
    throughput::print(&outcomes, params.chosen, &params.zipf, params.node_capacity, params.partition_capacity());

    println!("Timings:\n");
    for timing in timings {
        println!("- {timing}");
    }
    println!("- total {:.2?}", started.elapsed());
}
