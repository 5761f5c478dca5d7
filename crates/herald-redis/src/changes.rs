//! Membership changes told to every other live node, each of which applies it to its caches and answers;
//! the change is acknowledged to its client once all have answered. A node that does not answer within the
//! timeout is either gone or cut off from Redis; a node cut off from Redis forgets its cached memberships
//! when it reconnects (it may have missed changes), and the cache's TTL bounds the rest.

use crate::bus::{Bus, Envelope};
use crate::nodes::Nodes;
use crate::view::View;
use async_trait::async_trait;
use herald_core::changes::{Change, ChangeBus};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use uuid::Uuid;

struct Pending {
    waiting: HashSet<String>,
    done: Option<oneshot::Sender<()>>,
}

pub struct Changes {
    node: String,
    bus: Bus,
    /// Read afresh for every change: a node that joined since this node's last tick may have cached the
    /// membership already (a node announces itself before it serves anything).
    nodes: Arc<Nodes>,
    view: Arc<View>,
    timeout: Duration,
    pending: Mutex<HashMap<Uuid, Pending>>,
}

impl Changes {
    pub fn new(node: String, bus: Bus, nodes: Arc<Nodes>, view: Arc<View>, timeout: Duration) -> Self {
        Self { node, bus, nodes, view, timeout, pending: Mutex::new(HashMap::new()) }
    }

    /// `node` applied change `id`.
    pub fn applied(&self, id: Uuid, node: &str) {
        let mut pending = self.lock();
        let Some(p) = pending.get_mut(&id) else { return };
        p.waiting.remove(node);
        if p.waiting.is_empty()
            && let Some(p) = pending.remove(&id)
            && let Some(done) = p.done
        {
            let _ = done.send(());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl ChangeBus for Changes {
    async fn announce(&self, change: Change) {
        let live = match self.nodes.read().await {
            Ok((live, _)) => live.into_keys().collect(),
            Err(_) => self.view.live_ids(),
        };
        let others: HashSet<String> = live.into_iter().filter(|n| *n != self.node).collect();
        if others.is_empty() {
            return;
        }
        let id = Uuid::now_v7();
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, Pending { waiting: others.clone(), done: Some(tx) });
        let envelope = Envelope::Change { id, from: self.node.clone(), change };
        for node in &others {
            match self.bus.send(node, &envelope).await {
                Ok(true) => {}
                // Nobody listens on that channel: the node is gone, or reconnecting (then it forgets its cache).
                Ok(false) => self.applied(id, node),
                Err(e) => {
                    tracing::warn!(error = %e, "could not announce a membership change");
                    break;
                }
            }
        }
        if tokio::time::timeout(self.timeout, rx).await.is_err() {
            let missing = self.lock().remove(&id).map(|p| p.waiting.len()).unwrap_or(0);
            metrics::counter!("cluster_changes_unconfirmed_total").increment(1);
            tracing::warn!(missing, "nodes did not confirm a membership change in time");
        }
    }
}
