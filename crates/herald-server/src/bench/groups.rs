//! `groups`: R rooms of M members, everyone connected over WebSockets, one sender per room at a combined
//! target rate. Measures deliveries per second and send-to-receive latency (the body carries the send
//! time on the bench's own clock), and checks every member got every message of its room once, in order.

use super::client::{connect_live, group, http, register_users};
use super::ms;
use super::node::Target;
use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

#[derive(clap::Args, Debug)]
pub struct GroupsArgs {
    #[arg(long, default_value_t = 20)]
    pub rooms: usize,
    /// Members per room, each with its own connection.
    #[arg(long, default_value_t = 50)]
    pub members: usize,
    /// Messages per second, all rooms together.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Seconds to send for.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
}

#[derive(Debug, serde::Serialize)]
pub struct GroupsReport {
    pub rooms: usize,
    pub members: usize,
    pub target_messages_per_second: u64,
    pub messages_sent: u64,
    pub deliveries: u64,
    pub seconds: f64,
    pub deliveries_per_second: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_p999: f64,
    pub latency_ms_max: f64,
    pub server_cpu_percent: Option<f64>,
}

impl GroupsReport {
    pub fn table(&self) -> String {
        format!(
            "scenario groups: {} rooms x {} members, target {} msg/s, {:.1} s\n\
             | messages | deliveries | deliveries/s | p50 ms | p99 ms | p99.9 ms | max ms | server CPU % |\n\
             |---|---|---|---|---|---|---|---|\n\
             | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            self.rooms,
            self.members,
            self.target_messages_per_second,
            self.seconds,
            self.messages_sent,
            self.deliveries,
            self.deliveries_per_second,
            self.latency_ms_p50,
            self.latency_ms_p99,
            self.latency_ms_p999,
            self.latency_ms_max,
            self.server_cpu_percent.map_or("n/a".into(), |c| format!("{c:.0}"))
        )
    }
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default, borrow)]
    event: Option<Event<'a>>,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(default, borrow)]
    message: Option<Body<'a>>,
}

#[derive(Deserialize)]
struct Body<'a> {
    seq: u64,
    #[serde(borrow)]
    body: &'a str,
}

pub async fn run(target: &Target, args: &GroupsArgs) -> anyhow::Result<GroupsReport> {
    if args.rooms == 0 || args.members < 2 {
        bail!("need at least one room of two members");
    }
    let http = http()?;
    let users = args.rooms * args.members;
    eprintln!("registering {users} users ...");
    let sessions = register_users(&http, &target.base, users, 32).await?;
    let mut rooms = Vec::with_capacity(args.rooms);
    for members in sessions.chunks(args.members) {
        let others: Vec<_> = members[1..].iter().map(|s| s.user.id).collect();
        rooms.push(group(&http, &target.base, &members[0], &others).await?);
    }

    eprintln!("connecting {users} members ...");
    let clock = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut receivers = Vec::with_capacity(users);
    let mut senders = Vec::with_capacity(args.rooms);
    for (i, session) in sessions.iter().enumerate() {
        let socket = connect_live(&target.ws_base(), &session.access_token).await?;
        let (sink, mut stream) = socket.split();
        if i % args.members == 0 {
            senders.push((rooms[i / args.members], sink));
        }
        let (received, stop) = (received.clone(), stop.clone());
        receivers.push(tokio::spawn(async move {
            let mut latencies = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
            let mut last_seq = 0u64;
            loop {
                let message = tokio::select! {
                    message = stream.next() => message,
                    () = stop.cancelled() => break,
                };
                let Some(Ok(Message::Text(text))) = message else {
                    if message.is_none() {
                        break;
                    }
                    continue;
                };
                let frame: Frame = serde_json::from_str(&text)?;
                if frame.kind != "event" {
                    continue;
                }
                let Some(body) = frame.event.and_then(|e| e.message) else { continue };
                if body.seq != last_seq + 1 {
                    bail!("out of order: seq {} after {last_seq}", body.seq);
                }
                last_seq = body.seq;
                let sent_us: u64 = body.body.trim_start_matches('t').parse().context("body")?;
                let now_us = clock.elapsed().as_micros() as u64;
                latencies.record(now_us.saturating_sub(sent_us).max(1))?;
                received.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok((last_seq, latencies))
        }));
    }

    eprintln!("sending {} msg/s for {} s ...", args.rate, args.duration);
    let per_room = args.rate as f64 / args.rooms as f64;
    let cpu_start = target.cpu_seconds();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let sending: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(r, (room, mut sink))| {
            tokio::spawn(async move {
                let mut sent = 0u64;
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                let begun = Instant::now();
                while Instant::now() < deadline {
                    tick.tick().await;
                    let due = (begun.elapsed().as_secs_f64() * per_room) as u64;
                    while sent < due {
                        let t = clock.elapsed().as_micros() as u64;
                        let frame = format!(
                            r#"{{"type":"send","conversation_id":"{room}","client_msg_id":"r{r}-{sent}","body":"t{t}"}}"#
                        );
                        sink.feed(Message::text(frame)).await?;
                        sent += 1;
                    }
                    sink.flush().await?;
                }
                anyhow::Ok((sink, sent))
            })
        })
        .collect();
    let mut sent_per_room = Vec::with_capacity(args.rooms);
    let mut sinks = Vec::new();
    for s in sending {
        let (sink, sent) = s.await.context("sender")??;
        sent_per_room.push(sent);
        sinks.push(sink);
    }
    let send_seconds = started.elapsed().as_secs_f64();
    let expected: u64 = sent_per_room.iter().map(|n| n * args.members as u64).sum();
    // Let the tail arrive.
    let drain_deadline = Instant::now() + Duration::from_secs(30);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_end = target.cpu_seconds();
    stop.cancel();
    for mut sink in sinks {
        let _ = sink.close().await;
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    for (i, r) in receivers.into_iter().enumerate() {
        let (last_seq, latencies) = r.await.context("receiver")??;
        let want = sent_per_room[i / args.members];
        if last_seq != want {
            bail!("member {i} received {last_seq} of {want} messages of its room");
        }
        all.add(latencies)?;
    }
    let deliveries = all.len();
    Ok(GroupsReport {
        rooms: args.rooms,
        members: args.members,
        target_messages_per_second: args.rate,
        messages_sent: sent_per_room.iter().sum(),
        deliveries,
        seconds: send_seconds,
        deliveries_per_second: deliveries as f64 / seconds.max(send_seconds),
        latency_ms_p50: ms(&all, 0.5),
        latency_ms_p99: ms(&all, 0.99),
        latency_ms_p999: ms(&all, 0.999),
        latency_ms_max: all.max() as f64 / 1000.0,
        server_cpu_percent: match (cpu_start, cpu_end) {
            (Some(s), Some(e)) => Some(100.0 * (e - s) / seconds),
            _ => None,
        },
    })
}
