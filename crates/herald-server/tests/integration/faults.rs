//! Faults under load on a cluster of `herald serve` child processes on the Kafka log (issues 19 and 20): one
//! PostgreSQL database (or a primary of the test's own with a streaming replica for reads), one Redis and a
//! tansu broker of the test's own.
//!
//! The load: users homed on the nodes in turn; three direct conversations and groups until every partition
//! holds one, so every node owns partitions with traffic. Two clients a conversation send through their home
//! node one message after another, retrying a send with the same client_msg_id on `unavailable`, a timeout or
//! a failed connection (through the next node when theirs is gone), as a real client does. Every user has a
//! WebSocket device on its home node and, unless that is the first node, one there too; a device whose node
//! goes away reconnects to the next one (after the delay a `reconnect` frame asks for) and resumes after the
//! last feed position it got.
//!
//! Each test applies one fault under that load, waits until every client has had 20 more sends acknowledged,
//! and checks the end state: every acknowledged send stored once under the seq it was acknowledged with,
//! each conversation dense from 1, every member reading the same history, every device holding every message
//! of its conversations once, in order, with feed positions that never skip or repeat. It prints the fault
//! line: acked, stored, delivered, lost, duplicated, reordered.

use super::child::Node;
use super::cluster::{scraped, wait_until};
use super::helpers::{self, TestApp, User};
use super::ws::{message_seqs, positions};
use herald_core::log::partition_of;
use herald_kafka::testing::OwnBroker;
use herald_postgres::testing::{OwnServer, TestDatabase};
use herald_proto::ConversationId;
use herald_redis::testing::OwnRedis;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Partitions of the test's log: two for each of three nodes.
const PARTITIONS: u32 = 6;

/// How long the group may take to give a dead or departed node's partitions to the others: the session
/// timeout (6 s) plus the time a survivor waits to be sure of the death (docs/cluster.md) and a rebalance,
/// with room for a busy machine.
const TAKEOVER_LIMIT: Duration = Duration::from_secs(45);

/// Sends each client has acknowledged before a fault, and again after it.
const ACKS_AROUND_A_FAULT: usize = 20;

/// Where the stores live.
enum Postgres {
    /// A database of its own on the machine's server (held for its `Drop`, which removes it).
    Shared { _database: TestDatabase },
    /// A primary of the test's own, with a streaming replica that serves the reads that tolerate lag.
    Replicated { _primary: OwnServer, replica: OwnServer },
}

/// The cluster and its load; see the module docs.
pub struct World {
    started: Instant,
    pub broker: OwnBroker,
    pub redis: OwnRedis,
    postgres: Postgres,
    settings: String,
    nodes: Vec<Option<Node>>,
    dirs: Vec<tempfile::TempDir>,
    bases: Vec<String>,
    http: reqwest::Client,
    users: Vec<(User, usize)>,
    conversations: Vec<(ConversationId, Vec<usize>)>,
    devices: Vec<Device>,
    lanes: Vec<(usize, Acks, tokio::task::JoinHandle<()>)>,
    stop_lanes: Arc<AtomicBool>,
    stop_devices: CancellationToken,
    /// When the fault happened, and to which node (none for a service).
    fault: Option<(Instant, Option<usize>)>,
    settled: Duration,
}

struct Device {
    user: usize,
    node: usize,
    events: Arc<std::sync::Mutex<Vec<Value>>>,
    connections: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl World {
    /// `nodes` nodes on the machine's PostgreSQL, settled (every partition owned, each node some), with the
    /// load running and every client past its first acks. None when the broker is not installed.
    pub async fn start(nodes: usize) -> Option<World> {
        World::start_on(nodes, false).await
    }

    /// The same on a primary of the test's own with a streaming replica serving reads.
    pub async fn start_replicated(nodes: usize) -> Option<World> {
        World::start_on(nodes, true).await
    }

    async fn start_on(nodes: usize, replicated: bool) -> Option<World> {
        let started = Instant::now();
        let broker = OwnBroker::start().await?;
        let redis = OwnRedis::start().await;
        let (postgres, storage) = if replicated {
            let (primary, replica) = tokio::task::block_in_place(|| {
                let primary = OwnServer::primary();
                let replica = OwnServer::replica_of(&primary);
                (primary, replica)
            });
            let storage = format!(
                "url = \"{}\"\nreplica_urls = [\"{}\"]\nreplica_max_lag_ms = 1000\n",
                primary.url("postgres"),
                replica.url("postgres")
            );
            (Postgres::Replicated { _primary: primary, replica }, storage)
        } else {
            let database = TestDatabase::create().await;
            let storage = format!("url = \"{}\"\n", database.url());
            (Postgres::Shared { _database: database }, storage)
        };
        let settings = format!(
            "[storage]\nbackend = \"postgres\"\n[storage.postgres]\n{storage}{}\
             [logins]\nregistrations_per_hour = 1000000\n[log]\npartitions = {PARTITIONS}\napply_timeout_ms = 5000\n\
             [cluster]\nredis_urls = [\"{}\"]\nkey_prefix = \"{}\"\nlog = \"kafka\"\n\
             [cluster.kafka]\nbrokers = \"{}\"\ngroup_id = \"{}\"\nsession_timeout_ms = 6000\n\
             heartbeat_interval_ms = 500\nfetch_wait_max_ms = {}\nlinger_ms = {}\n",
            helpers::CHILD_POSTGRES_POOL,
            redis.url(),
            helpers::unique_name("herald"),
            broker.brokers(),
            helpers::unique_name("herald"),
            helpers::KAFKA_TEST_FETCH_WAIT_MS,
            helpers::KAFKA_TEST_LINGER_MS,
        );
        let mut world = World {
            started,
            broker,
            redis,
            postgres,
            settings,
            nodes: Vec::new(),
            dirs: Vec::new(),
            bases: Vec::new(),
            http: reqwest::Client::new(),
            users: Vec::new(),
            conversations: Vec::new(),
            devices: Vec::new(),
            lanes: Vec::new(),
            stop_lanes: Arc::default(),
            stop_devices: CancellationToken::new(),
            fault: None,
            settled: Duration::ZERO,
        };
        // One after the other: the first creates the topic and the schema.
        for _ in 0..nodes {
            world.add_node();
        }
        world.settled = world.wait_owned("every node owns partitions", |owned| owned.iter().all(|n| *n >= 1.0)).await;
        world.add_conversations().await;
        world.add_devices().await;
        world.add_lanes();
        world.wait_acks("every client acknowledged", vec![0; world.lanes.len()]).await;
        Some(world)
    }

    /// Starts one more node; returns its index.
    pub fn add_node(&mut self) -> usize {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = tokio::task::block_in_place(|| Node::start_with(dir.path(), &self.settings));
        self.bases.push(node.base.clone());
        self.nodes.push(Some(node));
        self.dirs.push(dir);
        self.nodes.len() - 1
    }

    fn app(&self, node: usize) -> TestApp {
        helpers::at(&self.bases[node])
    }

    /// Users homed on the nodes in turn, two per node; three direct conversations, then groups until every
    /// partition holds one.
    async fn add_conversations(&mut self) {
        let n = self.nodes.len();
        for i in 0..2 * n {
            let user = self.app(i % n).register("u").await;
            self.users.push((user, i % n));
        }
        let u = self.users.len();
        for (x, y) in [(0, 1), (2, 3), (4, 5)].into_iter().filter(|(_, y)| *y < u) {
            let id = self.app(self.users[x].1).direct(&self.users[x].0, &self.users[y].0).await;
            self.conversations.push((id, vec![x, y]));
        }
        let covered = |c: &[(ConversationId, Vec<usize>)]| -> BTreeSet<u32> {
            c.iter().map(|(id, _)| partition_of(*id, PARTITIONS)).collect()
        };
        let mut groups = 0;
        while groups < 2 || covered(&self.conversations).len() < PARTITIONS as usize {
            assert!(groups < 60, "groups never covered every partition");
            let owner = groups % u;
            let members: Vec<usize> = (0..u).filter(|m| *m != owner && (m + groups) % 3 != 0).collect();
            let refs: Vec<&User> = members.iter().map(|m| &self.users[*m].0).collect();
            let id = self.app(self.users[owner].1).group(&self.users[owner].0, &refs).await;
            if groups < 2 || !covered(&self.conversations).contains(&partition_of(id, PARTITIONS)) {
                self.conversations.push((id, std::iter::once(owner).chain(members).collect()));
            }
            groups += 1;
        }
    }

    /// A device of every user on its home node, and one on node 0 for the users homed elsewhere.
    async fn add_devices(&mut self) {
        for u in 0..self.users.len() {
            let (user, home) = self.users[u].clone();
            let mut places = vec![(home, user.clone())];
            if home != 0 {
                places.push((0, self.app(0).login(&user).await));
            }
            for (node, device) in places {
                self.connect_device(u, node, device.token().to_owned());
            }
        }
    }

    /// One more WebSocket device of user `u` on `node` (a new login).
    pub async fn add_device(&mut self, u: usize, node: usize) {
        let device = self.app(node).login(&self.users[u].0).await;
        self.connect_device(u, node, device.token().to_owned());
    }

    fn connect_device(&mut self, user: usize, node: usize, token: String) {
        let events: Arc<std::sync::Mutex<Vec<Value>>> = Arc::default();
        let connections = Arc::new(AtomicU32::new(0));
        let task = tokio::spawn(listening_device(
            self.bases.clone(),
            node,
            token,
            events.clone(),
            connections.clone(),
            self.stop_devices.clone(),
        ));
        self.devices.push(Device { user, node, events, connections, task });
    }

    /// In each conversation two members send, through their home nodes (different nodes where the members'
    /// homes differ).
    fn add_lanes(&mut self) {
        for (c, (conversation, members)) in self.conversations.iter().enumerate() {
            let home = |m: &usize| self.users[*m].1;
            let second = members.iter().copied().find(|m| home(m) != home(&members[0])).unwrap_or(members[1]);
            for sender in [members[0], second] {
                let (user, home) = &self.users[sender];
                let acks: Acks = Arc::default();
                let lane = Lane {
                    nodes: self.bases.clone(),
                    home: *home,
                    token: user.token().to_owned(),
                    conversation: *conversation,
                    name: format!("c{c}-u{sender}"),
                };
                let task = tokio::spawn(sending_lane(lane, self.http.clone(), acks.clone(), self.stop_lanes.clone()));
                self.lanes.push((c, acks, task));
            }
        }
    }

    fn acks(&self) -> Vec<usize> {
        self.lanes.iter().map(|(_, acks, _)| acks.lock().expect("lock").len()).collect()
    }

    /// Waits until every client has had [`ACKS_AROUND_A_FAULT`] sends acknowledged past `since` (counts from
    /// [`World::acks`]).
    async fn wait_acks(&self, what: &str, since: Vec<usize>) {
        wait_until(what, Duration::from_secs(90), async || self.acked_past(&since)).await;
    }

    /// Whether every client has had [`ACKS_AROUND_A_FAULT`] sends acknowledged past `since`.
    fn acked_past(&self, since: &[usize]) -> bool {
        self.acks().iter().zip(since).all(|(now, then)| *now >= then + ACKS_AROUND_A_FAULT)
    }

    /// The partitions each running node owns (0 for a node that is gone).
    async fn owned(&self) -> Vec<f64> {
        let mut owned = Vec::new();
        for (node, base) in self.nodes.iter().zip(&self.bases) {
            owned.push(match node {
                Some(_) => scraped(&self.http, base, "cluster_partitions_owned").await.unwrap_or(0.0),
                None => 0.0,
            });
        }
        owned
    }

    /// Waits until the running nodes own every partition between them and `also` holds of the counts.
    async fn wait_owned(&self, what: &str, also: impl Fn(&[f64]) -> bool) -> Duration {
        wait_until(what, TAKEOVER_LIMIT, async || {
            let owned = self.owned().await;
            let running: Vec<f64> =
                owned.iter().zip(&self.nodes).filter(|(_, n)| n.is_some()).map(|(o, _)| *o).collect();
            running.iter().sum::<f64>() == f64::from(PARTITIONS) && also(&running)
        })
        .await
    }

    /// The partitions node `i` owns now.
    pub async fn owned_by(&self, i: usize) -> f64 {
        self.owned().await[i]
    }

    /// Kills node `i` with SIGKILL; returns how long until the others owned every partition.
    pub async fn kill_9(&mut self, i: usize) -> Duration {
        let mut node = self.nodes[i].take().expect("a running node");
        node.kill_9();
        self.fault = Some((Instant::now(), Some(i)));
        self.wait_owned("the other nodes own every partition", |_| true).await
    }

    /// Sends SIGTERM to node `i` and waits for it to exit; returns how long it took, after checking that it
    /// exited cleanly and the others own every partition.
    pub async fn terminate(&mut self, i: usize) -> Duration {
        let mut node = self.nodes[i].take().expect("a running node");
        let pid = node.child.id().to_string();
        let sent = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
        assert!(sent.success(), "kill -TERM {pid}");
        self.fault = Some((Instant::now(), Some(i)));
        let started = Instant::now();
        let status = tokio::task::block_in_place(|| node.child.wait()).expect("wait for the node");
        let took = started.elapsed();
        assert!(status.success(), "the drained node exited with {status}");
        self.wait_owned("the other nodes own every partition", |_| true).await;
        took
    }

    /// Marks a fault of a service (not a node) as happening now.
    pub fn service_fault(&mut self) {
        self.fault = Some((Instant::now(), None));
    }

    /// The stores' streaming replica (of [`World::start_replicated`]).
    pub fn replica(&mut self) -> &mut OwnServer {
        match &mut self.postgres {
            Postgres::Replicated { replica, .. } => replica,
            Postgres::Shared { .. } => panic!("this world has no replica"),
        }
    }

    /// Waits for every client to have 20 more sends acknowledged after the fault, stops the load and checks
    /// the end state (see the module docs); prints the fault line under `name`. Returns how many sends were
    /// acknowledged only after a retry.
    pub async fn finish(mut self, name: &str, before_fault: Vec<usize>) -> usize {
        let (fault_at, fault_node) = self.fault.expect("a fault happened");
        let after_fault = self.acks();
        self.wait_acks("every client acknowledged after the fault", after_fault).await;
        self.stop_lanes.store(true, Ordering::Release);
        let mut acked: BTreeMap<String, (usize, Acked)> = BTreeMap::new();
        let (mut retried, mut reordered) = (0, 0);
        let mut longest_pause = Duration::ZERO;
        for (c, acks, task) in std::mem::take(&mut self.lanes) {
            task.await.expect("a lane");
            let acks = acks.lock().expect("lock").clone();
            // One client's sends, one after the other: their seqs grow.
            reordered += acks.windows(2).filter(|w| w[1].seq <= w[0].seq).count();
            for ack in acks {
                retried += usize::from(ack.tries > 1);
                assert!(acked.insert(ack.text.clone(), (c, ack)).is_none(), "a lane's message twice");
            }
        }
        // The longest time any conversation went without an acknowledgement around the fault.
        for c in 0..self.conversations.len() {
            let mut times: Vec<Instant> = acked.values().filter(|(at, _)| *at == c).map(|(_, a)| a.at).collect();
            times.sort();
            for w in times.windows(2).filter(|w| w[1] > fault_at) {
                longest_pause = longest_pause.max(w[1] - w[0]);
            }
        }

        // The store: each conversation dense from 1, every member reading the same; every acknowledged send
        // there once, under its seq, and nothing there that was not acknowledged.
        let reader = self.nodes.iter().position(Option::is_some).expect("a running node");
        let app = self.app(reader);
        let (mut stored, mut lost, mut duplicated) = (0, 0, 0);
        let mut histories: Vec<Vec<(u64, String)>> = Vec::new();
        for (c, (conversation, members)) in self.conversations.iter().enumerate() {
            let mut first: Option<Vec<(u64, String)>> = None;
            for m in members {
                let messages = app.all_messages(&self.users[*m].0, *conversation).await;
                let read: Vec<(u64, String)> = messages
                    .iter()
                    .map(|m| (m["seq"].as_u64().expect("seq"), m["body"].as_str().expect("body").to_owned()))
                    .collect();
                match &first {
                    None => first = Some(read),
                    Some(first) => assert_eq!(&read, first, "conversation {c}: every member reads the same history"),
                }
            }
            let history = first.expect("members");
            let seqs: Vec<u64> = history.iter().map(|(seq, _)| *seq).collect();
            assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "conversation {c}: seqs dense from 1");
            let mut texts = BTreeSet::new();
            for (seq, text) in &history {
                stored += 1;
                if !texts.insert(text.clone()) {
                    duplicated += 1;
                }
                match acked.get(text) {
                    Some((at, ack)) => {
                        assert_eq!((*at, ack.seq), (c, *seq), "{text}: stored under another seq than acknowledged")
                    }
                    None => panic!("{text}: stored (seq {seq}) but never acknowledged"),
                }
            }
            lost += acked.iter().filter(|(text, (at, _))| *at == c && !texts.contains(*text)).count();
            histories.push(history);
        }

        // Devices: each has every message of its user's conversations once, in seq order, its feed positions
        // without a gap; those that were on a node that went away resumed on another.
        let lasts: Vec<u64> = histories.iter().map(|h| h.len() as u64).collect();
        let conversations = &self.conversations;
        let conversations_of = |u: usize| -> Vec<usize> {
            conversations.iter().enumerate().filter(|(_, (_, members))| members.contains(&u)).map(|(c, _)| c).collect()
        };
        let reached = |u: usize, events: &[Value]| {
            conversations_of(u).iter().all(|c| message_seqs(events, conversations[*c].0).contains(&lasts[*c]))
        };
        wait_until("every device has every message", Duration::from_secs(60), async || {
            self.devices.iter().all(|d| reached(d.user, &d.events.lock().expect("lock")))
        })
        .await;
        self.stop_devices.cancel();
        let (mut delivered, mut gaps, mut resumed) = (0, 0, 0);
        for device in std::mem::take(&mut self.devices) {
            let Device { user: u, node, events, connections, task } = device;
            task.await.expect("a device");
            let events = events.lock().expect("lock").clone();
            let p = positions(&events);
            let dense = p.windows(2).all(|w| w[1] == w[0] + 1);
            assert!(dense, "user {u}'s device on node {node}: feed positions with a gap or twice: {p:?}");
            if fault_node == Some(node) {
                assert!(connections.load(Ordering::Relaxed) >= 2, "user {u}'s device on node {node} reconnected");
                resumed += 1;
            }
            for c in conversations_of(u) {
                let seqs = message_seqs(&events, conversations[c].0);
                delivered += seqs.len();
                let distinct: BTreeSet<u64> = seqs.iter().copied().collect();
                duplicated += seqs.len() - distinct.len();
                gaps += (1..=lasts[c]).filter(|s| !distinct.contains(s)).count();
                reordered += seqs.windows(2).filter(|w| w[1] <= w[0]).count();
                // The same message under each seq as in the store.
                let here = json!(conversations[c].0);
                for e in events
                    .iter()
                    .filter(|e| e["event"]["kind"] == "message" && e["event"]["message"]["conversation_id"] == here)
                {
                    let seq = e["event"]["message"]["seq"].as_u64().expect("seq");
                    let body = e["event"]["message"]["body"].as_str().expect("body");
                    assert_eq!(
                        histories[c][seq as usize - 1].1,
                        body,
                        "user {u}'s device: seq {seq} of conversation {c}"
                    );
                }
            }
        }
        eprintln!(
            "fault ({name}): acked={} stored={stored} delivered={delivered} lost={lost} duplicated={duplicated} \
             reordered={reordered} gaps={gaps} retried={retried} longest_pause={:.1}s ({} nodes, {} clients, {} \
             conversations, {resumed} devices resumed elsewhere; settled after {:.1}s, acks before the fault {}, \
             test {:.0}s)",
            acked.len(),
            longest_pause.as_secs_f64(),
            self.nodes.len(),
            before_fault.len(),
            self.conversations.len(),
            self.settled.as_secs_f64(),
            before_fault.iter().sum::<usize>(),
            self.started.elapsed().as_secs_f64(),
        );
        assert_eq!((lost, duplicated, reordered, gaps), (0, 0, 0, 0), "lost, duplicated, reordered, gaps");
        assert_eq!(stored, acked.len(), "every acknowledged send stored once");
        retried
    }

    /// Waits until every client has had [`ACKS_AROUND_A_FAULT`] sends acknowledged past `since` (false), or
    /// until the broker's current run has lost its storage task (true; see `OwnBroker::storage_died`), for at
    /// most 90 s (false: `finish` then fails on its own wait). The broker's first warnings, errors and panics
    /// are printed when it died.
    async fn broker_storage_died_after_the_restart(&self, since: &[usize]) -> bool {
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            if self.acked_past(since) {
                return false;
            }
            if self.broker.storage_died() {
                let errors = self.broker.errors_of_this_run(12);
                eprintln!("the restarted broker lost its storage task; its first warnings and errors:\n{errors:#?}");
                return true;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        false
    }

    /// What every client has had acknowledged so far (pass it to [`World::finish`]).
    pub fn acks_now(&self) -> Vec<usize> {
        self.acks()
    }
}

impl Drop for World {
    /// A failed test also shows the end of the broker's log: the nodes' own output says only that the broker
    /// refused or failed, and the broker's temp dir goes with the test.
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Its first errors say what went wrong; its last lines, how it ended.
            let errors = self.broker.errors_of_this_run(20);
            eprintln!("the broker's first {} warnings and errors (of its last start):", errors.len());
            for line in errors {
                eprintln!("  {line}");
            }
            let log = self.broker.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("its last lines:");
            for line in &lines[lines.len().saturating_sub(10)..] {
                eprintln!("  {line}");
            }
        }
    }
}

/// What a load lane has had acknowledged, in send order.
type Acks = Arc<std::sync::Mutex<Vec<Acked>>>;

/// One acknowledged send of a load lane.
#[derive(Clone, Debug)]
struct Acked {
    /// The message's own text (its body), the same on every try.
    text: String,
    seq: u64,
    at: Instant,
    /// Tries it took (1: acknowledged at the first).
    tries: u32,
}

/// Who sends where, in [`sending_lane`].
struct Lane {
    nodes: Vec<String>,
    home: usize,
    token: String,
    conversation: ConversationId,
    name: String,
}

/// A client sending into `conversation` through `nodes[home]`, one message at a time, until `stop`: each send
/// is retried with the same client_msg_id on `unavailable`, a timeout or a failed connection (then through
/// the next node), as a real client does, until it is acknowledged.
async fn sending_lane(lane: Lane, http: reqwest::Client, acks: Acks, stop: Arc<AtomicBool>) {
    let Lane { nodes, home, token, conversation, name } = lane;
    let mut at = home;
    for n in 0.. {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let text = format!("{name}-{n}");
        let started = Instant::now();
        let mut tries = 0;
        let seq = loop {
            tries += 1;
            assert!(started.elapsed() < Duration::from_secs(90), "{text}: not acknowledged after {tries} tries");
            let sent = http
                .post(format!("{}/api/v1/conversations/{conversation}/messages", nodes[at]))
                .bearer_auth(&token)
                .json(&json!({"client_msg_id": text, "body": text}))
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => {
                    let ack: Value = response.json().await.expect("an ack");
                    break ack["seq"].as_u64().expect("seq");
                }
                Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE => {}
                Ok(response) => {
                    let status = response.status();
                    panic!("{text}: {status} {}", response.text().await.unwrap_or_default());
                }
                // No answer in time: the same node again.
                Err(e) if e.is_timeout() => {}
                // The node is gone (refused, reset): the next one.
                Err(_) => at = (at + 1) % nodes.len(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        acks.lock().expect("lock").push(Acked { text, seq, at: Instant::now(), tries });
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A WebSocket device of `token`'s user, on `nodes[at]` first: it records every event frame, and when its
/// connection ends it connects again (after the delay of a `reconnect` frame, if it got one), to the next
/// node when its own refuses, and resumes after the last position it got, as a real client does. Runs until
/// `stop`.
async fn listening_device(
    nodes: Vec<String>,
    mut at: usize,
    token: String,
    events: Arc<std::sync::Mutex<Vec<Value>>>,
    connections: Arc<AtomicU32>,
    stop: CancellationToken,
) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut since = 0u64;
    let mut pause = Duration::ZERO;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = Duration::from_millis(100);
        let url = format!("{}/ws?v=1&token={token}", nodes[at].replace("http://", "ws://"));
        let Ok((mut socket, _)) = tokio_tungstenite::connect_async(url).await else {
            at = (at + 1) % nodes.len();
            continue;
        };
        connections.fetch_add(1, Ordering::Relaxed);
        let sync = json!({"type": "sync", "since": since}).to_string();
        if socket.send(Message::text(sync)).await.is_err() {
            continue;
        }
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => return,
                message = socket.next() => message,
            };
            let Some(Ok(message)) = message else { break };
            let Message::Text(text) = message else { continue };
            let frame: Value = serde_json::from_str(&text).expect("JSON frame");
            assert_ne!(frame["type"], "resync", "a device told to resync: {frame}");
            match frame["type"].as_str() {
                Some("event") => {
                    since = frame["pos"].as_u64().expect("pos");
                    events.lock().expect("lock").push(frame);
                }
                // A draining node: come back after the jitter it asks for.
                Some("reconnect") => pause = Duration::from_millis(frame["after_ms"].as_u64().unwrap_or(0)),
                _ => {}
            }
        }
    }
}

/// Issues 19 and 20, faults: one of three nodes killed with SIGKILL while it owns partitions, under load. The
/// others take its partitions (after its Kafka session expired) and every conversation goes on; sends that
/// waited on it are retried by their clients and stored once; its devices resume on another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_of_three_nodes_killed_under_load_loses_nothing() {
    let Some(mut world) = World::start(3).await else { return };
    let victim_owned = world.owned_by(2).await;
    let before = world.acks_now();
    let takeover = world.kill_9(2).await;
    eprintln!("the killed node owned {victim_owned} of {PARTITIONS} partitions; all owned again {takeover:?} after");
    let retried = world.finish("kill -9 of one of three nodes", before).await;
    assert!(retried > 0, "some sends waited on the dead node and were retried");
}

/// Issue 20: one of three nodes drained with SIGTERM under load. It stops taking connections, tells its
/// devices to reconnect (with jitter), hands its partitions over as it leaves the group and exits cleanly
/// within its 30 s grace period; its clients go on through the other nodes with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_of_three_nodes_drained_with_sigterm_hands_everything_over() {
    let Some(mut world) = World::start(3).await else { return };
    let before = world.acks_now();
    let took = world.terminate(2).await;
    eprintln!("the drained node exited {took:?} after SIGTERM");
    assert!(took < Duration::from_secs(30), "the drain took {took:?}, beyond the 30 s grace period");
    world.finish("SIGTERM drain of one of three nodes", before).await;
}

/// Issue 20: a third node joining two under load takes a share of the partitions and serves users (a device
/// of a user homed elsewhere connects to it and gets the whole feed); nothing is lost or reordered while the
/// partitions move.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_joining_under_load_takes_partitions_and_users() {
    let Some(mut world) = World::start(2).await else { return };
    let before = world.acks_now();
    world.service_fault();
    let joined = world.add_node();
    let took = world.wait_owned("the new node owns partitions", |owned| owned[joined] >= 1.0).await;
    eprintln!("the joining node owned partitions {took:?} after it started");
    world.add_device(0, joined).await;
    world.finish("a third node joining two", before).await;
}

/// Issue 20: Redis (the registry, delivery between nodes, the L2 cache) killed under load and started again
/// empty: the nodes write their registrations again, and every device catches up on what it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restarted_empty_under_load_loses_nothing() {
    let Some(mut world) = World::start(3).await else { return };
    let before = world.acks_now();
    world.service_fault();
    world.redis.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    world.redis.restart().await;
    world.finish("Redis killed and restarted empty", before).await;
}

/// Issues 19 and 20: the broker killed under load and started again: producers retry, nothing acknowledged is
/// lost and nothing is stored twice.
///
/// tansu 0.6 sometimes breaks itself on such a restart: a request from a producer it knew before the kill
/// panics inside its storage task ("more or less than one row", `tansu-storage` lite.rs), the task ends, and
/// from then on the broker answers every produce with `UNKNOWN_SERVER_ERROR` whatever the clients do (Herald
/// answers those sends `unavailable`, and the clients' retries fail the same way), and restarting it again
/// brings the same panic back (tried here: three restarts, 11 s apart, each died within a second). Such an
/// attempt says nothing about Herald, so it is dropped, reported, and the whole scenario runs again on a
/// fresh cluster, at most four times (3 of 11 attempts here met it); every attempt that gets past the restart
/// is checked in full. A Kafka broker answers a failed request with an error code and serves the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_broker_restarted_under_load_loses_nothing() {
    const ATTEMPTS: u32 = 4;
    for attempt in 1..=ATTEMPTS {
        let Some(mut world) = World::start(3).await else { return };
        let before = world.acks_now();
        world.service_fault();
        world.broker.kill();
        tokio::time::sleep(Duration::from_secs(2)).await;
        world.broker.restart().await;
        if world.broker_storage_died_after_the_restart(&before).await {
            eprintln!("attempt {attempt} of {ATTEMPTS}: the broker broke itself on the restart (tansu 0.6); again");
            continue;
        }
        world.finish("the broker killed and restarted", before).await;
        return;
    }
    panic!("the restarted broker lost its storage task in each of {ATTEMPTS} attempts");
}

/// Issue 20: the stores' streaming replica stopped (a crash) under load and started again: reads go to the
/// primary meanwhile, and the replica serves again once it has caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_postgres_replica_restarted_under_load_loses_nothing() {
    let Some(mut world) = World::start_replicated(3).await else { return };
    let before = world.acks_now();
    world.service_fault();
    tokio::task::block_in_place(|| world.replica().stop("immediate"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::task::block_in_place(|| world.replica().start());
    world.finish("the PostgreSQL replica crashed and restarted", before).await;
}
