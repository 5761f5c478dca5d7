//! `crowd`: one big group (10,000 members by default) with a small conversation beside it, through what
//! brings big communities down: every member connecting within seconds, messages flowing to all of them, and
//! every connection dropping and coming back at the same instant.
//!
//! Reports the time until everyone was connected and synced, what presence cost (announcements and the
//! frames they were offered as), send-to-receive latency in the big group and in the small conversation apart
//! (the small one's members are in the big group too, so their sockets carry both), and how many connections
//! the server closed as too slow: every member here reads as fast as it can, so any such close fails the run.
//! Every member checks that each conversation's seqs arrive 1, 2, 3 … with no gap or duplicate, across its
//! reconnect, and that it ends with every message.

use super::client::{Socket, connect_retrying, expect_json, group, http, metric_sum, next_text, register_users};
use super::latency::{Latency, histogram};
use super::lock;
use super::node::Target;
use anyhow::{Context, bail};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use herald_proto::{ConversationId, SendMessage, Session, UserId};
use serde::Deserialize;
use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Latency histograms are sharded by member, so 10,000 readers do not queue on one lock.
const SHARDS: usize = 64;
/// How often a sender wakes to send what is due.
const TICK: Duration = Duration::from_millis(10);
/// Messages sent into the big group (and one into the small conversation) while everyone is away.
const MISSED: u64 = 2;

#[derive(clap::Args, Debug)]
pub struct CrowdArgs {
    /// Members of the big group, each on its own connection (one bench process holds up to ~19,000).
    #[arg(long, default_value_t = 10_000)]
    pub members: usize,
    /// Seconds over which every member connects (the mass connect).
    #[arg(long, default_value_t = 5.0)]
    pub connect_over: f64,
    /// Messages per second into the big group, each delivered to every member.
    #[arg(long, default_value_t = 5)]
    pub rate: u64,
    /// Members of the small conversation, taken from the big group (see `--small-outside`).
    #[arg(long, default_value_t = 10)]
    pub small_members: usize,
    /// Make the small conversation's members users outside the big group: their sockets then carry only their
    /// own conversation, and its latency shows what the big group costs the rest of the node.
    #[arg(long)]
    pub small_outside: bool,
    /// Messages per second into the small conversation.
    #[arg(long, default_value_t = 20)]
    pub small_rate: u64,
    /// Seconds of traffic before the reconnect storm, and again after it.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
}

impl CrowdArgs {
    /// The users of the small conversation: members 1 to `small_members` of the big group, or as many users
    /// after the big group's.
    fn small_range(&self) -> std::ops::Range<usize> {
        if self.small_outside { self.members..self.members + self.small_members } else { 1..self.small_members + 1 }
    }
}

/// Everyone arriving: at the mass connect, or all at once after the storm.
#[derive(Debug, serde::Serialize)]
pub struct Arrival {
    pub seconds_until_all_synced: f64,
    /// From a member's first connect attempt to its `synced`.
    pub connect_ms_p50: f64,
    pub connect_ms_p99: f64,
    pub refused_handshakes_retried: u64,
}

/// Messages flowing while everyone is connected.
#[derive(Debug, serde::Serialize)]
pub struct Flow {
    pub big_sent: u64,
    pub small_sent: u64,
    pub deliveries_per_second: f64,
    pub big: Latency,
    pub small: Latency,
    pub server_cpu_percent: Option<f64>,
}

#[derive(Debug, serde::Serialize)]
pub struct CrowdReport {
    pub members: usize,
    pub small_members: usize,
    /// Whether the small conversation's members are outside the big group.
    pub small_outside: bool,
    pub mass_connect: Arrival,
    /// Presence changes announced, and the recipients they were offered to, over the whole run.
    pub presence_announcements: u64,
    pub presence_recipients: u64,
    /// Presence frames the members received.
    pub presence_frames_received: u64,
    pub flow: Flow,
    pub storm: Arrival,
    pub flow_after_storm: Flow,
    /// Connections the server closed as too slow (4008) over the run: 0, or the run failed.
    pub slow_consumer_disconnects: u64,
    /// Typing and presence frames the server dropped for a half-full outbox.
    pub ephemeral_dropped: u64,
}

impl CrowdReport {
    pub fn table(&self) -> String {
        let mut out = format!(
            "scenario crowd: one group of {} members, a conversation of {} {} beside it\n\
             | phase | all synced after s | connect p50 ms | connect p99 ms | handshakes refused and retried |\n\
             |---|---|---|---|---|\n",
            self.members,
            self.small_members,
            if self.small_outside { "other users" } else { "of them" }
        );
        for (name, a) in [("mass connect", &self.mass_connect), ("reconnect storm", &self.storm)] {
            out.push_str(&format!(
                "| {name} | {:.2} | {:.1} | {:.1} | {} |\n",
                a.seconds_until_all_synced, a.connect_ms_p50, a.connect_ms_p99, a.refused_handshakes_retried
            ));
        }
        out.push_str(
            "\n| phase | conversation | sent | p50 ms | p99 ms | p99.9 ms | max ms | deliveries/s (both) | server CPU % |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        for (name, f) in [("before the storm", &self.flow), ("after the storm", &self.flow_after_storm)] {
            for (which, sent, l) in [("big", f.big_sent, &f.big), ("small", f.small_sent, &f.small)] {
                out.push_str(&format!(
                    "| {name} | {which} | {sent} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {} |\n",
                    l.p50,
                    l.p99,
                    l.p999,
                    l.max,
                    f.deliveries_per_second,
                    f.server_cpu_percent.map_or("n/a".into(), |c| format!("{c:.0}"))
                ));
            }
        }
        let per_change = self.presence_recipients as f64 / self.presence_announcements.max(1) as f64;
        out.push_str(&format!(
            "\npresence: {} announcements to {} recipients ({per_change:.1} per change), {} frames received; \
             slow-consumer disconnects: {}; ephemeral frames dropped: {}",
            self.presence_announcements,
            self.presence_recipients,
            self.presence_frames_received,
            self.slow_consumer_disconnects,
            self.ephemeral_dropped
        ));
        out
    }
}

impl CrowdReport {
    /// Send-to-receive p50 and p99 of both conversations, before and after the storm.
    pub fn chart(&self) -> String {
        let mut bars = Vec::new();
        for (phase, f) in [("", &self.flow), ("after storm: ", &self.flow_after_storm)] {
            for (which, l) in [("big", &f.big), ("small", &f.small)] {
                bars.push((format!("{phase}{which} p50"), l.p50));
                bars.push((format!("{phase}{which} p99"), l.p99));
            }
        }
        crate::chart::bars(
            &format!(
                "crowd: a group of {} members and a conversation of {} beside it",
                self.members, self.small_members
            ),
            "send to receive, ms",
            &bars,
        )
    }
}

/// One member's view, kept across its reconnect.
struct Member {
    token: String,
    user: UserId,
    /// The newest feed position it received: where it resumes from.
    pos: AtomicU64,
    big_seq: AtomicU64,
    small_seq: AtomicU64,
}

struct Shared {
    clock: Instant,
    big: String,
    small: String,
    big_received: AtomicU64,
    small_received: AtomicU64,
    presence_frames: AtomicU64,
    too_slow: AtomicU64,
    big_latency: Vec<Mutex<Histogram<u64>>>,
    small_latency: Vec<Mutex<Histogram<u64>>>,
    /// Per arrival: each member's time to `synced`, and the latest `synced` after the arrival began.
    connect_times: Mutex<Histogram<u64>>,
    last_synced_us: AtomicU64,
}

impl Shared {
    fn reset_latency(&self) {
        for h in self.big_latency.iter().chain(&self.small_latency) {
            lock(h).reset();
        }
    }

    fn latency(shards: &[Mutex<Histogram<u64>>]) -> anyhow::Result<Latency> {
        let mut all = histogram()?;
        for h in shards {
            all.add(&*lock(h))?;
        }
        Ok(Latency::of(&all))
    }
}

/// The connections of the members, while they are connected.
struct Crowd {
    members: Vec<Arc<Member>>,
    sinks: Vec<Option<SplitSink<Socket, Message>>>,
    readers: Vec<JoinHandle<anyhow::Result<()>>>,
    stop: CancellationToken,
    big_sent: u64,
    small_sent: u64,
}

pub async fn run(target: &Target, args: &CrowdArgs) -> anyhow::Result<CrowdReport> {
    if args.members < 3 || args.small_members < 2 || (!args.small_outside && args.small_members >= args.members) {
        bail!("need --members >= 3, --small-members >= 2, and fewer small members than members unless outside");
    }
    let http = http()?;
    let base = target.base();
    let small_range = args.small_range();
    let users = args.members.max(small_range.end);
    eprintln!("registering {users} users ...");
    let sessions = register_users(&http, base, users, 32).await?;
    eprintln!("creating the group of {} and a conversation of {} ...", args.members, args.small_members);
    let everyone: Vec<_> = sessions[1..args.members].iter().map(|s| s.user.id).collect();
    let big = group(&http, base, &sessions[0], &everyone).await?;
    let small_others: Vec<_> = sessions[small_range.start + 1..small_range.end].iter().map(|s| s.user.id).collect();
    let small = group(&http, base, &sessions[small_range.start], &small_others).await?;
    let shared = Arc::new(Shared {
        clock: Instant::now(),
        big: big.to_string(),
        small: small.to_string(),
        big_received: AtomicU64::new(0),
        small_received: AtomicU64::new(0),
        presence_frames: AtomicU64::new(0),
        too_slow: AtomicU64::new(0),
        big_latency: (0..SHARDS).map(|_| histogram().map(Mutex::new)).collect::<anyhow::Result<_>>()?,
        small_latency: (0..SHARDS).map(|_| histogram().map(Mutex::new)).collect::<anyhow::Result<_>>()?,
        connect_times: Mutex::new(histogram()?),
        last_synced_us: AtomicU64::new(0),
    });
    let counters_before = Counters::read(&http, base).await?;
    let members: Vec<Arc<Member>> = sessions
        .iter()
        .map(|s| {
            Arc::new(Member {
                token: s.access_token.clone(),
                user: s.user.id,
                pos: AtomicU64::new(0),
                big_seq: AtomicU64::new(0),
                small_seq: AtomicU64::new(0),
            })
        })
        .collect();
    let mut crowd = Crowd {
        sinks: Vec::new(),
        readers: Vec::new(),
        stop: CancellationToken::new(),
        members,
        big_sent: 0,
        small_sent: 0,
    };

    eprintln!("mass connect: {} members within {} s ...", args.members, args.connect_over);
    let mass_connect = crowd.arrive(target, &shared, args.connect_over, true).await?;
    // Let the presence changes of the arrivals be announced (they are coalesced for a second).
    tokio::time::sleep(Duration::from_secs(2)).await;
    crowd.check_readers().await?;

    eprintln!(
        "sending {} msg/s into the group and {} into the conversation for {} s ...",
        args.rate, args.small_rate, args.duration
    );
    let flow = crowd.flow(target, &shared, args).await?;

    eprintln!("reconnect storm: every connection drops, {MISSED} messages are sent, all come back at once ...");
    crowd.leave().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in 0..MISSED {
        send_over_rest(&http, base, &sessions[0], big, &format!("missed-big-{n}")).await?;
    }
    send_over_rest(&http, base, &sessions[small_range.start], small, "missed-small").await?;
    crowd.big_sent += MISSED;
    crowd.small_sent += 1;
    let storm = crowd.arrive(target, &shared, 0.0, false).await?;
    crowd.wait_for_deliveries(&shared, args.members, args.small_members).await?;

    eprintln!("the same traffic again after the storm ...");
    let flow_after_storm = crowd.flow(target, &shared, args).await?;
    crowd.finish(args.members, small_range).await?;
    let counters = Counters::read(&http, base).await?.minus(&counters_before);
    if counters.slow_consumer_disconnects > 0 {
        bail!("the server closed {} connections as too slow", counters.slow_consumer_disconnects);
    }
    Ok(CrowdReport {
        members: args.members,
        small_members: args.small_members,
        small_outside: args.small_outside,
        mass_connect,
        presence_announcements: counters.presence_announcements,
        presence_recipients: counters.presence_recipients,
        presence_frames_received: shared.presence_frames.load(Ordering::Relaxed),
        flow,
        storm,
        flow_after_storm,
        slow_consumer_disconnects: counters.slow_consumer_disconnects,
        ephemeral_dropped: counters.ephemeral_dropped,
    })
}

impl Crowd {
    /// Connects every member, the i-th `over * i / n` seconds after the start (all at once for 0), each
    /// syncing from its position (`from_now`: from the newest, as a fresh client does). Returns once every
    /// member is synced.
    async fn arrive(
        &mut self,
        target: &Target,
        shared: &Arc<Shared>,
        over: f64,
        from_now: bool,
    ) -> anyhow::Result<Arrival> {
        lock(&shared.connect_times).reset();
        shared.last_synced_us.store(0, Ordering::Relaxed);
        self.stop = CancellationToken::new();
        let started = Instant::now();
        let n = self.members.len();
        let ws = target.ws_base();
        let joins: Vec<_> = self
            .members
            .iter()
            .enumerate()
            .map(|(i, member)| {
                let (member, shared, stop, ws) = (member.clone(), shared.clone(), self.stop.clone(), ws.clone());
                let at = started + Duration::from_secs_f64(over * i as f64 / n as f64);
                tokio::spawn(async move {
                    tokio::time::sleep_until(at.into()).await;
                    join(i, member, shared, stop, &ws, from_now, started).await
                })
            })
            .collect();
        let mut refused = 0;
        for (i, joining) in joins.into_iter().enumerate() {
            let (sink, reader, r) =
                joining.await.context("join")?.with_context(|| format!("member {i} could not connect"))?;
            self.sinks.push(Some(sink));
            self.readers.push(reader);
            refused += r;
        }
        // Every member is connected; wait until each has its `synced`.
        let deadline = Instant::now() + Duration::from_secs(120);
        while lock(&shared.connect_times).len() < n as u64 {
            self.check_readers().await?;
            if Instant::now() > deadline {
                bail!("{} members not synced 2 minutes after connecting", n as u64 - lock(&shared.connect_times).len());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let times = lock(&shared.connect_times);
        Ok(Arrival {
            seconds_until_all_synced: shared.last_synced_us.load(Ordering::Relaxed) as f64 / 1e6,
            connect_ms_p50: times.value_at_quantile(0.5) as f64 / 1000.0,
            connect_ms_p99: times.value_at_quantile(0.99) as f64 / 1000.0,
            refused_handshakes_retried: refused,
        })
    }

    /// Every connection closes at the same moment.
    async fn leave(&mut self) -> anyhow::Result<()> {
        self.check_readers().await?;
        self.stop.cancel();
        for reader in std::mem::take(&mut self.readers) {
            reader.await.context("reader")??;
        }
        self.sinks.clear();
        Ok(())
    }

    /// Member 0 sends into the big group and member 1 into the small conversation, over their sockets, for
    /// `args.duration`; returns once every member received every message.
    async fn flow(&mut self, target: &Target, shared: &Arc<Shared>, args: &CrowdArgs) -> anyhow::Result<Flow> {
        shared.reset_latency();
        let cpu_before = target.cpu_seconds();
        let received_before =
            shared.big_received.load(Ordering::Relaxed) + shared.small_received.load(Ordering::Relaxed);
        let started = Instant::now();
        let until = started + Duration::from_secs(args.duration);
        let small_sender = args.small_range().start;
        let senders = [(0, shared.big.clone(), args.rate), (small_sender, shared.small.clone(), args.small_rate)].map(
            |(member, conversation, rate)| {
                let sink = self.sinks[member].take().context("a sender's socket")?;
                let clock = shared.clock;
                anyhow::Ok(tokio::spawn(send_for(sink, conversation, rate, started, until, clock)))
            },
        );
        let mut sent = [0; 2];
        for (k, (sender, member)) in senders.into_iter().zip([0, small_sender]).enumerate() {
            let (sink, n) = sender?.await.context("sender")??;
            self.sinks[member] = Some(sink);
            sent[k] = n;
        }
        self.big_sent += sent[0];
        self.small_sent += sent[1];
        self.wait_for_deliveries(shared, args.members, args.small_members).await?;
        let seconds = started.elapsed().as_secs_f64();
        let received = shared.big_received.load(Ordering::Relaxed) + shared.small_received.load(Ordering::Relaxed)
            - received_before;
        Ok(Flow {
            big_sent: sent[0],
            small_sent: sent[1],
            deliveries_per_second: received as f64 / seconds,
            big: Shared::latency(&shared.big_latency)?,
            small: Shared::latency(&shared.small_latency)?,
            server_cpu_percent: match (cpu_before, target.cpu_seconds()) {
                (Some(before), Some(after)) => Some(100.0 * (after - before) / seconds),
                _ => None,
            },
        })
    }

    async fn wait_for_deliveries(
        &mut self,
        shared: &Shared,
        members: usize,
        small_members: usize,
    ) -> anyhow::Result<()> {
        let big = self.big_sent * members as u64;
        let small = self.small_sent * small_members as u64;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.check_readers().await?;
            let (b, s) = (shared.big_received.load(Ordering::Relaxed), shared.small_received.load(Ordering::Relaxed));
            if b >= big && s >= small {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "deliveries missing a minute after sending stopped: {} of the group's, {} of the conversation's",
                    big - b,
                    small.saturating_sub(s)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Fails with what a reader saw if one stopped (a gap, an error frame, a close).
    async fn check_readers(&mut self) -> anyhow::Result<()> {
        let Some(i) = self.readers.iter().position(|r| r.is_finished()) else { return Ok(()) };
        self.readers.swap_remove(i).await.context("reader")?.context("a member's connection")?;
        bail!("a member's reader stopped before the run ended")
    }

    /// Closes every connection and checks each user ended with every message of its conversations: the big
    /// group's are users `0..members`, the small conversation's `small_range`.
    async fn finish(mut self, members: usize, small_range: std::ops::Range<usize>) -> anyhow::Result<()> {
        self.leave().await?;
        for (i, m) in self.members.iter().enumerate() {
            let big = m.big_seq.load(Ordering::Relaxed);
            let want = if i < members { self.big_sent } else { 0 };
            if big != want {
                bail!("member {i} received {big} of the group's {want} messages");
            }
            let small = m.small_seq.load(Ordering::Relaxed);
            let want = if small_range.contains(&i) { self.small_sent } else { 0 };
            if small != want {
                bail!("member {i} received {small} of the conversation's {want} messages");
            }
        }
        Ok(())
    }
}

/// Connects one member, syncs it, and starts its reader.
async fn join(
    index: usize,
    member: Arc<Member>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    ws: &str,
    from_now: bool,
    arrival_began: Instant,
) -> anyhow::Result<(SplitSink<Socket, Message>, JoinHandle<anyhow::Result<()>>, u64)> {
    let began = Instant::now();
    let (mut socket, refused) = connect_retrying(&super::client::ws_url(ws, &member.token, member.user)).await?;
    let hello: serde_json::Value = serde_json::from_str(&next_text(&mut socket).await?)?;
    let since = if from_now {
        let pos = hello["pos"].as_u64().context("hello without pos")?;
        member.pos.store(pos, Ordering::Relaxed);
        pos
    } else {
        member.pos.load(Ordering::Relaxed)
    };
    socket.send(Message::text(format!(r#"{{"type":"sync","since":{since}}}"#))).await?;
    let (sink, stream) = socket.split();
    let reader = tokio::spawn(read(stream, index, member, shared, stop, began, arrival_began));
    Ok((sink, reader, refused))
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    pos: Option<u64>,
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
    #[serde(borrow)]
    conversation_id: Cow<'a, str>,
    seq: u64,
    #[serde(borrow)]
    body: Cow<'a, str>,
}

async fn read(
    mut stream: SplitStream<Socket>,
    index: usize,
    member: Arc<Member>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    began: Instant,
    arrival_began: Instant,
) -> anyhow::Result<()> {
    loop {
        let message = tokio::select! {
            message = stream.next() => message,
            () = stop.cancelled() => return Ok(()),
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                if frame.as_ref().is_some_and(|f| u16::from(f.code) == 4008) {
                    shared.too_slow.fetch_add(1, Ordering::Relaxed);
                }
                bail!("member {index} closed by the server: {frame:?}");
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("member {index}'s connection failed: {e}"),
            None => bail!("member {index}'s connection ended"),
        };
        let frame: Frame = serde_json::from_str(&text)?;
        match &*frame.kind {
            "event" => {
                if let Some(pos) = frame.pos {
                    member.pos.store(pos, Ordering::Relaxed);
                }
                let Some(m) = frame.event.and_then(|e| e.message) else { continue };
                let (seen, received, latency) = if m.conversation_id == shared.big {
                    (&member.big_seq, &shared.big_received, &shared.big_latency)
                } else if m.conversation_id == shared.small {
                    (&member.small_seq, &shared.small_received, &shared.small_latency)
                } else {
                    bail!("member {index} got a message of an unknown conversation");
                };
                let last = seen.load(Ordering::Relaxed);
                if m.seq != last + 1 {
                    bail!("member {index}: seq {} after {last}", m.seq);
                }
                seen.store(m.seq, Ordering::Relaxed);
                received.fetch_add(1, Ordering::Relaxed);
                if let Some(sent_us) = m.body.strip_prefix('t').and_then(|t| t.parse::<u64>().ok()) {
                    let now_us = shared.clock.elapsed().as_micros() as u64;
                    lock(&latency[index % SHARDS]).record(now_us.saturating_sub(sent_us).max(1))?;
                }
            }
            "synced" => {
                lock(&shared.connect_times).record(began.elapsed().as_micros().max(1) as u64)?;
                shared.last_synced_us.fetch_max(arrival_began.elapsed().as_micros() as u64, Ordering::Relaxed);
            }
            "presence" => {
                shared.presence_frames.fetch_add(1, Ordering::Relaxed);
            }
            "error" | "resync" => bail!("member {index}: {text}"),
            _ => {}
        }
    }
}

/// Sends `rate` messages per second into `conversation` until `until`, evenly spaced, each body carrying its
/// send time on the bench's clock; returns the sink and how many it sent.
async fn send_for(
    mut sink: SplitSink<Socket, Message>,
    conversation: String,
    rate: u64,
    started: Instant,
    until: Instant,
    clock: Instant,
) -> anyhow::Result<(SplitSink<Socket, Message>, u64)> {
    let mut tick = tokio::time::interval(TICK);
    let mut sent = 0u64;
    while Instant::now() < until {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due {
            let t = clock.elapsed().as_micros() as u64;
            let frame = format!(
                r#"{{"type":"send","conversation_id":"{conversation}","client_msg_id":"{}","body":"t{t}"}}"#,
                uuid::Uuid::now_v7()
            );
            sink.feed(Message::text(frame)).await?;
            sent += 1;
        }
        sink.flush().await?;
    }
    Ok((sink, sent))
}

async fn send_over_rest(
    http: &reqwest::Client,
    base: &str,
    sender: &Session,
    conversation: ConversationId,
    client_msg_id: &str,
) -> anyhow::Result<()> {
    let body = SendMessage {
        client_msg_id: client_msg_id.into(),
        body: "sent while everyone was away".into(),
        reply_to: None,
        thread_root: None,
        attachments: Vec::new(),
    };
    let response = http
        .post(format!("{base}/api/v1/conversations/{conversation}/messages"))
        .bearer_auth(&sender.access_token)
        .json(&body)
        .send()
        .await?;
    expect_json::<serde_json::Value>(response).await?;
    Ok(())
}

/// The server's counters this scenario reports, as differences over the run.
struct Counters {
    slow_consumer_disconnects: u64,
    presence_announcements: u64,
    presence_recipients: u64,
    ephemeral_dropped: u64,
}

impl Counters {
    async fn read(http: &reqwest::Client, base: &str) -> anyhow::Result<Counters> {
        let get = async |name: &str| anyhow::Ok(metric_sum(http, base, name).await? as u64);
        Ok(Counters {
            slow_consumer_disconnects: get("websocket_slow_consumer_disconnects_total").await?,
            presence_announcements: get("presence_announcements_total").await?,
            presence_recipients: get("presence_recipients_total").await?,
            ephemeral_dropped: get("websocket_ephemeral_dropped_total").await?,
        })
    }

    fn minus(&self, before: &Counters) -> Counters {
        Counters {
            slow_consumer_disconnects: self.slow_consumer_disconnects - before.slow_consumer_disconnects,
            presence_announcements: self.presence_announcements - before.presence_announcements,
            presence_recipients: self.presence_recipients - before.presence_recipients,
            ephemeral_dropped: self.ephemeral_dropped - before.ephemeral_dropped,
        }
    }
}
