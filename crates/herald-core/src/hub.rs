//! This node's live connections: who is connected (user -> devices), fan-out of feed events to them,
//! typing indicators and presence. In a cluster the [`Peers`] know who is connected where and decide when
//! a user's presence changed over all nodes; typing and presence frames go to the other nodes through them.
//!
//! Every connection has a bounded outbox. A connection whose outbox is full of feed events is kicked instead
//! of being allowed to grow memory or slow the sender: it reconnects and resumes from its feed position,
//! losing nothing. Typing and presence frames never kick: they are dropped once an outbox is half full (a
//! presence storm in a big group must not disconnect the group).

use crate::auth::Principal;
use crate::cache::TtlCache;
use crate::changes::{Change, ChangeListener};
use crate::delivery::{FeedDelivery, FeedSink};
use crate::footprint::{self, Footprint};
use crate::lock;
use crate::outbox::{Kick, Outbox, PushError};
use crate::peers::Peers;
use crate::presence_updates::{PresenceUpdate, PresenceUpdates};
use crate::store::Stores;
use crate::{CoreResult, now_millis};
use bytes::Bytes;
use herald_proto::{ConversationId, DeviceId, Millis, PresenceInfo, PresenceStatus, ServerFrame, UserId};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// What a connection's queue carries.
#[derive(Clone, Debug)]
pub enum Outgoing {
    /// A feed event (`herald_proto::Event` JSON, shared by all recipients); the connection adds its position.
    Event { pos: u64, event: Arc<str>, sent_at: Option<Millis> },
    /// A complete frame shared by every recipient (typing, presence).
    Frame(Bytes),
    /// Feed events may have been lost on their way to this node (its link to the other nodes broke): read
    /// the feed from the position delivered so far and send what is missing.
    CatchUp,
}

#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Frames a connection may have queued before it counts as too slow and is disconnected.
    pub queue_depth: usize,
    /// Presence changes of one user within this window are merged into one announcement.
    pub presence_coalesce: Duration,
    /// How long receivers show a typing indicator without a new `typing` frame.
    pub typing_ttl: Duration,
    /// A user's repeated "typing" in one conversation is forwarded at most once per this interval.
    pub typing_interval: Duration,
    /// Presence changes are announced to the members of a user's conversations up to this size: one change
    /// costs at most this many recipients per conversation, not the size of every group the user is in.
    pub presence_fanout_max_members: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            queue_depth: 1024,
            presence_coalesce: Duration::from_secs(1),
            typing_ttl: Duration::from_secs(6),
            typing_interval: Duration::from_secs(2),
            presence_fanout_max_members: 100,
        }
    }
}

struct Connection {
    id: u64,
    device: DeviceId,
    outbox: Arc<Outbox<Outgoing>>,
}

/// Users whose presence is remembered (online, or offline with when they were last seen). Past this many,
/// the offline users' entries are forgotten: they read as offline with no last-seen time until they next
/// connect. Online users are bounded by connections, not by this.
const MAX_PRESENCE_ENTRIES: usize = 1_000_000;

/// The most bytes of user ids each of the hub's caches (contacts, member lists) holds. Without it, each
/// member of a 1,000-member group who came online cached a 1,000-user contact set (about 32 KB) for a minute:
/// 100,000 entries of that would be 3 GB.
const MAX_CACHED_USER_ID_BYTES: usize = 64 * 1024 * 1024;

/// Typing states remembered (to coalesce repeats); past this many, the expired ones go, then all.
const MAX_TYPING_ENTRIES: usize = 100_000;

#[derive(Default)]
struct Presence {
    connections: usize,
    status: Option<PresenceStatus>,
    last_seen: Option<Millis>,
    announced: Option<PresenceStatus>,
    pending: bool,
}

pub struct Hub {
    config: HubConfig,
    stores: Stores,
    next_id: AtomicU64,
    connections: Mutex<HashMap<UserId, Vec<Connection>>>,
    presence: Mutex<HashMap<UserId, Presence>>,
    typing: Mutex<HashMap<(UserId, ConversationId), (Instant, bool)>>,
    /// Who hears a user's presence changes: the members of its conversations up to
    /// [`HubConfig::presence_fanout_max_members`].
    contacts: TtlCache<UserId, Arc<HashSet<UserId>>>,
    members: TtlCache<ConversationId, Arc<Vec<UserId>>>,
    /// Looked up once: fan-out may touch it for every delivery.
    slow: metrics::Counter,
    /// Typing and presence frames dropped because a connection's outbox was half full.
    ephemeral_dropped: metrics::Counter,
    /// Zero of [`Hub::now_ms`], the clock of the connections' alarms.
    epoch: Instant,
    /// In a cluster, the other nodes: told when a user comes to this node and leaves it, and asked for
    /// presence.
    peers: std::sync::OnceLock<Arc<dyn Peers>>,
    /// Where the announced presence changes are published for consumers outside Herald, when anywhere.
    presence_updates: std::sync::OnceLock<(Arc<dyn PresenceUpdates>, String)>,
    /// Who blocks whom: neither of two users with a block between them is shown the other's typing or presence.
    blocks: std::sync::OnceLock<Arc<crate::blocks::Blocks>>,
    this: Weak<Hub>,
}

/// A registered connection. Dropping it unregisters the connection (and may make the user offline).
pub struct Registration {
    hub: Arc<Hub>,
    /// Whose connection this is (kept here so the connection need not hold it twice).
    pub principal: Principal,
    id: u64,
    /// What to write; reports when the connection fell too far behind and must go.
    pub outbox: Arc<Outbox<Outgoing>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.unregister(self.principal.user, self.id);
    }
}

impl Hub {
    pub fn new(stores: Stores, config: HubConfig) -> Arc<Self> {
        Arc::new_cyclic(|this| Self {
            config,
            stores,
            next_id: AtomicU64::new(1),
            connections: Mutex::new(HashMap::new()),
            presence: Mutex::new(HashMap::new()),
            typing: Mutex::new(HashMap::new()),
            contacts: TtlCache::weighed(
                "presence_contacts",
                Duration::from_secs(60),
                100_000,
                MAX_CACHED_USER_ID_BYTES,
                |set| set.capacity() * (size_of::<UserId>() + 1),
            ),
            members: TtlCache::weighed(
                "typing_members",
                Duration::from_secs(5),
                100_000,
                MAX_CACHED_USER_ID_BYTES,
                |list| list.capacity() * size_of::<UserId>(),
            ),
            slow: metrics::counter!("websocket_slow_consumer_disconnects_total"),
            ephemeral_dropped: metrics::counter!("websocket_ephemeral_dropped_total"),
            epoch: Instant::now(),
            peers: std::sync::OnceLock::new(),
            presence_updates: std::sync::OnceLock::new(),
            blocks: std::sync::OnceLock::new(),
            this: this.clone(),
        })
    }

    /// Sets the block list that hides typing and presence across a block (once, before connections arrive).
    pub fn set_blocks(&self, blocks: Arc<crate::blocks::Blocks>) {
        if self.blocks.set(blocks).is_err() {
            tracing::warn!("hub block list set twice; keeping the first");
        }
    }

    /// The users with a block between them and `user` (none without a block list).
    async fn separated_from(&self, user: UserId) -> CoreResult<Arc<HashSet<UserId>>> {
        match self.blocks.get() {
            Some(blocks) => blocks.separated_from(user).await,
            None => Ok(Arc::default()),
        }
    }

    /// Joins a cluster (once, before connections arrive).
    pub fn set_peers(&self, peers: Arc<dyn Peers>) {
        if self.peers.set(peers).is_err() {
            tracing::warn!("hub peers set twice; keeping the first");
        }
    }

    /// Publishes every presence change this node announces to `updates`, naming this node `node` (once, before
    /// connections arrive).
    pub fn set_presence_updates(&self, updates: Arc<dyn PresenceUpdates>, node: String) {
        if self.presence_updates.set((updates, node)).is_err() {
            tracing::warn!("hub presence updates set twice; keeping the first");
        }
    }

    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// Gives back what the caches hold past their TTL.
    pub fn purge_expired(&self) {
        self.contacts.purge_expired();
        self.members.purge_expired();
    }

    /// What the hub holds; `max_connections` is what bounds the connection registry (the process's limit
    /// on open files, in practice).
    pub fn footprints(&self, max_connections: usize) -> Vec<Footprint> {
        let connections = {
            let connections = lock(&self.connections);
            let devices: usize = connections.values().map(Vec::capacity).sum();
            Footprint {
                structure: "hub_connections",
                entries: connections.len(),
                bytes: footprint::hash_map_bytes(&connections) + devices * size_of::<Connection>(),
                bound: max_connections,
            }
        };
        let presence = Footprint::of_map("hub_presence", &lock(&self.presence), MAX_PRESENCE_ENTRIES);
        let typing = Footprint::of_map("hub_typing", &lock(&self.typing), MAX_TYPING_ENTRIES);
        vec![connections, presence, typing, self.contacts.footprint(), self.members.footprint()]
    }

    /// Registers a connection of `principal` (a user on a device); the user is online from now on.
    pub fn register(self: &Arc<Self>, principal: Principal) -> Registration {
        let Principal { user, device } = principal;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let outbox = Arc::new(Outbox::new(self.config.queue_depth));
        // Most users have one device connected: room for one, not the four a first push would reserve.
        let connection = Connection { id, device, outbox: outbox.clone() };
        {
            let mut connections = lock(&self.connections);
            let list = connections.entry(user).or_insert_with(|| Vec::with_capacity(1));
            list.push(connection);
            // Told under the lock, so a user's arrivals and departures reach the peers in their order.
            if list.len() == 1
                && let Some(peers) = self.peers.get()
            {
                peers.first_connected(user);
            }
        }
        metrics::gauge!("websocket_connections_total").increment(1.0);
        let changed = {
            let mut presence = lock(&self.presence);
            let p = presence_entry(&mut presence, user);
            p.connections += 1;
            if p.connections == 1 {
                p.status = Some(PresenceStatus::Online);
                true
            } else {
                false
            }
        };
        // In a cluster the peers say when the user came online (it may be connected elsewhere already).
        if changed && self.peers.get().is_none() {
            self.presence_changed(user);
        }
        Registration { hub: self.clone(), principal, id, outbox }
    }

    fn unregister(&self, user: UserId, id: u64) {
        {
            let mut connections = lock(&self.connections);
            if let Some(list) = connections.get_mut(&user) {
                list.retain(|c| c.id != id);
                if list.is_empty() {
                    connections.remove(&user);
                    if let Some(peers) = self.peers.get() {
                        peers.last_disconnected(user);
                    }
                }
            }
        }
        metrics::gauge!("websocket_connections_total").decrement(1.0);
        let changed = {
            let mut presence = lock(&self.presence);
            let p = presence_entry(&mut presence, user);
            p.connections = p.connections.saturating_sub(1);
            if p.connections == 0 {
                p.status = Some(PresenceStatus::Offline);
                p.last_seen = Some(now_millis());
                true
            } else {
                false
            }
        };
        if changed && self.peers.get().is_none() {
            self.presence_changed(user);
        }
    }

    /// The devices of `user` connected to this node.
    pub fn devices_of(&self, user: UserId) -> Vec<DeviceId> {
        lock(&self.connections).get(&user).map(|l| l.iter().map(|c| c.device).collect()).unwrap_or_default()
    }

    /// Number of connections on this node.
    pub fn connection_count(&self) -> usize {
        lock(&self.connections).values().map(Vec::len).sum()
    }

    /// Offers an ephemeral frame (typing, presence) to `users`' connections here and, in a cluster, on the
    /// other nodes.
    fn offer_everywhere(&self, users: Vec<UserId>, frame: Bytes) {
        self.offer(users.iter().copied(), &frame);
        if let Some(peers) = self.peers.get() {
            peers.offer_elsewhere(users, frame);
        }
    }

    /// Offers an ephemeral frame (typing, presence) to the users' connections on this node: dropped, never
    /// kicking, where an outbox is half full (see [`Outbox::offer`]).
    pub fn offer(&self, users: impl IntoIterator<Item = UserId>, frame: &Bytes) {
        self.send_to(users, || Outgoing::Frame(frame.clone()));
    }

    fn send_to(&self, users: impl IntoIterator<Item = UserId>, item: impl Fn() -> Outgoing) {
        let connections = lock(&self.connections);
        let mut dropped = 0;
        for user in users {
            let Some(list) = connections.get(&user) else { continue };
            for c in list {
                if !c.outbox.offer(item()) {
                    dropped += 1;
                }
            }
        }
        drop(connections);
        if dropped > 0 {
            self.ephemeral_dropped.increment(dropped);
        }
    }

    /// Queues an item for a connection; one whose outbox is full is kicked (and counted once).
    fn push(&self, c: &Connection, item: Outgoing) {
        if let Err(PushError::Full { newly_kicked: true }) = c.outbox.push(item) {
            self.slow.increment(1);
        }
    }

    /// Makes every connection read its feed from where it is and send whatever it missed (see
    /// [`Outgoing::CatchUp`]). A connection too far behind to take it is kicked and resumes on reconnect.
    pub fn catch_up_all(&self) {
        for list in lock(&self.connections).values() {
            for c in list {
                self.push(c, Outgoing::CatchUp);
            }
        }
    }

    /// Makes `user`'s connections on this node read what they missed from the feed (see
    /// [`Outgoing::CatchUp`]).
    pub fn catch_up(&self, user: UserId) {
        if let Some(list) = lock(&self.connections).get(&user) {
            for c in list {
                self.push(c, Outgoing::CatchUp);
            }
        }
    }

    /// The users with a connection on this node.
    pub fn connected_users(&self) -> Vec<UserId> {
        lock(&self.connections).keys().copied().collect()
    }

    /// Closes every connection of a device that was logged out or revoked.
    pub fn disconnect_device(&self, user: UserId, device: DeviceId) {
        if let Some(list) = lock(&self.connections).get(&user) {
            for c in list.iter().filter(|c| c.device == device) {
                c.outbox.kick(Kick::Revoked);
            }
        }
    }

    /// Kicks every connection of `user` on this node (every device revoked: a suspension).
    pub fn disconnect_user(&self, user: UserId) {
        if let Some(list) = lock(&self.connections).get(&user) {
            for c in list {
                c.outbox.kick(Kick::Revoked);
            }
        }
    }

    /// Tells every connection on this node to go (the node is shutting down). A connection that registers
    /// after this finds the gateway draining instead.
    pub fn kick_all(&self, why: Kick) {
        for list in lock(&self.connections).values() {
            for c in list {
                c.outbox.kick(why);
            }
        }
    }

    /// Milliseconds on this node's monotonic clock (from 1): the time connections set their alarms in
    /// ([`Outbox::set_alarm`]) and [`Hub::ring_alarms`] is called with.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Wakes every connection whose alarm is due at `now` (see [`Hub::now_ms`]); returns how many. One sweep
    /// for the node instead of a timer in every connection: an idle connection's heartbeat then costs an
    /// atomic in its outbox, and a sweep over 19,000 connections took 0.5-0.8 ms here
    /// (once a second with the default heartbeat), holding the connections lock meanwhile.
    pub fn ring_alarms(&self, now: u64) -> usize {
        let mut rung = 0;
        for list in lock(&self.connections).values() {
            for c in list {
                rung += usize::from(c.outbox.ring_if_due(now));
            }
        }
        rung
    }

    /// Sets an explicit status (online or away) for a connected user.
    pub fn set_status(&self, user: UserId, status: PresenceStatus) {
        let changed = {
            let mut presence = lock(&self.presence);
            let p = presence_entry(&mut presence, user);
            if p.connections > 0 && p.status != Some(status) && status != PresenceStatus::Offline {
                p.status = Some(status);
                true
            } else {
                false
            }
        };
        if changed {
            match self.peers.get() {
                Some(peers) => peers.status_set(user, status),
                None => self.presence_changed(user),
            }
        }
    }

    /// Schedules one announcement of `user`'s presence after the coalescing window: however often it flaps
    /// meanwhile, its contacts hear at most one change per window, with the final state. In a cluster the
    /// peers call this when the user's presence changed over all nodes, and the state announced is the
    /// cluster's at the end of the window (not compared with what this node announced before: the user may
    /// have come and gone on other nodes since).
    pub fn presence_changed(&self, user: UserId) {
        {
            let mut presence = lock(&self.presence);
            let p = presence_entry(&mut presence, user);
            if p.pending {
                return;
            }
            p.pending = true;
        }
        let Some(hub) = self.this.upgrade() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            tokio::time::sleep(hub.config.presence_coalesce).await;
            let local = {
                let mut presence = lock(&hub.presence);
                let Some(p) = presence.get_mut(&user) else { return };
                p.pending = false;
                if hub.peers.get().is_none() && p.status == p.announced {
                    return;
                }
                p.announced = p.status;
                info_of(user, Some(p))
            };
            if let Err(e) = hub.announce(user, local).await {
                tracing::warn!(error = %e, "could not announce a presence change");
            }
        });
    }

    /// Tells `user`'s contacts its presence: `local` on one node, the cluster's in a cluster.
    async fn announce(&self, user: UserId, local: PresenceInfo) -> CoreResult<()> {
        let info = match self.peers.get() {
            Some(peers) => peers.presence(&[user]).await?.pop().unwrap_or(local),
            None => local,
        };
        if let Some((updates, node)) = self.presence_updates.get() {
            updates.publish(PresenceUpdate {
                user_id: info.user_id,
                status: info.status,
                last_seen: info.last_seen,
                at: now_millis(),
                node: node.clone(),
            });
        }
        let contacts = self.contacts_of(user).await?;
        let separated = self.separated_from(user).await?;
        let frame = encode(&ServerFrame::Presence { id: None, users: vec![info] });
        let recipients: Vec<UserId> =
            contacts.iter().copied().filter(|u| *u != user && !separated.contains(u)).collect();
        metrics::counter!("presence_announcements_total").increment(1);
        metrics::counter!("presence_recipients_total").increment(recipients.len() as u64);
        self.offer_everywhere(recipients, frame);
        Ok(())
    }

    /// The presence of those of `users` who share a conversation with `asker`, of any size (the others are
    /// left out): how a member of a big group, which announces nothing, learns who is there.
    pub async fn presence_of(&self, asker: UserId, users: &[UserId]) -> CoreResult<Vec<PresenceInfo>> {
        let separated = self.separated_from(asker).await?;
        let mut unseen: HashSet<UserId> =
            users.iter().copied().filter(|u| *u != asker && !separated.contains(u)).collect();
        let mut visible = HashSet::new();
        for (conversation, _) in self.stores.conversations.memberships(asker).await? {
            if unseen.is_empty() {
                break;
            }
            for member in self.members_of(conversation).await?.iter() {
                if unseen.remove(member) {
                    visible.insert(*member);
                }
            }
        }
        let visible: Vec<UserId> = users.iter().copied().filter(|u| visible.contains(u)).collect();
        if let Some(peers) = self.peers.get() {
            return peers.presence(&visible).await;
        }
        let presence = lock(&self.presence);
        Ok(visible.iter().map(|u| info_of(*u, presence.get(u))).collect())
    }

    /// A block between `a` and `b` was set or lifted: each is told the other's presence as it now looks to
    /// them. Across a block that is `offline` with no last-seen time (what they knew must not stay on screen);
    /// once lifted, the real presence, when they share a conversation.
    pub async fn block_changed(&self, a: UserId, b: UserId) -> CoreResult<()> {
        let blocked = self.separated_from(a).await?.contains(&b);
        for (viewer, subject) in [(a, b), (b, a)] {
            let users = if blocked {
                vec![PresenceInfo { user_id: subject, status: PresenceStatus::Offline, last_seen: None }]
            } else {
                self.presence_of(viewer, &[subject]).await?
            };
            if !users.is_empty() {
                self.offer_everywhere(vec![viewer], encode(&ServerFrame::Presence { id: None, users }));
            }
        }
        Ok(())
    }

    /// Forwards a typing change to the other members' connections, coalescing repeats.
    pub async fn typing(&self, user: UserId, conversation: ConversationId, active: bool) -> CoreResult<()> {
        {
            let mut typing = lock(&self.typing);
            let now = Instant::now();
            if let Some((at, was_active)) = typing.get(&(user, conversation))
                && *was_active == active
                && (!active || now.duration_since(*at) < self.config.typing_interval)
            {
                return Ok(());
            }
            if typing.len() >= MAX_TYPING_ENTRIES {
                let keep = self.config.typing_ttl;
                typing.retain(|_, (at, _)| now.duration_since(*at) < keep);
                if typing.len() >= MAX_TYPING_ENTRIES {
                    // Only repeats go out uncoalesced for a moment.
                    typing.clear();
                }
            }
            typing.insert((user, conversation), (now, active));
        }
        let members = self.members_of(conversation).await?;
        let separated = self.separated_from(user).await?;
        let frame = encode(&ServerFrame::Typing {
            conversation_id: conversation,
            user_id: user,
            active,
            ttl_ms: self.config.typing_ttl.as_millis() as u64,
        });
        self.offer_everywhere(
            members.iter().copied().filter(|u| *u != user && !separated.contains(u)).collect(),
            frame,
        );
        Ok(())
    }

    async fn members_of(&self, conversation: ConversationId) -> CoreResult<Arc<Vec<UserId>>> {
        if let Some(members) = self.members.get(&conversation) {
            return Ok(members);
        }
        let members: Arc<Vec<UserId>> =
            Arc::new(self.stores.conversations.members(conversation).await?.iter().map(|m| m.user_id).collect());
        self.members.insert(conversation, members.clone());
        Ok(members)
    }

    async fn contacts_of(&self, user: UserId) -> CoreResult<Arc<HashSet<UserId>>> {
        if let Some(contacts) = self.contacts.get(&user) {
            return Ok(contacts);
        }
        let mut contacts = HashSet::new();
        for (conversation, _) in self.stores.conversations.memberships(user).await? {
            let members = self.members_of(conversation).await?;
            if members.len() <= self.config.presence_fanout_max_members {
                contacts.extend(members.iter().copied());
            }
        }
        contacts.remove(&user);
        let contacts = Arc::new(contacts);
        self.contacts.insert(user, contacts.clone());
        Ok(contacts)
    }
}

impl crate::accounts::RevocationListener for Hub {
    fn device_revoked(&self, user: UserId, device: DeviceId) {
        self.disconnect_device(user, device);
    }

    fn user_revoked(&self, user: UserId) {
        self.disconnect_user(user);
    }
}

/// Revocations made on other nodes of a cluster.
impl ChangeListener for Hub {
    fn apply(&self, change: &Change) {
        match *change {
            Change::Revoked { user, device: Some(device) } => self.disconnect_device(user, device),
            Change::Revoked { user, device: None } => self.disconnect_user(user),
            Change::Membership { .. } | Change::Block { .. } => {}
        }
    }

    /// Revocations may have been missed: every connection's device is looked up again, in the background, and
    /// the connections of devices that are gone are closed.
    fn forget_all(&self) {
        let connected: Vec<(UserId, DeviceId, Arc<Outbox<Outgoing>>)> = lock(&self.connections)
            .iter()
            .flat_map(|(user, list)| list.iter().map(|c| (*user, c.device, c.outbox.clone())))
            .collect();
        let users = self.stores.users.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            for (user, device, outbox) in connected {
                match users.device(device).await {
                    Ok(Some(d)) if d.user_id == user => {}
                    Ok(_) => {
                        outbox.kick(Kick::Revoked);
                    }
                    // Left open: a store that cannot answer refuses the device's next token check anyway.
                    Err(e) => tracing::warn!(error = %e, "could not check a connection's device after a missed change"),
                }
            }
        });
    }
}

impl Hub {
    /// Queues feed events for their users' connections here.
    fn push_feed(&self, feed: &[FeedDelivery]) {
        // A membership notice makes cached member and contact lists stale (typing and presence use them).
        for d in feed.iter().filter(|d| d.notice) {
            self.members.invalidate(&d.conversation);
            self.contacts.invalidate(&d.user);
        }
        let connections = lock(&self.connections);
        for d in feed {
            let Some(list) = connections.get(&d.user) else { continue };
            for c in list {
                self.push(c, Outgoing::Event { pos: d.pos, event: d.event.clone(), sent_at: d.sent_at });
            }
        }
    }
}

/// How many feed events a fan-out queues before it lets other tasks run. Queuing is cheap; what follows is not:
/// each event wakes its connection's task, which writes to its socket. A 10,000-member group's message queued at
/// once put 10,000 tasks in the runtime's queues ahead of everything else, so a small conversation's message sent
/// just after waited for all of them.
const FANOUT_CHUNK: usize = 256;

#[async_trait::async_trait]
impl FeedSink for Hub {
    fn deliver(&self, feed: Vec<FeedDelivery>) {
        self.push_feed(&feed);
    }

    /// A chunk at a time, yielding in between: the connections woken by one chunk write before the next is
    /// queued, and other conversations' deliveries (other partitions' owners, acks, small rooms) interleave
    /// instead of waiting behind the whole fan-out. Order holds: the caller (a partition's owner) waits, so its
    /// next batch cannot overtake this one.
    async fn deliver_paced(&self, feed: Vec<FeedDelivery>) {
        let mut chunks = feed.chunks(FANOUT_CHUNK).peekable();
        while let Some(chunk) = chunks.next() {
            self.push_feed(chunk);
            if chunks.peek().is_some() {
                tokio::task::yield_now().await;
            }
        }
    }
}

/// What others see of a user's presence: `last_seen` only while offline.
/// `user`'s presence entry, made if missing; making one in a full table forgets the offline users first.
fn presence_entry(presence: &mut HashMap<UserId, Presence>, user: UserId) -> &mut Presence {
    if presence.len() >= MAX_PRESENCE_ENTRIES && !presence.contains_key(&user) {
        presence.retain(|_, p| p.connections > 0 || p.pending);
    }
    presence.entry(user).or_default()
}

fn info_of(user: UserId, p: Option<&Presence>) -> PresenceInfo {
    let status = p.and_then(|p| p.status).unwrap_or(PresenceStatus::Offline);
    let last_seen = if status == PresenceStatus::Offline { p.and_then(|p| p.last_seen) } else { None };
    PresenceInfo { user_id: user, status, last_seen }
}

/// A server frame as shared bytes. Serialising our own types cannot fail; if it ever did, an error frame
/// takes its place rather than a panic.
pub fn encode(frame: &ServerFrame) -> Bytes {
    match serde_json::to_vec(frame) {
        Ok(json) => Bytes::from(json),
        Err(e) => {
            tracing::error!(error = %e, "could not encode a frame");
            Bytes::from_static(br#"{"type":"error","code":"internal","message":"internal error"}"#)
        }
    }
}
