//! Herald's cluster control plane on Redis (a single instance, or a Redis Cluster). Redis is never the source
//! of truth: every message is stored (PostgreSQL) before it is acknowledged; what lives here is who is where
//! and what is on its way, so losing Redis delays live events and never loses a stored one.
//!
//! # Layout
//! - [`settings`], [`connect`], [`keys`]: where Redis is, its clients, and every key and channel name.
//! - [`nodes`]: the node registry; [`leases`]: one owner per log partition; [`view`]: what this node knows of
//!   both, refreshed each tick.
//! - [`log`]: the log seam on leases (records for partitions held elsewhere are forwarded over HTTP), unless
//!   the cluster is given a log that assigns partitions itself ([`ClusterLog::External`], Kafka), whose
//!   outcomes travel back to the records' origin nodes through [`delivery`] and [`bus`].
//! - [`registry`]: user -> nodes (and node -> users); [`presence`]: a user's presence beside it;
//!   [`delivery`]: feed events and ephemeral frames to the nodes holding their users; [`peers`]: all of it as
//!   the hub sees it; [`bus`]: the messages nodes exchange; [`changes`]: membership changes told to every
//!   node before they are acknowledged.
//! - [`l2`]: the L2 cache shared by the nodes; [`cached_stores`]: the user and conversation stores behind it.
//! - [`Cluster`] (here) wires them and runs the node's tick and its subscription.

pub mod bus;
pub mod cached_stores;
pub mod changes;
pub mod connect;
pub mod delivery;
pub mod keys;
pub mod l2;
pub mod leases;
pub mod log;
pub mod nodes;
pub mod peers;
pub mod presence;
pub mod registry;
pub mod settings;
#[cfg(feature = "testing")]
pub mod testing;
pub mod view;

pub use settings::Settings;

use bus::{Bus, Envelope};
use changes::Changes;
use delivery::ClusterDelivery;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use herald_core::changes::{ChangeBus, ChangeListener};
use herald_core::delivery::{Delivery, FeedDelivery, FeedSink, LocalDelivery, Outcome, Waiters};
use herald_core::hub::Hub;
use herald_core::log::MessageLog;
use herald_core::owners::LocalOwners;
use herald_core::ring::Ring;
use keys::Keys;
use leases::Leases;
use nodes::{NodeInfo, Nodes};
use peers::RedisPeers;
use registry::Registry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use view::View;

/// A partition without a holder for this many ticks may be taken by any node, not only the one the ring
/// names (which may be failing to take it).
const ORPHAN_TICKS: u32 = 3;

/// The log's shape on this node.
#[derive(Clone, Copy, Debug)]
pub struct LogShape {
    pub partitions: u32,
    pub queue_depth: usize,
    pub max_batch: usize,
}

/// Which log the cluster's partitions live in.
pub enum ClusterLog {
    /// Partitions owned by leases in Redis, records forwarded to their holder over HTTP ([`log`]).
    Leases(LogShape),
    /// A log that assigns partitions to nodes itself (Kafka's consumer group): the cluster takes no leases,
    /// and outcomes of records appended on other nodes come back on the bus (the records name their origin).
    External(Arc<dyn MessageLog>),
}

/// The seams the cluster fills, for the server to wire.
pub struct Parts {
    pub log: Arc<dyn MessageLog>,
    pub delivery: Arc<dyn Delivery>,
    pub changes: Arc<dyn ChangeBus>,
}

pub struct Cluster {
    node: String,
    settings: Settings,
    keys: Keys,
    client: Client,
    subscriber: SubscriberClient,
    nodes: Arc<Nodes>,
    leases: Leases,
    registry: Arc<Registry>,
    bus: Bus,
    view: Arc<View>,
    owners: Arc<LocalOwners>,
    /// Whether partitions are leased here (false: the log assigns them).
    leased: bool,
    /// The log, when it assigns partitions itself (told of dead peers, see [`Cluster::mourn`]).
    external: Option<Arc<dyn MessageLog>>,
    /// The dead nodes already seen as dead; `None` until the first tick.
    mourned: Mutex<Option<HashSet<String>>>,
    waiters: Arc<Waiters>,
    changes: Arc<Changes>,
    hub: Arc<Hub>,
    listeners: RwLock<Vec<Arc<dyn ChangeListener>>>,
    draining: AtomicBool,
    unowned_ticks: Mutex<HashMap<u32, u32>>,
    stop: CancellationToken,
}

impl Cluster {
    /// Connects to Redis, announces this node and starts its tick and subscription. With
    /// [`ClusterLog::Leases`], partitions are taken as leases are won, from the first tick on; with
    /// [`ClusterLog::External`] the given log owns them and no lease is taken.
    pub async fn start(
        settings: Settings,
        hub: Arc<Hub>,
        waiters: Arc<Waiters>,
        log: ClusterLog,
    ) -> Result<(Arc<Self>, Parts), Error> {
        let node = format!("n{}", uuid::Uuid::now_v7().simple());
        let keys = Keys::new(&settings.key_prefix);
        let client = connect::commands(&settings).await?;
        let subscriber = connect::subscriber(&settings).await?;
        let view = Arc::new(View::default());
        let bus = Bus::new(client.clone(), keys.clone());
        // A stalled node finds the mark of its sweep for as long as dead nodes are remembered (see `nodes`).
        let swept_ttl = settings.node_ttl * 100;
        let registry = Registry::start(client.clone(), keys.clone(), node.clone(), hub.clone(), swept_ttl);
        let (shape, external) = match log {
            ClusterLog::Leases(shape) => (shape, None),
            // Nothing is owned here through leases: no owner is ever made.
            ClusterLog::External(log) => {
                (LogShape { partitions: log.partitions(), queue_depth: 1, max_batch: 1 }, Some(log))
            }
        };
        let leased = external.is_none();
        let owners = Arc::new(LocalOwners::new(shape.partitions, shape.queue_depth, shape.max_batch));
        let nodes = Arc::new(Nodes::new(client.clone(), &keys, settings.node_ttl));
        let changes =
            Arc::new(Changes::new(node.clone(), bus.clone(), nodes.clone(), view.clone(), settings.change_timeout));
        let token = herald_core::forward::cluster_token(&settings.secret);
        let log: Arc<dyn MessageLog> = match external.clone() {
            Some(log) => log,
            None => Arc::new(log::LeasedLog::new(
                node.clone(),
                owners.clone(),
                view.clone(),
                waiters.clone(),
                token,
                settings.forward_timeout,
            )),
        };
        let local: Arc<dyn FeedSink> = hub.clone();
        let delivery = Arc::new(ClusterDelivery::start(
            LocalDelivery::new(waiters.clone(), Some(local)),
            node.clone(),
            bus.clone(),
            registry.clone(),
            view.clone(),
        ));
        hub.set_peers(Arc::new(RedisPeers { registry: registry.clone(), delivery: delivery.clone() }));
        let cluster = Arc::new(Self {
            nodes,
            leases: Leases::new(client.clone(), keys.clone(), node.clone(), settings.lease_ttl, shape.partitions),
            node,
            settings,
            keys,
            client,
            subscriber,
            registry,
            bus,
            view,
            owners,
            leased,
            external,
            mourned: Mutex::new(None),
            waiters,
            changes: changes.clone(),
            hub,
            listeners: RwLock::new(Vec::new()),
            draining: AtomicBool::new(false),
            unowned_ticks: Mutex::new(HashMap::new()),
            stop: CancellationToken::new(),
        });
        cluster.subscriber.ssubscribe(cluster.keys.node_channel(&cluster.node)).await?;
        tokio::spawn(cluster.clone().listen());
        // Announced (and partitions taken where free) before the node serves anything.
        cluster.tick().await;
        tokio::spawn(cluster.clone().ticks());
        tracing::info!(node = %cluster.node, "joined the cluster");
        let parts = Parts { log, delivery, changes };
        Ok((cluster, parts))
    }

    /// This node's id (new at every start).
    pub fn node_id(&self) -> &str {
        &self.node
    }

    /// Caches that must hear of other nodes' membership changes.
    pub fn add_listener(&self, listener: Arc<dyn ChangeListener>) {
        self.listeners.write().unwrap_or_else(|p| p.into_inner()).push(listener);
    }

    /// The partitions this node owns now.
    pub fn owned_partitions(&self) -> Vec<u32> {
        self.owners.owned()
    }

    /// The live nodes as this node saw them at its last tick.
    pub fn live_nodes(&self) -> HashMap<String, NodeInfo> {
        self.view.live()
    }

    /// Shutting down: announce it, and hand every partition to the nodes that remain (while this node still
    /// answers forwarded records that were already on their way).
    pub async fn drain(&self) {
        self.draining.store(true, Ordering::Release);
        self.tick().await;
    }

    /// Leaves: stops the tick, gives up every lease and the node's announcement. Call after the log has been
    /// shut down (its partitions' accepted records processed).
    pub async fn leave(&self) {
        self.stop.cancel();
        for partition in (0..self.owners.partitions()).filter(|_| self.leased) {
            if let Err(e) = self.leases.release(partition).await {
                tracing::debug!(partition, error = %e, "could not release a lease; it lapses by itself");
            }
        }
        // Its connections are closed by now: take it out of the registry (the nodes would only sweep it if
        // it died, and its announcement goes now).
        if let Err(e) = self.registry.sweep(&self.node, &self.hub).await {
            tracing::debug!(error = %e, "could not remove the node's connections from the registry");
        }
        if let Err(e) = self.nodes.leave(&self.node).await {
            tracing::debug!(error = %e, "could not remove the node's announcement; it lapses by itself");
        }
        let _ = self.subscriber.quit().await;
        let _ = self.client.quit().await;
    }

    fn listeners(&self) -> Vec<Arc<dyn ChangeListener>> {
        self.listeners.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn ticks(self: Arc<Self>) {
        let mut interval = tokio::time::interval(self.settings.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => self.tick().await,
                () = self.stop.cancelled() => return,
            }
        }
    }

    /// Announce, renew, rebalance: see the module docs of `nodes` and `leases`.
    async fn tick(&self) {
        let draining = self.draining.load(Ordering::Acquire);
        let me = NodeInfo {
            id: self.node.clone(),
            url: self.settings.advertise_url.clone(),
            connections: self.hub.connection_count() as u64,
            draining,
            seen_ms: herald_core::now_millis(),
        };
        if let Err(e) = self.nodes.announce(&me).await {
            // Keep what is owned: while Redis is away nobody else can take it either.
            tracing::debug!(error = %e, "cannot reach Redis this tick");
            return;
        }
        let (live, dead) = match self.nodes.read().await {
            Ok(nodes) => nodes,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the node registry this tick");
                return;
            }
        };
        let ring = Ring::new(live.values().map(|n| (n.id.as_str(), n.draining)));
        let desired: Vec<Option<String>> =
            (0..self.owners.partitions()).map(|p| ring.owner_of_u32(p).map(str::to_owned)).collect();
        // One node acts on a death: the live, not draining node with the smallest id, the same in every view.
        let mourner = live.values().filter(|n| !n.draining).map(|n| n.id.as_str()).min() == Some(self.node.as_str());
        self.view.set_nodes(live, dead.keys().cloned().collect());
        metrics::gauge!("cluster_nodes_live").set(self.view.live_ids().len() as f64);
        self.mourn(&dead, mourner && !draining);
        self.sweep(&dead).await;
        if self.leased && !self.tick_leases(draining, &desired).await {
            return;
        }
        match self.registry.was_swept().await {
            Ok(true) => {
                tracing::warn!("this node was taken for dead and its connections swept; writing them again");
                self.registry.queue_reassert();
            }
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "cannot check for a sweep this tick"),
        }
        if self.registry.is_dirty() {
            match self.registry.reassert(&self.hub).await {
                Ok(()) => self.hub.catch_up_all(),
                Err(e) => tracing::debug!(error = %e, "cannot rewrite the connection registry this tick"),
            }
        }
    }

    /// Renews this node's leases, takes and hands over partitions as the ring says (see `leases`); false if
    /// Redis failed on the way (the rest of the tick waits for the next one).
    async fn tick_leases(&self, draining: bool, desired: &[Option<String>]) -> bool {
        let owned = self.owners.owned();
        match self.leases.renew(&owned).await {
            Ok(kept) => {
                for partition in owned.iter().filter(|p| !kept.contains(p)) {
                    tracing::warn!(partition, "lost the lease of a partition; letting it go");
                    self.owners.release(*partition).await;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot renew leases this tick");
                return false;
            }
        }
        let holders = match self.leases.holders().await {
            Ok(holders) => holders,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read lease holders this tick");
                return false;
            }
        };
        self.view.set_holders(holders.clone());
        for (partition, holder) in holders.iter().enumerate() {
            let partition = partition as u32;
            let wanted = desired.get(partition as usize).cloned().flatten();
            let mine = wanted.as_deref() == Some(self.node.as_str());
            match holder {
                None => {
                    let orphaned = {
                        let mut unowned = self.unowned_ticks.lock().unwrap_or_else(|p| p.into_inner());
                        let ticks = unowned.entry(partition).or_insert(0);
                        *ticks += 1;
                        *ticks > ORPHAN_TICKS
                    };
                    if !draining && (mine || orphaned) {
                        self.take(partition).await;
                    }
                }
                Some(h) if *h == self.node => {
                    // Hand over to the node the ring names, if it is another live one (a draining node names
                    // none for itself).
                    if !mine && wanted.is_some() {
                        self.hand_over(partition).await;
                    }
                }
                Some(_) => {
                    self.unowned_ticks.lock().unwrap_or_else(|p| p.into_inner()).remove(&partition);
                }
            }
        }
        metrics::gauge!("cluster_partitions_owned").set(self.owners.owned().len() as f64);
        true
    }

    /// With a log that assigns partitions itself, tells it of each node seen dead for the first time, if this
    /// node is the one chosen to act (`mourner`); the log may take its time (see
    /// [`MessageLog::peer_died`]), so it runs apart from the tick. The deaths seen at the first tick are only
    /// remembered: they happened before this node joined the log, and a join reassigns every partition anyway.
    fn mourn(&self, dead: &HashMap<String, Duration>, mourner: bool) {
        let newly: Vec<Duration> = {
            let mut mourned = self.mourned.lock().unwrap_or_else(|p| p.into_inner());
            let first = mourned.is_none();
            let seen = mourned.get_or_insert_with(HashSet::new);
            seen.retain(|node| dead.contains_key(node));
            let newly = dead.iter().filter(|(node, _)| seen.insert((*node).clone())).map(|(_, silent)| *silent);
            if first { Vec::new() } else { newly.collect() }
        };
        let Some(log) = self.external.as_ref().filter(|_| mourner) else { return };
        for silent_for in newly {
            tracing::info!(silent_ms = silent_for.as_millis() as u64, "a node died; making sure its partitions move");
            let log = log.clone();
            tokio::spawn(async move { log.peer_died(silent_for).await });
        }
    }

    /// Removes the connections of dead nodes from the registry, announcing the users who went offline.
    async fn sweep(&self, dead: &HashMap<String, Duration>) {
        for node in dead.keys() {
            if let Err(e) = self.registry.sweep(node, &self.hub).await {
                tracing::debug!(%node, error = %e, "could not sweep a dead node's connections this tick");
            }
        }
    }

    async fn take(&self, partition: u32) {
        match self.leases.acquire(partition).await {
            Ok(true) => {
                self.unowned_ticks.lock().unwrap_or_else(|p| p.into_inner()).remove(&partition);
                self.owners.own(partition);
                self.view.set_holder(partition, Some(self.node.clone()));
                tracing::debug!(partition, "took a partition");
            }
            Ok(false) => {}
            Err(e) => tracing::debug!(partition, error = %e, "could not take a partition's lease"),
        }
    }

    async fn hand_over(&self, partition: u32) {
        // Finish what was accepted first, then free the lease for the next owner.
        self.owners.release(partition).await;
        if let Err(e) = self.leases.release(partition).await {
            tracing::debug!(partition, error = %e, "could not release a lease; it lapses by itself");
        }
        self.view.set_holder(partition, None);
        tracing::debug!(partition, "handed a partition over");
    }

    /// The node's subscription: feed events, catch-up requests and membership changes from other nodes; and what to do when messages may have been lost (a reconnect, a lag).
    async fn listen(self: Arc<Self>) {
        let mut messages = self.subscriber.message_rx();
        let mut reconnects = self.subscriber.reconnect_rx();
        let mut command_reconnects = self.client.reconnect_rx();
        loop {
            tokio::select! {
                message = messages.recv() => match message {
                    Ok(message) => self.dispatch(message),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "the node's subscription lagged; catching connections up");
                        self.recover().await;
                    }
                    Err(RecvError::Closed) => return,
                },
                Ok(_) = reconnects.recv() => {
                    tracing::info!("reconnected to Redis; catching connections up");
                    self.recover().await;
                }
                Ok(_) = command_reconnects.recv() => {
                    // Redis may have restarted empty: the registry needs this node's users again.
                    self.recover().await;
                }
                () = self.stop.cancelled() => return,
            }
        }
    }

    /// Whatever was published to this node meanwhile is lost: forget cached memberships (changes may be
    /// among it), write this node's users again, and catch every connection up from the feed.
    async fn recover(&self) {
        for listener in self.listeners() {
            listener.forget_all();
        }
        if let Err(e) = self.registry.reassert(&self.hub).await {
            tracing::debug!(error = %e, "cannot rewrite the connection registry yet; retrying each tick");
        }
        self.hub.catch_up_all();
    }

    /// Tells `from` that this node has applied its change `id`.
    fn confirm_change(&self, id: uuid::Uuid, from: String) {
        let bus = self.bus.clone();
        let node = self.node.clone();
        tokio::spawn(async move {
            if let Err(e) = bus.send(&from, &Envelope::ChangeApplied { id, node }).await {
                tracing::debug!(error = %e, "could not confirm a change");
            }
        });
    }

    fn dispatch(&self, message: fred::types::Message) {
        metrics::counter!("cluster_bus_messages_total", "direction" => "received").increment(1);
        let Some(json) = message.value.as_str() else { return };
        let envelope: Envelope = match serde_json::from_str(&json) {
            Ok(envelope) => envelope,
            Err(e) => match bus::unreadable_change(&json) {
                // A newer node's change: whatever it changed, nothing stale is kept, and the sender hears back.
                Some((id, from)) => {
                    tracing::warn!(error = %e, %from, "a change this node cannot read: dropping its caches");
                    for listener in self.listeners() {
                        listener.forget_all();
                    }
                    self.confirm_change(id, from);
                    return;
                }
                None => {
                    tracing::warn!(error = %e, "unreadable message from another node");
                    return;
                }
            },
        };
        match envelope {
            Envelope::Feed { items } => {
                let feed: Vec<FeedDelivery> = items.into_iter().map(FeedDelivery::from).collect();
                self.hub.deliver(feed);
            }
            Envelope::Ephemeral { items } => {
                for item in items {
                    self.hub.offer(item.users, &bytes::Bytes::from(item.frame));
                }
            }
            Envelope::CatchUp => self.hub.catch_up_all(),
            Envelope::Change { id, from, change } => {
                for listener in self.listeners() {
                    listener.apply(&change);
                }
                self.confirm_change(id, from);
            }
            Envelope::ChangeApplied { id, node } => self.changes.applied(id, &node),
            Envelope::Outcomes { items } => {
                metrics::counter!("cluster_outcomes_routed_total", "direction" => "received")
                    .increment(items.len() as u64);
                for item in items {
                    // Nobody waiting any more (timed out, cancelled) is fine: the client retries.
                    self.waiters.resolve(Outcome {
                        request_id: item.request_id,
                        origin: None,
                        result: item.outcome.into(),
                    });
                }
            }
        }
    }
}
