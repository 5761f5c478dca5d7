//! The simulation's parameters: defaults, then `HERALD_SIM_*` environment variables, then `--flags`.

use std::fmt;
use std::str::FromStr;

/// Everything a run depends on; two runs with the same parameters print the same figures (timings aside).
#[derive(Clone, Debug)]
pub struct Params {
    /// Cluster sizes to simulate.
    pub nodes: Vec<usize>,
    /// Partition counts to compare (`log.partitions`; the config allows 1..=4096).
    pub partitions: Vec<u32>,
    /// The partition count the conclusions are about: the throughput and sensitivity tables use it.
    pub chosen: u32,
    /// Synthetic users placed on the ring.
    pub users: usize,
    /// Synthetic conversations the send load is spread over.
    pub conversations: usize,
    /// Zipf exponents of the load over conversations; the first is the main one, the others feed the
    /// sensitivity table.
    pub zipf: Vec<f64>,
    /// Durable acked sends per second one node can sequence (a measured single-node figure, BENCHMARKS.md).
    pub node_capacity: f64,
    /// Sends per second one partition can sequence: its owner is serial. By default the node's capacity
    /// (one partition's group commits can take the whole node), which is the optimistic end.
    pub partition_capacity: Option<f64>,
    /// Seed of every synthetic id.
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            nodes: vec![3, 5, 10, 30, 100, 300, 1000],
            partitions: vec![16, 64, 256, 1024, 4096],
            chosen: 1024,
            users: 1_000_000,
            conversations: 1_000_000,
            zipf: vec![1.0, 0.0, 0.6, 0.8, 1.2],
            // The leases log (PostgreSQL + Redis) is the cluster's default log: 10.2-12.1k acked/s measured.
            node_capacity: 10_000.0,
            partition_capacity: None,
            seed: 20,
        }
    }
}

impl Params {
    /// The partition capacity in effect.
    pub fn partition_capacity(&self) -> f64 {
        self.partition_capacity.unwrap_or(self.node_capacity)
    }

    /// Reads `HERALD_SIM_<NAME>` for each parameter, then `--<name> value` (or `--<name>=value`) from the
    /// command line; later sources win.
    pub fn from_env_and_args(args: impl IntoIterator<Item = String>) -> Result<Params, String> {
        let mut params = Params::default();
        for name in NAMES {
            let variable = format!("HERALD_SIM_{}", name.to_uppercase().replace('-', "_"));
            if let Ok(value) = std::env::var(&variable) {
                params.set(name, &value).map_err(|e| format!("{variable}: {e}"))?;
            }
        }
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "--help" || arg == "-h" {
                return Err(usage());
            }
            let Some(flag) = arg.strip_prefix("--") else {
                return Err(format!("unexpected argument {arg:?}\n{}", usage()));
            };
            let (name, value) = match flag.split_once('=') {
                Some((name, value)) => (name.to_owned(), value.to_owned()),
                None => (flag.to_owned(), args.next().ok_or_else(|| format!("--{flag} needs a value"))?),
            };
            params.set(&name, &value).map_err(|e| format!("--{name}: {e}"))?;
        }
        params.check()?;
        Ok(params)
    }

    fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        match name {
            "nodes" => self.nodes = list(value)?,
            "partitions" => self.partitions = list(value)?,
            "chosen" => self.chosen = one(value)?,
            "users" => self.users = one(value)?,
            "conversations" => self.conversations = one(value)?,
            "zipf" => self.zipf = list(value)?,
            "node-capacity" => self.node_capacity = one(value)?,
            "partition-capacity" => self.partition_capacity = Some(one(value)?),
            "seed" => self.seed = one(value)?,
            _ => return Err(format!("unknown parameter\n{}", usage())),
        }
        Ok(())
    }

    fn check(&mut self) -> Result<(), String> {
        if self.nodes.iter().any(|&n| n < 2) {
            return Err("every cluster size must be at least 2 (one node leaves)".into());
        }
        if self.partitions.iter().any(|&p| !(1..=4096).contains(&p)) {
            return Err("partition counts must be between 1 and 4096, as log.partitions".into());
        }
        if !self.partitions.contains(&self.chosen) {
            self.partitions.push(self.chosen);
            self.partitions.sort_unstable();
        }
        if self.users == 0 || self.conversations == 0 || self.zipf.is_empty() {
            return Err("users, conversations and zipf must not be empty".into());
        }
        if !(self.node_capacity > 0.0 && self.partition_capacity() > 0.0) {
            return Err("capacities must be positive".into());
        }
        Ok(())
    }
}

const NAMES: [&str; 9] =
    ["nodes", "partitions", "chosen", "users", "conversations", "zipf", "node-capacity", "partition-capacity", "seed"];

fn usage() -> String {
    let defaults = Params::default();
    format!(
        "usage: cluster_scale [--nodes 3,5,...] [--partitions 16,64,...] [--chosen P] [--users N] \
         [--conversations N] [--zipf S,S,...] [--node-capacity SENDS_PER_S] [--partition-capacity SENDS_PER_S] \
         [--seed N]\n(or HERALD_SIM_NODES=..., HERALD_SIM_NODE_CAPACITY=..., ...)\ndefaults: {defaults:?}"
    )
}

fn one<T: FromStr>(value: &str) -> Result<T, String>
where
    T::Err: fmt::Display,
{
    value.trim().replace('_', "").parse().map_err(|e| format!("{value:?}: {e}"))
}

fn list<T: FromStr>(value: &str) -> Result<Vec<T>, String>
where
    T::Err: fmt::Display,
{
    value.split(',').map(one).collect()
}
