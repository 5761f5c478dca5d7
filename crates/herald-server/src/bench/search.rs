//! `search`: query latency over a large history. Senders fill `--conversations` groups with `--messages`
//! messages over WebSockets (words drawn from a vocabulary with a Zipf-like spread, as in real text: a few words
//! everywhere, most rare); one reader belongs to every group. Once the last messages are findable, the reader
//! runs `--queries` searches of five kinds, `--concurrency` at a time, each over all of its conversations or
//! over one, and the table gives p50/p99 per kind, through the REST API (the index, reading each result's
//! message, the HTTP round trip).

use super::client::{connect, expect_json, group, register_users};
use super::latency::{Latency, histogram};
use super::node::Target;
use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use herald_proto::{ConversationId, ErrorCode, SearchPage, ServerFrame};
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

#[derive(clap::Args, Debug)]
pub struct SearchArgs {
    /// Messages to load before querying.
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,
    /// Groups they are spread over (one sender each); the reader is in all of them.
    #[arg(long, default_value_t = 100)]
    pub conversations: usize,
    /// Distinct words in the vocabulary.
    #[arg(long, default_value_t = 50_000)]
    pub vocabulary: u64,
    /// Words per message.
    #[arg(long, default_value_t = 10)]
    pub words: usize,
    /// Searches to time.
    #[arg(long, default_value_t = 2_000)]
    pub queries: usize,
    /// Searches in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
}

/// What a query looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// One of the ten most frequent words: millions of matches, only the best page returned.
    Common,
    /// A word of rank 100 to 1,000.
    Medium,
    /// A word of rank 10,000 or more: a handful of matches.
    Rare,
    /// Two medium words, both required.
    TwoWords,
    /// The first three letters of a medium word: a prefix expanded to many words.
    Prefix,
}

const KINDS: [Kind; 5] = [Kind::Common, Kind::Medium, Kind::Rare, Kind::TwoWords, Kind::Prefix];

#[derive(Debug, serde::Serialize)]
pub struct KindReport {
    pub kind: Kind,
    /// Over every conversation of the reader (`false`: one conversation).
    pub everywhere: bool,
    pub queries: u64,
    pub mean_results: f64,
    #[serde(flatten)]
    pub latency: Latency,
}

#[derive(Debug, serde::Serialize)]
pub struct SearchReport {
    pub messages: u64,
    pub conversations: usize,
    pub load_seconds: f64,
    pub loaded_per_second: f64,
    /// From the last ack until the last messages were found.
    pub index_catch_up_seconds: f64,
    pub kinds: Vec<KindReport>,
    #[serde(flatten)]
    pub overall: Latency,
}

impl SearchReport {
    pub fn table(&self) -> String {
        let mut out = format!(
            "scenario search: {} messages in {} conversations, loaded in {:.1} s ({:.0}/s), findable {:.1} s after the last ack\n\
             | query | scope | queries | mean results | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|---|---|---|\n",
            self.messages, self.conversations, self.load_seconds, self.loaded_per_second, self.index_catch_up_seconds
        );
        for k in &self.kinds {
            out.push_str(&format!(
                "| {:?} | {} | {} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
                k.kind,
                if k.everywhere { "all" } else { "one" },
                k.queries,
                k.mean_results,
                k.latency.p50,
                k.latency.p90,
                k.latency.p99,
                k.latency.max
            ));
        }
        out.push_str(&format!(
            "| all | | | | {:.2} | {:.2} | {:.2} | {:.2} |",
            self.overall.p50, self.overall.p90, self.overall.p99, self.overall.max
        ));
        out
    }
}

/// The word of rank `rank` (1 = the most frequent): syllables spelling the number, so words look like words and
/// share prefixes as real ones do.
fn word(rank: u64) -> String {
    const SYLLABLES: [&str; 16] =
        ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ba", "de", "fi", "go", "ha", "ju", "pe", "zu"];
    let mut n = rank;
    let mut word = String::new();
    loop {
        word.push_str(SYLLABLES[(n % 16) as usize]);
        n /= 16;
        if n == 0 {
            break;
        }
    }
    word
}

/// A rank drawn with probability about 1/rank (log-uniform): Zipf's law with exponent 1.
fn zipf(rng: &mut impl Rng, vocabulary: u64) -> u64 {
    let rank = (rng.random::<f64>() * (vocabulary as f64).ln()).exp() as u64;
    rank.clamp(1, vocabulary)
}

pub async fn run(target: &Target, args: &SearchArgs) -> anyhow::Result<SearchReport> {
    if args.conversations == 0 || args.messages < args.conversations as u64 {
        bail!("--messages must be at least --conversations, which must be at least 1");
    }
    let base = target.base().to_owned();
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency * 2).build()?;
    eprintln!("registering {} senders and a reader ...", args.conversations);
    let sessions = register_users(&http, &base, args.conversations + 1, 32).await?;
    let (reader, senders) = sessions.split_first().context("no users")?;
    let mut conversations = Vec::with_capacity(senders.len());
    for sender in senders {
        conversations.push(group(&http, &base, sender, &[reader.user.id]).await?);
    }

    eprintln!("loading {} messages ...", args.messages);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, (sender, conversation)) in senders.iter().zip(&conversations).enumerate() {
        let share = args.messages / senders.len() as u64 + u64::from((i as u64) < args.messages % senders.len() as u64);
        let url = super::client::ws_url(&target.ws_base(), &sender.access_token, sender.user.id);
        let socket = connect(&url).await.with_context(|| format!("connecting to {url}"))?.0;
        let (vocabulary, words) = (args.vocabulary, args.words);
        tasks.push(tokio::spawn(load(socket, *conversation, share, i as u64, vocabulary, words)));
    }
    for task in tasks {
        task.await.context("sender task")??;
    }
    let load_seconds = started.elapsed().as_secs_f64();
    eprintln!("loaded in {load_seconds:.1} s; waiting for the index ...");

    // Each sender's last message holds the word "final": all of them found means everything is indexed.
    let acked = Instant::now();
    loop {
        let page = query(&http, &base, &reader.access_token, "final", None, 100).await?;
        if page.results.len() >= conversations.len().min(100) {
            break;
        }
        if acked.elapsed() > Duration::from_secs(600) {
            bail!("the last messages were not findable 10 minutes after their ack");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let index_catch_up_seconds = acked.elapsed().as_secs_f64();

    eprintln!("running {} queries, {} at a time ...", args.queries, args.concurrency);
    let per_worker = args.queries.div_ceil(args.concurrency);
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let (http, base, token, conversations) =
            (http.clone(), base.clone(), reader.access_token.clone(), conversations.clone());
        let vocabulary = args.vocabulary;
        workers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(1_000 + w as u64);
            let mut timed: Vec<(Kind, bool, usize, u64)> = Vec::with_capacity(per_worker);
            for i in 0..per_worker {
                let kind = KINDS[i % KINDS.len()];
                let everywhere = (i / KINDS.len()).is_multiple_of(2);
                let q = match kind {
                    Kind::Common => word(rng.random_range(1..=10)),
                    Kind::Medium => word(rng.random_range(100..=1_000)),
                    Kind::Rare => word(rng.random_range(10_000..=vocabulary.max(10_001))),
                    Kind::TwoWords => {
                        format!("{} {}", word(rng.random_range(100..=1_000)), word(rng.random_range(100..=1_000)))
                    }
                    Kind::Prefix => word(rng.random_range(100..=1_000)).chars().take(3).collect(),
                };
                let scope = (!everywhere).then(|| conversations[rng.random_range(0..conversations.len())]);
                let t = Instant::now();
                let page = query(&http, &base, &token, &q, scope, 20).await?;
                timed.push((kind, everywhere, page.results.len(), t.elapsed().as_micros().max(1) as u64));
            }
            anyhow::Ok(timed)
        }));
    }
    let mut all = histogram()?;
    let mut by_kind: std::collections::BTreeMap<(Kind, bool), (Histogram<u64>, u64)> = Default::default();
    for worker in workers {
        for (kind, everywhere, results, micros) in worker.await.context("query worker")?? {
            all.record(micros)?;
            let (h, found) = match by_kind.entry((kind, everywhere)) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => e.insert((histogram()?, 0)),
            };
            h.record(micros)?;
            *found += results as u64;
        }
    }
    let kinds = by_kind
        .into_iter()
        .map(|((kind, everywhere), (h, found))| KindReport {
            kind,
            everywhere,
            queries: h.len(),
            mean_results: found as f64 / h.len().max(1) as f64,
            latency: Latency::of(&h),
        })
        .collect();
    Ok(SearchReport {
        messages: args.messages,
        conversations: conversations.len(),
        load_seconds,
        loaded_per_second: args.messages as f64 / load_seconds,
        index_catch_up_seconds,
        kinds,
        overall: Latency::of(&all),
    })
}

async fn query(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    q: &str,
    conversation: Option<ConversationId>,
    limit: u32,
) -> anyhow::Result<SearchPage> {
    // The bench's words are ASCII letters: only the spaces need encoding.
    let mut url = format!("{base}/api/v1/search?q={}&limit={limit}", q.replace(' ', "+"));
    if let Some(c) = conversation {
        url.push_str(&format!("&conversation={c}"));
    }
    expect_json(http.get(url).bearer_auth(token).send().await?).await
}

/// One sender: `n` messages into its group, 16 in flight, the last one holding the word "final". A send the
/// server refuses for now (admission: at capacity) is sent again, with the same client_msg_id, after the wait it
/// names: the load is as fast as the node takes it.
async fn load(
    socket: super::client::Socket,
    conversation: ConversationId,
    n: u64,
    seed: u64,
    vocabulary: u64,
    words: usize,
) -> anyhow::Result<()> {
    const IN_FLIGHT: u64 = 16;
    let (mut sink, mut stream) = socket.split();
    let hello = super::client::next_frame(&mut stream).await?;
    if !matches!(hello, ServerFrame::Hello { .. }) {
        bail!("expected hello, got {hello:?}");
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut frame = |i: u64| {
        let mut text: Vec<String> = (0..words).map(|_| word(zipf(&mut rng, vocabulary))).collect();
        if i + 1 == n {
            text.push("final".into());
        }
        serde_json::json!({"type": "send", "id": i.to_string(), "conversation_id": conversation,
            "client_msg_id": uuid::Uuid::now_v7().to_string(), "body": text.join(" ")})
        .to_string()
    };
    // The frames in flight, by id, to send again when refused for now.
    let mut pending: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut sent = 0;
    while sent < n.min(IN_FLIGHT) {
        let text = frame(sent);
        sink.feed(Message::text(text.clone())).await?;
        pending.insert(sent.to_string(), text);
        sent += 1;
    }
    sink.flush().await?;
    let mut acked = 0;
    while acked < n {
        match super::client::next_frame(&mut stream).await? {
            ServerFrame::Ack { id: Some(id), .. } => {
                pending.remove(&id);
                acked += 1;
            }
            ServerFrame::Error { id: Some(id), code: ErrorCode::Unavailable, retry_after_ms, .. } => {
                let text = pending.get(&id).context("a refusal of a send never made")?.clone();
                tokio::time::sleep(Duration::from_millis(retry_after_ms.unwrap_or(100))).await;
                sink.send(Message::text(text)).await?;
                continue;
            }
            ServerFrame::Error { code, message, .. } => bail!("the server refused a send: {code:?}: {message}"),
            _ => continue,
        }
        if sent < n {
            let text = frame(sent);
            sink.send(Message::text(text.clone())).await?;
            pending.insert(sent.to_string(), text);
            sent += 1;
        }
    }
    let _ = sink.close().await;
    Ok(())
}
