//! `sends`: durable acked sends over REST. Pairs of users in direct conversations, each user keeping
//! `--in-flight` sends outstanding; reports acked sends per second and ack latency percentiles.

use super::client::{expect_json, register_users};
use super::node::Target;
use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use herald_proto::{ConversationDetails, ConversationId, CreateConversation, SendAck, SendMessage};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

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
}

#[derive(Debug, serde::Serialize)]
pub struct SendsReport {
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
            "scenario sends: {} users x {} in flight, {:.1} s\n\
             | acked sends | acked/s | p50 ms | p99 ms | p99.9 ms | max ms |\n\
             |---|---|---|---|---|---|\n\
             | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
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
    let base = target.base.clone();
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.users * args.in_flight).build()?;
    eprintln!("registering {} users ...", args.users);
    let sessions = register_users(&http, &base, args.users, 32).await?;
    let mut plan = Vec::new();
    for pair in sessions.chunks(2) {
        let details: ConversationDetails = expect_json(
            http.post(format!("{base}/api/v1/conversations"))
                .bearer_auth(&pair[0].access_token)
                .json(&CreateConversation::Direct { user_id: pair[1].user.id })
                .send()
                .await?,
        )
        .await?;
        for s in pair {
            plan.push((s.access_token.clone(), details.conversation.id));
        }
    }

    eprintln!("sending for {} s ...", args.duration);
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let seqs: Arc<Mutex<BTreeMap<ConversationId, Vec<u64>>>> = Arc::default();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (token, conversation) in plan {
        for lane in 0..args.in_flight {
            let (http, base, token, seqs) = (http.clone(), base.clone(), token.clone(), seqs.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let body = SendMessage {
                        client_msg_id: format!("{lane}-{n}-{}", uuid::Uuid::now_v7().simple()),
                        body: format!("bench message {n}"),
                        reply_to: None,
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
                anyhow::Ok(latencies)
            }));
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
