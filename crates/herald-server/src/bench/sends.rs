//! `sends`: durable acked sends, over REST (a request per message) or over each user's WebSocket (`send`
//! frames, answered by `ack` frames). Pairs of users in direct conversations, each user keeping `--in-flight`
//! sends outstanding; reports acked sends per second and ack latency percentiles. Every client_msg_id is a
//! UUIDv7, as the SDK makes them (time-ordered ids are what the store's idempotency keys are laid out for).

use super::client::{connect, expect_json, register_users};
use super::node::Target;
use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use herald_proto::{ConversationId, SendAck, SendMessage, ServerFrame};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

/// How the sends travel.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `POST /api/v1/conversations/{id}/messages`, HTTP/1.1 keep-alive, one request per send.
    Rest,
    /// `send` frames on one WebSocket per user, the sends in flight pipelined on it.
    Ws,
}

/// Acked seqs per conversation, checked for density at the end.
type Seqs = Arc<Mutex<BTreeMap<ConversationId, Vec<u64>>>>;

#[derive(clap::Args, Debug)]
pub struct SendsArgs {
    /// Users taking part (they pair up into direct conversations).
    #[arg(long, default_value_t = 64)]
    pub users: usize,
    /// Sends each user keeps outstanding.
    #[arg(long, default_value_t = 4)]
    pub in_flight: usize,
    /// Seconds to measure for.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// REST requests or WebSocket frames.
    #[arg(long, value_enum, default_value_t = Transport::Rest)]
    pub over: Transport,
}

#[derive(Debug, serde::Serialize)]
pub struct SendsReport {
    pub transport: Transport,
    pub users: usize,
    pub in_flight_per_user: usize,
    pub seconds: f64,
    pub acked: u64,
    pub acked_per_second: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_p999: f64,
    pub latency_ms_max: f64,
}

impl SendsReport {
    pub fn table(&self) -> String {
        format!(
            "scenario sends over {:?}: {} users x {} in flight, {:.1} s\n\
             | acked sends | acked/s | p50 ms | p99 ms | p99.9 ms | max ms |\n\
             |---|---|---|---|---|---|\n\
             | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
            self.transport,
            self.users,
            self.in_flight_per_user,
            self.seconds,
            self.acked,
            self.acked_per_second,
            self.latency_ms_p50,
            self.latency_ms_p99,
            self.latency_ms_p999,
            self.latency_ms_max
        )
    }
}

pub async fn run(target: &Target, args: &SendsArgs) -> anyhow::Result<SendsReport> {
    if args.users < 2 || !args.users.is_multiple_of(2) {
        bail!("--users must be an even number, at least 2");
    }
    let base = target.base().to_owned();
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.users * args.in_flight).build()?;
    eprintln!("registering {} users ...", args.users);
    let sessions = register_users(&http, &base, args.users, 32).await?;
    let plan = super::client::pair_up(&http, &base, &sessions).await?;

    eprintln!("sending for {} s over {:?} ...", args.duration, args.over);
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let seqs: Seqs = Arc::default();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (token, user, conversation) in plan {
        match args.over {
            Transport::Rest => {
                for _ in 0..args.in_flight {
                    let (http, base, token, seqs) = (http.clone(), base.clone(), token.clone(), seqs.clone());
                    tasks.push(tokio::spawn(rest_lane(http, base, token, conversation, deadline, seqs)));
                }
            }
            Transport::Ws => {
                let url = super::client::ws_url(&target.ws_base(), &token, user);
                let socket = connect(&url).await.with_context(|| format!("connecting to {url}"))?.0;
                tasks.push(tokio::spawn(ws_user(socket, conversation, args.in_flight, deadline, seqs.clone())));
            }
        }
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for task in tasks {
        all.add(task.await.context("sender task")??)?;
    }
    let seconds = started.elapsed().as_secs_f64();

    // Correctness: per conversation the acked seqs are exactly 1..=n.
    for (conversation, mut got) in std::mem::take(&mut *seqs.lock().await) {
        got.sort_unstable();
        let expected: Vec<u64> = (1..=got.len() as u64).collect();
        if got != expected {
            bail!("conversation {conversation}: acked seqs are not dense and unique (got {} acks)", got.len());
        }
    }
    let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    Ok(SendsReport {
        transport: args.over,
        users: args.users,
        in_flight_per_user: args.in_flight,
        seconds,
        acked: all.len(),
        acked_per_second: all.len() as f64 / seconds,
        latency_ms_p50: ms(0.5),
        latency_ms_p99: ms(0.99),
        latency_ms_p999: ms(0.999),
        latency_ms_max: all.max() as f64 / 1000.0,
    })
}

/// One REST sender: a request at a time until the deadline.
async fn rest_lane(
    http: reqwest::Client,
    base: String,
    token: String,
    conversation: ConversationId,
    deadline: Instant,
    seqs: Seqs,
) -> anyhow::Result<Histogram<u64>> {
    let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut n = 0u64;
    while Instant::now() < deadline {
        let body = SendMessage {
            client_msg_id: uuid::Uuid::now_v7().to_string(),
            body: format!("bench message {n}"),
            reply_to: None,
            thread_root: None,
            attachments: Vec::new(),
        };
        let t = Instant::now();
        let response = http
            .post(format!("{base}/api/v1/conversations/{conversation}/messages"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await?;
        let ack: SendAck = expect_json(response).await?;
        latencies.record(t.elapsed().as_micros().max(1) as u64)?;
        seqs.lock().await.entry(conversation).or_default().push(ack.seq);
        n += 1;
    }
    Ok(latencies)
}

/// One user's WebSocket: `in_flight` sends outstanding, a new one for each ack until the deadline, then the
/// rest of the acks. The frame's `id` is the index of its send time, which the ack echoes. The connection
/// never asks to sync, so the server sends it acks and nothing of its feed.
async fn ws_user(
    socket: super::client::Socket,
    conversation: ConversationId,
    in_flight: usize,
    deadline: Instant,
    seqs: Seqs,
) -> anyhow::Result<Histogram<u64>> {
    let (mut sink, mut stream) = socket.split();
    let hello = next_frame(&mut stream).await?;
    if !matches!(hello, ServerFrame::Hello { .. }) {
        bail!("expected hello, got {hello:?}");
    }
    let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut sent_at: Vec<Instant> = Vec::new();
    let mut acked = Vec::new();
    let send = |n: usize| {
        Message::text(format!(
            r#"{{"type":"send","id":"{n}","conversation_id":"{conversation}","client_msg_id":"{}","body":"bench message {n}"}}"#,
            uuid::Uuid::now_v7()
        ))
    };
    for _ in 0..in_flight {
        sink.feed(send(sent_at.len())).await?;
        sent_at.push(Instant::now());
    }
    sink.flush().await?;
    while acked.len() < sent_at.len() {
        let ack = next_frame(&mut stream).await?;
        let ServerFrame::Ack { id: Some(id), seq, .. } = ack else {
            bail!("expected an ack, got {ack:?}");
        };
        let n: usize = id.parse().context("an ack's id")?;
        let at = sent_at.get(n).context("an ack for a send never made")?;
        latencies.record(at.elapsed().as_micros().max(1) as u64)?;
        acked.push(seq);
        if Instant::now() < deadline {
            sink.send(send(sent_at.len())).await?;
            sent_at.push(Instant::now());
        }
    }
    let _ = sink.close().await;
    seqs.lock().await.entry(conversation).or_default().extend(acked);
    Ok(latencies)
}

/// The next frame for this sender: a refusal ends the run (`sends` measures a node within its bounds).
async fn next_frame(
    stream: &mut futures_util::stream::SplitStream<super::client::Socket>,
) -> anyhow::Result<ServerFrame> {
    match super::client::next_frame(stream).await? {
        ServerFrame::Error { code, message, .. } => bail!("the server refused a send: {code:?}: {message}"),
        other => Ok(other),
    }
}
