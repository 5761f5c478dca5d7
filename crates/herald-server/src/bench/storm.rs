//! `storm`: N connected clients all drop at once; messages are sent while they are away; then all of
//! them reconnect at the same moment and resume from their feed positions. Measures the time until every
//! client has resumed, and checks each received exactly what it missed, in order, nothing twice.

use super::client::{connect_retrying, expect_json, http, next_text, register_users};
use super::node::Target;
use anyhow::{Context, bail};
use futures_util::SinkExt;
use hdrhistogram::Histogram;
use herald_proto::{ConversationDetails, ConversationId, CreateConversation, SendMessage, UserId};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

#[derive(clap::Args, Debug)]
pub struct StormArgs {
    /// Clients (one user each, paired into direct conversations).
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Messages sent into each conversation while everyone is away.
    #[arg(long, default_value_t = 1)]
    pub missed: u64,
}

#[derive(Debug, serde::Serialize)]
pub struct StormReport {
    pub connections: usize,
    pub missed_per_client: u64,
    pub seconds_until_all_resumed: f64,
    pub resume_ms_p50: f64,
    pub resume_ms_p99: f64,
    pub refused_handshakes_retried: u64,
    /// (milliseconds since the storm began, clients resumed by then)
    pub progress: Vec<(f64, usize)>,
}

impl StormReport {
    pub fn table(&self) -> String {
        format!(
            "scenario storm: {} clients reconnect at once, {} missed message(s) each\n\
             | all resumed after s | resume p50 ms | resume p99 ms | handshakes refused and retried |\n\
             |---|---|---|---|\n| {:.2} | {:.1} | {:.1} | {} |",
            self.connections,
            self.missed_per_client,
            self.seconds_until_all_resumed,
            self.resume_ms_p50,
            self.resume_ms_p99,
            self.refused_handshakes_retried
        )
    }

    pub fn chart(&self) -> String {
        let points: Vec<(f64, f64)> = self.progress.iter().map(|(ms, n)| (*ms, *n as f64)).collect();
        crate::chart::line(
            &format!("storm: {} clients reconnecting at once", self.connections),
            "ms since the storm began",
            "clients resumed",
            &points,
        )
    }
}

/// Connects (retrying refused handshakes after their Retry-After, with jitter), syncs from `since`, and
/// returns the message seqs replayed and how many handshakes were refused.
async fn resume(ws_base: &str, token: &str, user: UserId, since: u64) -> anyhow::Result<(Vec<u64>, u64)> {
    let (mut socket, refused) = connect_retrying(&super::client::ws_url(ws_base, token, user)).await?;
    next_text(&mut socket).await?; // hello
    socket.send(Message::text(format!(r#"{{"type":"sync","since":{since}}}"#))).await?;
    let mut seqs = Vec::new();
    loop {
        let frame: serde_json::Value = serde_json::from_str(&next_text(&mut socket).await?)?;
        match frame["type"].as_str() {
            Some("event") => {
                if let Some(seq) = frame["event"]["message"]["seq"].as_u64() {
                    seqs.push(seq);
                }
            }
            Some("synced") => return Ok((seqs, refused)),
            Some("resync") => bail!("told to resync: {frame}"),
            _ => {}
        }
    }
}

pub async fn run(target: &Target, args: &StormArgs) -> anyhow::Result<StormReport> {
    if args.connections < 2 || !args.connections.is_multiple_of(2) {
        bail!("--connections must be an even number, at least 2");
    }
    let http = http()?;
    eprintln!("registering {} users ...", args.connections);
    let sessions = register_users(&http, target.base(), args.connections, 32).await?;
    let mut conversations: Vec<ConversationId> = Vec::with_capacity(args.connections / 2);
    for pair in sessions.chunks(2) {
        let details: ConversationDetails = expect_json(
            http.post(format!("{}/api/v1/conversations", target.base()))
                .bearer_auth(&pair[0].access_token)
                .json(&CreateConversation::Direct { user_id: pair[1].user.id })
                .send()
                .await?,
        )
        .await?;
        conversations.push(details.conversation.id);
    }

    eprintln!("connecting {} clients ...", args.connections);
    let mut sockets = Vec::with_capacity(args.connections);
    for chunk in sessions.chunks(128) {
        let connecting: Vec<_> = chunk
            .iter()
            .map(|s| {
                let (ws, token, user) = (target.ws_base(), s.access_token.clone(), s.user.id);
                tokio::spawn(async move { super::client::connect_live(&ws, &token, user).await })
            })
            .collect();
        for c in connecting {
            sockets.push(c.await.context("connect")??);
        }
    }
    // Fresh users: everyone is at feed position 0.
    eprintln!("dropping every connection at once ...");
    drop(sockets);
    tokio::time::sleep(Duration::from_millis(500)).await;
    eprintln!("sending {} message(s) into each conversation meanwhile ...", args.missed);
    for (i, conversation) in conversations.iter().enumerate() {
        for n in 0..args.missed {
            let sender = &sessions[2 * i + (n as usize % 2)];
            let body = SendMessage {
                client_msg_id: format!("storm-{n}"),
                body: format!("missed {n}"),
                reply_to: None,
                thread_root: None,
                attachments: Vec::new(),
            };
            let response = http
                .post(format!("{}/api/v1/conversations/{conversation}/messages", target.base()))
                .bearer_auth(&sender.access_token)
                .json(&body)
                .send()
                .await?;
            expect_json::<serde_json::Value>(response).await?;
        }
    }

    eprintln!("reconnecting {} clients at once ...", args.connections);
    let started = Instant::now();
    let tasks: Vec<_> = sessions
        .iter()
        .map(|s| {
            let (ws, token, user) = (target.ws_base(), s.access_token.clone(), s.user.id);
            tokio::spawn(async move {
                let result = resume(&ws, &token, user, 0).await;
                (result, started.elapsed())
            })
        })
        .collect();
    let mut times = Vec::with_capacity(tasks.len());
    let mut refused = 0;
    let mut latencies = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let expected: Vec<u64> = (1..=args.missed).collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let (result, elapsed) = task.await.context("resume task")?;
        let (seqs, r) = result.with_context(|| format!("client {i} did not resume"))?;
        if seqs != expected {
            bail!("client {i} resumed with seqs {seqs:?}, expected {expected:?}");
        }
        refused += r;
        latencies.record(elapsed.as_micros().max(1) as u64)?;
        times.push(elapsed.as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let step = (times.len() / 50).max(1);
    let mut progress: Vec<(f64, usize)> = times.iter().enumerate().step_by(step).map(|(i, t)| (*t, i + 1)).collect();
    if let Some(last) = times.last() {
        progress.push((*last, times.len()));
    }
    Ok(StormReport {
        connections: args.connections,
        missed_per_client: args.missed,
        seconds_until_all_resumed: times.last().copied().unwrap_or(0.0) / 1000.0,
        resume_ms_p50: latencies.value_at_quantile(0.5) as f64 / 1000.0,
        resume_ms_p99: latencies.value_at_quantile(0.99) as f64 / 1000.0,
        refused_handshakes_retried: refused,
        progress,
    })
}
