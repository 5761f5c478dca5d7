//! What this node knows of the cluster, refreshed each tick: the live nodes and who holds each partition.

use crate::nodes::NodeInfo;
use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

#[derive(Default)]
pub struct View {
    live: RwLock<HashMap<String, NodeInfo>>,
    /// Nodes whose announcement lapsed: their registry entries can go.
    dead: RwLock<HashSet<String>>,
    holders: RwLock<Vec<Option<String>>>,
}

impl View {
    pub fn set_nodes(&self, live: HashMap<String, NodeInfo>, dead: HashSet<String>) {
        *write(&self.live) = live;
        *write(&self.dead) = dead;
    }

    /// Known to be dead (not merely unknown: a node that joined since the last tick is unknown, and live).
    pub fn is_dead(&self, node: &str) -> bool {
        read(&self.dead).contains(node)
    }

    pub fn set_holders(&self, holders: Vec<Option<String>>) {
        *write(&self.holders) = holders;
    }

    pub fn set_holder(&self, partition: u32, holder: Option<String>) {
        if let Some(slot) = write(&self.holders).get_mut(partition as usize) {
            *slot = holder;
        }
    }

    pub fn is_live(&self, node: &str) -> bool {
        read(&self.live).contains_key(node)
    }

    pub fn live_ids(&self) -> Vec<String> {
        read(&self.live).keys().cloned().collect()
    }

    pub fn live(&self) -> HashMap<String, NodeInfo> {
        read(&self.live).clone()
    }

    /// The node holding `partition`'s lease and its URL, if it is live.
    pub fn holder(&self, partition: u32) -> Option<(String, String)> {
        let holder = read(&self.holders).get(partition as usize).cloned().flatten()?;
        let url = read(&self.live).get(&holder)?.url.clone();
        Some((holder, url))
    }

    pub fn holders(&self) -> Vec<Option<String>> {
        read(&self.holders).clone()
    }
}

// A poisoned lock only means a panic elsewhere while holding it; the data stays valid.
fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}
