//! A fleet of connected members in rooms, and timed phases of sending into them. `groups`, `direct` and
//! `saturate` are all fleets: rooms of M members (a direct conversation is a room of two where both send).
//!
//! Every member's connection is read by its own task, which checks that its room's seqs arrive as
//! 1, 2, 3 … (no gap, no duplicate) and records send-to-receive latency from the send time carried in the
//! body (the bench's own clock). On a cluster the members of every room are spread over the nodes, and the
//! body also names the sender's node, so each delivery is recorded as same-node or cross-node.

use super::client::{Socket, connect_live, group, http, register_users};
use super::latency::{ByRoute, Latency, RouteLatency};
use super::lock;
use super::node::Target;
use super::per_second::{PerSecond, Second};
use anyhow::{Context, bail};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use herald_proto::ConversationId;
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How often a sender wakes to send what is due.
const TICK_MS: u64 = 10;
/// How often a member that only listens says it is still there.
const KEEP_ALIVE: Duration = Duration::from_secs(240);
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// The traffic of `groups` and `soak`: rooms of members, each member on its own connection, and one sender
/// per room.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct Traffic {
    #[arg(long, default_value_t = 20)]
    pub rooms: usize,
    /// Members per room, each with its own connection.
    #[arg(long, default_value_t = 50)]
    pub members: usize,
    /// Messages per second, all rooms together.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
}

/// What one member's reader has seen.
struct Seen {
    /// The node the member is connected to.
    node: usize,
    latencies: Mutex<ByRoute>,
    last_seq: AtomicU64,
    acks: AtomicU64,
}

struct Sender {
    room: usize,
    node: usize,
    sink: SplitSink<Socket, Message>,
    sent: u64,
}

pub struct Fleet {
    members: usize,
    /// Nodes the members are spread over (1: one server).
    nodes: usize,
    clock: Instant,
    senders: Vec<Sender>,
    seen: Vec<Arc<Seen>>,
    received: Arc<AtomicU64>,
    per_second: Arc<PerSecond>,
    stop: CancellationToken,
    readers: Vec<JoinHandle<anyhow::Result<()>>>,
    /// Messages sent so far into each room.
    sent_per_room: Vec<u64>,
    conversations: Vec<ConversationId>,
}

/// The outcome of one phase.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Phase {
    pub target_messages_per_second: u64,
    pub messages_sent: u64,
    pub acks: u64,
    pub deliveries: u64,
    pub seconds: f64,
    pub deliveries_per_second: f64,
    pub acked_per_second: f64,
    /// Every delivery.
    #[serde(flatten)]
    pub latency: Latency,
    /// Deliveries to a member on the sender's node (the sender's own copy included); on a cluster only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub same_node: Option<RouteLatency>,
    /// Deliveries to a member on another node than the sender's; on a cluster only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cross_node: Option<RouteLatency>,
    pub server_cpu_percent: Option<f64>,
    /// Latency by the second deliveries arrived in.
    pub per_second: Vec<Second>,
}

impl Phase {
    /// `("same", …)` and `("cross", …)`, when the fleet spanned several nodes.
    pub fn routes(&self) -> impl Iterator<Item = (&'static str, &RouteLatency)> {
        [("same", &self.same_node), ("cross", &self.cross_node)]
            .into_iter()
            .filter_map(|(route, figures)| Some((route, figures.as_ref()?)))
    }
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default, borrow)]
    event: Option<FrameEvent<'a>>,
}

#[derive(Deserialize)]
struct FrameEvent<'a> {
    #[serde(default, borrow)]
    message: Option<FrameMessage<'a>>,
}

#[derive(Deserialize)]
struct FrameMessage<'a> {
    seq: u64,
    #[serde(borrow)]
    body: &'a str,
}

/// The node member `member` of room `room` connects to. Consecutive members go to consecutive nodes, so
/// every room with at least as many members as there are nodes has members on each; the room's number
/// shifts the start, so the rooms' first members (the senders) are spread over the nodes too instead of all
/// loading the first.
fn node_of(room: usize, member: usize, nodes: usize) -> usize {
    (room + member) % nodes
}

/// A message's body: when it was sent (µs on the bench's clock) and from which node.
fn stamp(sent_us: u64, node: usize) -> String {
    format!("t{sent_us}@{node}")
}

/// The send time and sender's node of a body made by [`stamp`].
fn read_stamp(body: &str) -> Option<(u64, usize)> {
    let (sent_us, node) = body.strip_prefix('t')?.split_once('@')?;
    Some((sent_us.parse().ok()?, node.parse().ok()?))
}

impl Fleet {
    /// Registers `rooms × members` users, makes each room a conversation (a direct one for two members),
    /// connects everyone (spread over the target's nodes, see [`node_of`]), and picks the first
    /// `senders_per_room` members of each room as senders.
    pub async fn assemble(
        target: &Target,
        rooms: usize,
        members: usize,
        senders_per_room: usize,
    ) -> anyhow::Result<Fleet> {
        Self::assemble_with(target, rooms, members, senders_per_room, &[]).await
    }

    /// [`assemble`](Self::assemble), and `outsiders` made members too (outsider k of room k mod rooms) when the
    /// rooms are created, so that no membership message joins the rooms' streams. The fleet neither connects
    /// them nor counts their deliveries: they are another scenario's users (a mixed `soak`'s churn).
    pub async fn assemble_with(
        target: &Target,
        rooms: usize,
        members: usize,
        senders_per_room: usize,
        outsiders: &[herald_proto::UserId],
    ) -> anyhow::Result<Fleet> {
        if rooms == 0 || members < 2 || senders_per_room == 0 || senders_per_room > members {
            bail!("need rooms >= 1, members >= 2 and 1 <= senders per room <= members");
        }
        let http = http()?;
        let users = rooms * members;
        eprintln!("registering {users} users ...");
        let sessions = register_users(&http, target.base(), users, 32).await?;
        let mut conversations = Vec::with_capacity(rooms);
        if members == 2 && !outsiders.is_empty() {
            bail!("a direct conversation has no room for other members");
        }
        for (r, room) in sessions.chunks(members).enumerate() {
            let mut others: Vec<_> = room[1..].iter().map(|s| s.user.id).collect();
            others.extend(outsiders.iter().skip(r).step_by(rooms));
            let id = if members == 2 {
                direct(&http, target.base(), &room[0], others[0]).await?
            } else {
                group(&http, target.base(), &room[0], &others).await?
            };
            conversations.push(id);
        }
        eprintln!("connecting {users} members ...");
        let clock = Instant::now();
        let received = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let nodes = target.nodes();
        let mut fleet = Fleet {
            members,
            nodes,
            clock,
            senders: Vec::new(),
            seen: Vec::with_capacity(users),
            received: received.clone(),
            per_second: Arc::new(PerSecond::new()),
            stop: stop.clone(),
            readers: Vec::with_capacity(users),
            sent_per_room: vec![0; rooms],
            conversations: Vec::new(),
        };
        for (i, session) in sessions.iter().enumerate() {
            let (room, member) = (i / members, i % members);
            let node = node_of(room, member, nodes);
            let socket = connect_live(&target.node_ws_base(node), &session.access_token, session.user.id).await?;
            let (sink, stream) = socket.split();
            if member < senders_per_room {
                fleet.senders.push(Sender { room, node, sink, sent: 0 });
            } else {
                tokio::spawn(keep_alive(sink, stop.clone()));
            }
            let seen = Arc::new(Seen {
                node,
                latencies: Mutex::new(ByRoute::new()?),
                last_seq: AtomicU64::new(0),
                acks: AtomicU64::new(0),
            });
            fleet.seen.push(seen.clone());
            let counters = (received.clone(), fleet.per_second.clone());
            fleet.readers.push(tokio::spawn(read(stream, seen, clock, counters, stop.clone())));
        }
        // Keep the conversation ids for the senders.
        fleet.conversations = conversations;
        Ok(fleet)
    }

    /// The rooms' conversations, in room order.
    pub fn conversations(&self) -> &[ConversationId] {
        &self.conversations
    }

    /// Sends `rate` messages per second (all senders together) for `seconds`, waits for every delivery,
    /// and reports what this phase saw.
    pub async fn phase(&mut self, target: &Target, rate: u64, seconds: u64) -> anyhow::Result<Phase> {
        for seen in &self.seen {
            lock(&seen.latencies).reset();
        }
        self.per_second.restart(self.clock.elapsed().as_micros() as u64);
        let received_before = self.received.load(Ordering::Relaxed);
        let acks_before: u64 = self.seen.iter().map(|s| s.acks.load(Ordering::Relaxed)).sum();
        let per_sender = rate as f64 / self.senders.len() as f64;
        let cpu_start = target.cpu_seconds();
        let started = Instant::now();
        let deadline = started + Duration::from_secs(seconds);
        let clock = self.clock;
        let count = self.senders.len();
        let tasks: Vec<_> = std::mem::take(&mut self.senders)
            .into_iter()
            .enumerate()
            .map(|(n, mut sender)| {
                let conversation = self.conversations[sender.room];
                // Senders are spread evenly over time, so the offered load is a steady rate rather than
                // every sender firing in the same instant (which measures queueing behind bursts): each one
                // starts its schedule at its own fraction of a period, and ticks at its own offset within
                // the 10 ms tick.
                let phase = n as f64 / count as f64;
                let tick_offset = Duration::from_millis(n as u64 % TICK_MS);
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval_at(
                        tokio::time::Instant::from_std(started + tick_offset),
                        Duration::from_millis(TICK_MS),
                    );
                    let mut sent_now = 0u64;
                    while Instant::now() < deadline {
                        tick.tick().await;
                        let due = (started.elapsed().as_secs_f64() * per_sender + phase) as u64;
                        while sent_now < due {
                            let t = clock.elapsed().as_micros() as u64;
                            let id = format!("s{n}-{}", sender.sent);
                            let frame = format!(
                                r#"{{"type":"send","id":"{id}","conversation_id":"{conversation}","client_msg_id":"{}","body":"{}"}}"#,
                                uuid::Uuid::now_v7(),
                                stamp(t, sender.node)
                            );
                            sender.sink.feed(Message::text(frame)).await?;
                            sender.sent += 1;
                            sent_now += 1;
                        }
                        sender.sink.flush().await?;
                    }
                    anyhow::Ok((sender, sent_now))
                })
            })
            .collect();
        let mut sent = 0;
        for task in tasks {
            let (sender, n) = task.await.context("sender")??;
            self.sent_per_room[sender.room] += n;
            sent += n;
            self.senders.push(sender);
        }
        let send_seconds = started.elapsed().as_secs_f64();
        let expected: u64 = self.sent_per_room.iter().map(|n| n * self.members as u64).sum();
        let drain = Instant::now() + Duration::from_secs(30);
        while self.received.load(Ordering::Relaxed) < expected && Instant::now() < drain {
            self.check_readers().await?;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.check_readers().await?;
        let got = self.received.load(Ordering::Relaxed);
        if got < expected {
            bail!("{} deliveries missing 30 s after sending stopped", expected - got);
        }
        let seconds_total = started.elapsed().as_secs_f64();
        let cpu_end = target.cpu_seconds();
        let mut all = ByRoute::new()?;
        for seen in &self.seen {
            all.add(&lock(&seen.latencies))?;
        }
        let acks: u64 = self.seen.iter().map(|s| s.acks.load(Ordering::Relaxed)).sum::<u64>() - acks_before;
        let deliveries = got - received_before;
        let cluster = self.nodes > 1;
        Ok(Phase {
            target_messages_per_second: rate,
            messages_sent: sent,
            acks,
            deliveries,
            seconds: send_seconds,
            deliveries_per_second: deliveries as f64 / seconds_total.max(send_seconds),
            acked_per_second: acks as f64 / seconds_total.max(send_seconds),
            latency: all.overall()?,
            same_node: cluster.then(|| all.same_node()),
            cross_node: cluster.then(|| all.cross_node()),
            server_cpu_percent: match (cpu_start, cpu_end) {
                (Some(s), Some(e)) => Some(100.0 * (e - s) / seconds_total),
                _ => None,
            },
            per_second: self.per_second.report(),
        })
    }

    /// Fails if a reader saw something wrong (out of order, a gap, a duplicate, an error frame, a closed
    /// connection), with what it saw, so that a failed run says why.
    async fn check_readers(&mut self) -> anyhow::Result<()> {
        let Some(i) = self.readers.iter().position(|r| r.is_finished()) else { return Ok(()) };
        self.readers.swap_remove(i).await.context("reader")?.context("a member's connection")?;
        bail!("a member's reader stopped before the run ended")
    }

    /// Stops the readers and checks every member received every message of its room.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        self.stop.cancel();
        for reader in std::mem::take(&mut self.readers) {
            reader.await.context("reader")??;
        }
        for (i, seen) in self.seen.iter().enumerate() {
            let want = self.sent_per_room[i / self.members];
            let got = seen.last_seq.load(Ordering::Relaxed);
            if got != want {
                bail!("member {i} received {got} of the {want} messages of its room");
            }
        }
        for mut sender in self.senders {
            let _ = sender.sink.close().await;
        }
        Ok(())
    }
}

/// A member that only listens still sends a `ping` now and then, as the protocol asks of a client that may stay
/// silent for the idle timeout (10 minutes): runs longer than that (`soak`) would otherwise lose every listener.
async fn keep_alive(mut sink: SplitSink<Socket, Message>, stop: CancellationToken) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if sink.send(Message::text(r#"{"type":"ping","id":"keep-alive"}"#)).await.is_err() {
                    return;
                }
            }
            () = stop.cancelled() => return,
        }
    }
}

async fn read(
    mut stream: SplitStream<Socket>,
    seen: Arc<Seen>,
    clock: Instant,
    (received, per_second): (Arc<AtomicU64>, Arc<PerSecond>),
    stop: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let message = tokio::select! {
            message = stream.next() => message,
            () = stop.cancelled() => return Ok(()),
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("connection failed: {e}"),
            None => bail!("connection closed by the server"),
        };
        let frame: Frame = serde_json::from_str(&text)?;
        match frame.kind {
            "ack" => {
                seen.acks.fetch_add(1, Ordering::Relaxed);
            }
            "error" => bail!("error frame: {text}"),
            "event" => {
                let Some(m) = frame.event.and_then(|e| e.message) else { continue };
                let last = seen.last_seq.load(Ordering::Relaxed);
                if m.seq != last + 1 {
                    bail!("out of order: seq {} after {last}", m.seq);
                }
                seen.last_seq.store(m.seq, Ordering::Relaxed);
                let (sent_us, from) = read_stamp(m.body).with_context(|| format!("body {:?}", m.body))?;
                let now_us = clock.elapsed().as_micros() as u64;
                lock(&seen.latencies).record(from == seen.node, now_us.saturating_sub(sent_us))?;
                per_second.record(now_us, now_us.saturating_sub(sent_us))?;
                received.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

async fn direct(
    http: &reqwest::Client,
    base: &str,
    a: &herald_proto::Session,
    b: herald_proto::UserId,
) -> anyhow::Result<ConversationId> {
    let details: herald_proto::ConversationDetails = super::client::expect_json(
        http.post(format!("{base}/api/v1/conversations"))
            .bearer_auth(&a.access_token)
            .json(&herald_proto::CreateConversation::Direct { user_id: b })
            .send()
            .await?,
    )
    .await?;
    Ok(details.conversation.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_room_has_members_on_every_node_and_senders_are_spread() {
        let nodes = 3;
        for room in 0..6 {
            let mut on: Vec<usize> = (0..nodes).map(|member| node_of(room, member, nodes)).collect();
            on.sort();
            assert_eq!(on, vec![0, 1, 2], "room {room}");
        }
        let senders: Vec<usize> = (0..6).map(|room| node_of(room, 0, nodes)).collect();
        assert_eq!(senders, vec![0, 1, 2, 0, 1, 2]);
        assert!((0..10).all(|member| node_of(4, member, 1) == 0), "one server: everyone on it");
    }

    #[test]
    fn a_stamp_reads_back() {
        assert_eq!(read_stamp(&stamp(1_234_567, 1)), Some((1_234_567, 1)));
        assert_eq!(read_stamp("t12"), None);
        assert_eq!(read_stamp("hello@1"), None);
    }
}
