//! Cross-node delivery. The sequencer's results are handed to this node's waiters and connections at once
//! (as on one node), and queued for a publisher task that looks up which other nodes hold each recipient
//! (the connection registry) and publishes each node its share. The sequencer never waits on Redis: when
//! the queue is full or Redis fails, the events are dropped here and, once Redis answers again, every node
//! is told to catch its connections up from the feed (where the events are, stored before any delivery).
//! Ephemeral frames (presence, typing) take the same way and are dropped, not repaired, when it is blocked.
//! So do the outcomes of records appended on other nodes (a record names its `origin`): the publisher sends
//! each node its batch's outcomes in one message, ahead of the feed; one dropped leaves its request to end
//! as `unavailable` at its timeout, never acknowledged falsely.

use crate::bus::{Bus, Envelope, WireFeed, WireFrame, WireOutcome};
use crate::registry::Registry;
use crate::view::View;
use async_trait::async_trait;
use bytes::Bytes;
use herald_core::delivery::{Delivery, FeedDelivery, LocalDelivery, Outcome};
use herald_proto::UserId;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;

/// Batches of feed events and ephemeral frames waiting for the publisher.
const QUEUE: usize = 4_096;
/// Feed events the publisher looks up and publishes together.
const MAX_MERGED: usize = 4_096;

/// What the publisher sends on.
enum Outbound {
    Feed(Vec<FeedDelivery>),
    Ephemeral {
        users: Vec<UserId>,
        frame: Bytes,
    },
    /// Outcomes for requests waiting on `node`.
    Outcomes {
        node: String,
        items: Vec<WireOutcome>,
    },
}

pub struct ClusterDelivery {
    node: String,
    local: LocalDelivery,
    tx: mpsc::Sender<Outbound>,
    lost: Arc<AtomicBool>,
}

impl ClusterDelivery {
    pub fn start(local: LocalDelivery, node: String, bus: Bus, registry: Arc<Registry>, view: Arc<View>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let lost = Arc::new(AtomicBool::new(false));
        tokio::spawn(Publisher { node: node.clone(), bus, registry, view, rx, lost: lost.clone() }.run());
        Self { node, local, tx, lost }
    }

    /// Sends an ephemeral frame to the other nodes holding connections of `users`; dropped if the way is
    /// blocked.
    pub fn offer_elsewhere(&self, users: Vec<UserId>, frame: Bytes) {
        if !users.is_empty() && self.tx.try_send(Outbound::Ephemeral { users, frame }).is_err() {
            metrics::counter!("cluster_ephemeral_dropped_total").increment(1);
        }
    }
}

#[async_trait]
impl Delivery for ClusterDelivery {
    async fn publish(&self, outcomes: Vec<Outcome>, feed: Vec<FeedDelivery>) {
        let (here, elsewhere): (Vec<Outcome>, Vec<Outcome>) =
            outcomes.into_iter().partition(|o| o.origin.as_deref().is_none_or(|n| n == self.node));
        let mut per_node: HashMap<String, Vec<WireOutcome>> = HashMap::new();
        for outcome in elsewhere {
            let node = outcome.origin.unwrap_or_default();
            per_node
                .entry(node)
                .or_default()
                .push(WireOutcome { request_id: outcome.request_id, outcome: outcome.result.into() });
        }
        for (node, items) in per_node {
            let count = items.len() as u64;
            if self.tx.try_send(Outbound::Outcomes { node, items }).is_err() {
                // Their requests end as `unavailable` at their timeout.
                metrics::counter!("cluster_outcomes_dropped_total").increment(count);
            }
        }
        if !feed.is_empty() && self.tx.try_send(Outbound::Feed(feed.clone())).is_err() {
            self.lost.store(true, Ordering::Release);
            metrics::counter!("cluster_feed_dropped_total").increment(feed.len() as u64);
        }
        self.local.publish(here, feed).await;
    }
}

struct Publisher {
    node: String,
    bus: Bus,
    registry: Arc<Registry>,
    view: Arc<View>,
    rx: mpsc::Receiver<Outbound>,
    lost: Arc<AtomicBool>,
}

impl Publisher {
    async fn run(mut self) {
        let mut batches = Vec::new();
        // Without new traffic, dropped events would wait for the next publish to be repaired: retry each second.
        let mut repair = tokio::time::interval(std::time::Duration::from_secs(1));
        repair.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                n = self.rx.recv_many(&mut batches, 64) => {
                    if n == 0 {
                        return;
                    }
                    let mut feed: Vec<FeedDelivery> = Vec::new();
                    let mut frames = Vec::new();
                    let mut outcomes: HashMap<String, Vec<WireOutcome>> = HashMap::new();
                    for batch in batches.drain(..) {
                        match batch {
                            Outbound::Outcomes { node, items } => outcomes.entry(node).or_default().extend(items),
                            Outbound::Feed(batch) => feed.extend(batch),
                            Outbound::Ephemeral { users, frame } => frames.push((users, frame)),
                        }
                        if feed.len() >= MAX_MERGED {
                            self.publish(std::mem::take(&mut feed)).await;
                        }
                    }
                    // Outcomes first: requests wait on them; the feed goes out in the same pass.
                    self.answer(outcomes).await;
                    self.publish(feed).await;
                    self.offer(frames).await;
                }
                _ = repair.tick() => self.repair().await,
            }
        }
    }

    async fn publish(&self, feed: Vec<FeedDelivery>) {
        if feed.is_empty() {
            return;
        }
        if self.route(&feed).await {
            self.repair().await;
        } else {
            self.lost.store(true, Ordering::Release);
            metrics::counter!("cluster_feed_dropped_total").increment(feed.len() as u64);
        }
    }

    /// Sends each waiting node its outcomes, all it has in one message.
    async fn answer(&self, outcomes: HashMap<String, Vec<WireOutcome>>) {
        for (node, items) in outcomes {
            let count = items.len() as u64;
            match self.bus.send(&node, &Envelope::Outcomes { items }).await {
                Ok(true) => metrics::counter!("cluster_outcomes_routed_total", "direction" => "sent").increment(count),
                // Nobody listens on that node's channel (it died, or is reconnecting): the requests are gone
                // with it, or time out there.
                Ok(false) => metrics::counter!("cluster_outcomes_dropped_total").increment(count),
                Err(e) => {
                    tracing::debug!(%node, error = %e, "could not send outcomes; their requests time out");
                    metrics::counter!("cluster_outcomes_dropped_total").increment(count);
                }
            }
        }
    }

    /// If events were dropped, asks every other node to catch its connections up from the feed.
    async fn repair(&self) {
        if !self.lost.swap(false, Ordering::AcqRel) {
            return;
        }
        for node in self.view.live_ids() {
            if node != self.node
                && let Err(e) = self.bus.send(&node, &Envelope::CatchUp).await
            {
                tracing::debug!(error = %e, "could not ask a node to catch up; retrying");
                self.lost.store(true, Ordering::Release);
                return;
            }
        }
    }

    /// Sends each live node the events of the users it holds; false if Redis failed.
    async fn route(&self, feed: &[FeedDelivery]) -> bool {
        let Some(where_) = self.locate(feed.iter().map(|d| d.user)).await else { return false };
        let mut per_node: HashMap<&str, Vec<WireFeed>> = HashMap::new();
        for d in feed {
            for node in where_.get(&d.user).into_iter().flatten() {
                per_node.entry(node).or_default().push(WireFeed::from(d));
            }
        }
        let mut ok = true;
        for (node, items) in per_node {
            if let Err(e) = self.bus.send(node, &Envelope::Feed { items }).await {
                tracing::debug!(%node, error = %e, "could not publish feed events");
                ok = false;
            }
        }
        ok
    }

    /// Sends each live node the ephemeral frames of the users it holds, each node's share in one message.
    async fn offer(&self, frames: Vec<(Vec<UserId>, Bytes)>) {
        if frames.is_empty() {
            return;
        }
        let Some(where_) = self.locate(frames.iter().flat_map(|(users, _)| users.iter().copied())).await else {
            metrics::counter!("cluster_ephemeral_dropped_total").increment(frames.len() as u64);
            return;
        };
        let mut per_node: HashMap<&str, Vec<WireFrame>> = HashMap::new();
        for (users, frame) in &frames {
            let mut shares: HashMap<&str, Vec<UserId>> = HashMap::new();
            for user in users {
                for node in where_.get(user).into_iter().flatten() {
                    shares.entry(node).or_default().push(*user);
                }
            }
            let frame = String::from_utf8_lossy(frame).into_owned();
            for (node, users) in shares {
                per_node.entry(node).or_default().push(WireFrame { users, frame: frame.clone() });
            }
        }
        for (node, items) in per_node {
            if let Err(e) = self.bus.send(node, &Envelope::Ephemeral { items }).await {
                tracing::debug!(%node, error = %e, "could not publish ephemeral frames");
                metrics::counter!("cluster_ephemeral_dropped_total").increment(1);
            }
        }
    }

    /// The other live nodes holding each of `users` (one pipelined lookup; entries naming dead nodes are
    /// removed on the way); None if Redis failed.
    async fn locate(&self, users: impl Iterator<Item = UserId>) -> Option<HashMap<UserId, Vec<String>>> {
        let mut users: Vec<UserId> = users.collect();
        users.sort_unstable();
        users.dedup();
        let nodes = match self.registry.nodes_of(&users).await {
            Ok(nodes) => nodes,
            Err(e) => {
                tracing::debug!(error = %e, "connection registry lookup failed");
                return None;
            }
        };
        let mut where_: HashMap<UserId, Vec<String>> = HashMap::new();
        let mut stale = Vec::new();
        for (user, holders) in users.iter().zip(nodes) {
            for node in holders {
                if node == self.node {
                    continue;
                }
                if self.view.is_dead(&node) {
                    stale.push((*user, node));
                } else {
                    where_.entry(*user).or_default().push(node);
                }
            }
        }
        if !stale.is_empty()
            && let Err(e) = self.registry.forget(stale).await
        {
            tracing::debug!(error = %e, "could not remove dead nodes from the registry");
        }
        Some(where_)
    }
}
