//! `overload`: more load than the node sustains, then little. Pairs of users in direct conversations, each user
//! keeping `--in-flight` sends outstanding on its WebSocket, as in `sends`; a send refused as `unavailable` is
//! sent again with the same client_msg_id after the `retry_after_ms` it came with, as the SDK does. For
//! `--heavy` seconds every user sends; then for `--light` seconds only `--light-users` of them do. Each second
//! records what was offered (every try), served (acked), refused, the p50/p99 of the acked tries, and the
//! server's memory, so the table and the chart show whether the writes the node took kept their latency while
//! it refused the rest, whether its memory stayed flat, and how soon it recovered once the load dropped. At the
//! end each conversation's acked seqs must be 1..=n: nothing lost, nothing stored twice.
//!
//! With `--rate` the load is open: the users offer that many new sends per second between them whatever the
//! node answers (each user at its share of the rate, up to `--in-flight` outstanding; a send due while its
//! user's window is full is counted as held back, so a non-zero column says the generator, not the node, set
//! the pace). A refused send is then given up, not retried: at twice what the node sustains, clients that
//! retry for ever make the offered load grow without bound, which measures the clients, not the node.

use super::client::{connect, next_frame, register_users};
use super::lock;
use super::node::Target;
use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use herald_proto::{ConversationId, ErrorCode, ServerFrame};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

#[derive(clap::Args, Debug)]
pub struct OverloadArgs {
    /// Users taking part (they pair up into direct conversations).
    #[arg(long, default_value_t = 512)]
    pub users: usize,
    /// Sends each user keeps outstanding.
    #[arg(long, default_value_t = 32)]
    pub in_flight: usize,
    /// Seconds during which every user sends.
    #[arg(long, default_value_t = 30)]
    pub heavy: u64,
    /// Seconds after that during which only `--light-users` send.
    #[arg(long, default_value_t = 15)]
    pub light: u64,
    /// Users that go on sending in the light phase.
    #[arg(long, default_value_t = 16)]
    pub light_users: usize,
    /// Offer this many new sends per second in all (an open load) instead of keeping `--in-flight` outstanding
    /// per user; refused sends are given up. The light phase keeps the same rate per remaining user.
    #[arg(long)]
    pub rate: Option<f64>,
}

/// One second of the run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Second {
    pub second: usize,
    /// Tries sent (first sends and retries).
    pub offered: u64,
    /// Tries acknowledged.
    pub served: u64,
    /// Tries refused as `unavailable`.
    pub refused: u64,
    /// Sends due under `--rate` that were not made because their user had `--in-flight` outstanding.
    pub held: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The server's resident memory at the end of the second (when it is the bench's own).
    pub rss_mib: Option<f64>,
    /// The writes the server held then (its `writes_pending`) and the slots it had for them
    /// (`writes_pending_limit`, once its latency target has moved them), from its `/metrics`.
    pub pending: Option<f64>,
    pub slots: Option<f64>,
}

#[derive(Debug, serde::Serialize)]
pub struct Phase {
    pub name: &'static str,
    pub seconds: f64,
    pub offered_per_second: f64,
    pub served_per_second: f64,
    pub refused_per_second: f64,
    /// Latency of the acknowledged tries (from the try that was taken to its ack).
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// From a message's first try to its ack, retries included.
    pub end_to_end_p99_ms: f64,
    /// From a refused try to its refusal.
    pub refused_p50_ms: f64,
    pub refused_p99_ms: f64,
}

#[derive(Debug, serde::Serialize)]
pub struct OverloadReport {
    pub users: usize,
    pub in_flight_per_user: usize,
    pub light_users: usize,
    /// New sends offered per second in the heavy phase, when the load was open.
    pub rate: Option<f64>,
    pub phases: Vec<Phase>,
    pub per_second: Vec<Second>,
    pub rss_max_mib: Option<f64>,
}

impl OverloadReport {
    fn title(&self) -> String {
        match self.rate {
            Some(rate) => format!(
                "overload: {} users offering {rate:.0} sends/s (up to {} in flight each), then {}",
                self.users, self.in_flight_per_user, self.light_users
            ),
            None => format!(
                "overload: {} users x {} in flight, then {}",
                self.users, self.in_flight_per_user, self.light_users
            ),
        }
    }

    pub fn table(&self) -> String {
        let mut out = format!(
            "scenario {}\n\
             | phase | seconds | offered/s | served/s | refused/s | p50 ms | p99 ms | p99.9 ms | end-to-end p99 ms | refusal p50 / p99 ms |\n\
             |---|---|---|---|---|---|---|---|---|---|\n",
            self.title()
        );
        for p in &self.phases {
            out.push_str(&format!(
                "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} / {:.1} |\n",
                p.name,
                p.seconds,
                p.offered_per_second,
                p.served_per_second,
                p.refused_per_second,
                p.p50_ms,
                p.p99_ms,
                p.p999_ms,
                p.end_to_end_p99_ms,
                p.refused_p50_ms,
                p.refused_p99_ms
            ));
        }
        out.push_str(
            "\n| second | offered | served | refused | held back | p50 ms | p99 ms | server RSS MiB | writes held / slots |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        for s in &self.per_second {
            let rss = s.rss_mib.map_or("n/a".into(), |m| format!("{m:.0}"));
            let held = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.0}"));
            let (pending, slots) = (held(s.pending), held(s.slots));
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {:.2} | {:.2} | {rss} | {pending} / {slots} |\n",
                s.second, s.offered, s.served, s.refused, s.held, s.p50_ms, s.p99_ms
            ));
        }
        let rss = self.rss_max_mib.map_or("n/a".into(), |m| format!("{m:.0}"));
        out.push_str(&format!("server RSS at most {rss} MiB"));
        out
    }

    /// Offered, served and refused tries, p99 and memory, second by second.
    pub fn chart(&self) -> String {
        let series = |f: &dyn Fn(&Second) -> Option<f64>| -> Vec<(f64, f64)> {
            self.per_second.iter().filter_map(|s| Some((s.second as f64, f(s)?))).collect()
        };
        crate::chart::stack(
            &self.title(),
            "second",
            &[
                ("offered tries/s", series(&|s| Some(s.offered as f64))),
                ("served (acked)/s", series(&|s| Some(s.served as f64))),
                ("refused/s", series(&|s| Some(s.refused as f64))),
                ("p99 ms of acked", series(&|s| Some(s.p99_ms))),
                ("server RSS MiB", series(&|s| s.rss_mib)),
                ("writes held by the server", series(&|s| s.pending)),
            ],
        )
    }
}

/// What every user's task records, second by second from the start of the run.
struct Record {
    started: Instant,
    seconds: Mutex<Vec<Counts>>,
    /// Acked tries, first-try-to-ack times and refused tries, per phase (heavy, light).
    phases: Mutex<[[Histogram<u64>; 3]; 2]>,
    heavy_ends: Instant,
}

struct Counts {
    offered: u64,
    refused: u64,
    held: u64,
    served: Histogram<u64>,
}

impl Record {
    fn new(heavy: Duration) -> anyhow::Result<Self> {
        let histogram = || Histogram::<u64>::new_with_bounds(1, 120_000_000, 3);
        let now = Instant::now();
        Ok(Self {
            started: now,
            seconds: Mutex::new(Vec::new()),
            phases: Mutex::new([
                [histogram()?, histogram()?, histogram()?],
                [histogram()?, histogram()?, histogram()?],
            ]),
            heavy_ends: now + heavy,
        })
    }

    fn second(&self, at: Instant, f: impl FnOnce(&mut Counts) -> anyhow::Result<()>) -> anyhow::Result<()> {
        let second = at.duration_since(self.started).as_secs() as usize;
        let mut seconds = lock(&self.seconds);
        while seconds.len() <= second {
            seconds.push(Counts {
                offered: 0,
                refused: 0,
                held: 0,
                served: Histogram::new_with_bounds(1, 120_000_000, 2)?,
            });
        }
        f(&mut seconds[second])
    }

    /// Adds one to a count of this second.
    fn count(&self, which: fn(&mut Counts) -> &mut u64) -> anyhow::Result<()> {
        self.second(Instant::now(), |c| {
            *which(c) += 1;
            Ok(())
        })
    }

    fn offered(&self) -> anyhow::Result<()> {
        self.count(|c| &mut c.offered)
    }

    /// The phase (heavy 0, light 1) an instant falls in.
    fn phase(&self, at: Instant) -> usize {
        usize::from(at >= self.heavy_ends)
    }

    fn refused(&self, tried: Instant) -> anyhow::Result<()> {
        self.count(|c| &mut c.refused)?;
        let now = Instant::now();
        lock(&self.phases)[self.phase(now)][2].record(now.duration_since(tried).as_micros().max(1) as u64)?;
        Ok(())
    }

    fn held(&self) -> anyhow::Result<()> {
        self.count(|c| &mut c.held)
    }

    fn served(&self, tried: Instant, first: Instant) -> anyhow::Result<()> {
        let now = Instant::now();
        let us = |since: Instant| now.duration_since(since).as_micros().max(1) as u64;
        self.second(now, |c| Ok(c.served.record(us(tried))?))?;
        let phase = self.phase(now);
        let mut phases = lock(&self.phases);
        phases[phase][0].record(us(tried))?;
        phases[phase][1].record(us(first))?;
        Ok(())
    }
}

pub async fn run(target: &Target, args: &OverloadArgs) -> anyhow::Result<OverloadReport> {
    if args.users < 2 || !args.users.is_multiple_of(2) {
        bail!("--users must be an even number, at least 2");
    }
    if args.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        bail!("--rate must be a positive number of sends per second");
    }
    let base = target.base().to_owned();
    let http = reqwest::Client::new();
    eprintln!("registering {} users ...", args.users);
    let sessions = register_users(&http, &base, args.users, 32).await?;
    let plan = super::client::pair_up(&http, &base, &sessions).await?;
    let mut sockets = Vec::new();
    for (token, user, conversation) in plan {
        let url = super::client::ws_url(&target.ws_base(), &token, user);
        sockets.push((connect(&url).await.with_context(|| format!("connecting to {url}"))?.0, conversation));
    }

    eprintln!("heavy for {} s, then {} users for {} s ...", args.heavy, args.light_users, args.light);
    let record = Arc::new(Record::new(Duration::from_secs(args.heavy))?);
    let heavy_ends = record.heavy_ends;
    let light_ends = heavy_ends + Duration::from_secs(args.light);
    let mut tasks = Vec::new();
    let users = sockets.len();
    for (i, (socket, conversation)) in sockets.into_iter().enumerate() {
        let until = if i < args.light_users { light_ends } else { heavy_ends };
        // Each user's share of an open load, its first send staggered so that the users' sends interleave.
        let pace = args.rate.map(|rate| {
            let per_second = rate / users as f64;
            Pace { per_second, from: record.started + Duration::from_secs_f64(i as f64 / rate), scheduled: 0 }
        });
        let load = Load { in_flight: args.in_flight, until, pace };
        tasks.push(tokio::spawn(user(socket, conversation, load, record.clone())));
    }
    // The server's memory and the writes it holds at the end of every second, while the users send.
    let mut rss: Vec<Option<f64>> = Vec::new();
    let mut in_server: Vec<(Option<f64>, Option<f64>)> = Vec::new();
    while Instant::now() < light_ends {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss.push(target.rss_bytes().map(|b| b as f64 / 1_048_576.0));
        let gauge = |name| super::client::metric_sum(&http, &base, name);
        let (pending, slots) = tokio::join!(gauge("writes_pending"), gauge("writes_pending_limit"));
        // No limit gauge (0) without a latency target: the slots are the fixed bound.
        in_server.push((pending.ok(), slots.ok().filter(|v| *v > 0.0)));
    }
    let mut acked: BTreeMap<ConversationId, Vec<u64>> = BTreeMap::new();
    for task in tasks {
        let (conversation, seqs) = task.await.context("a user's task")??;
        acked.entry(conversation).or_default().extend(seqs);
    }
    // Nothing lost, nothing twice: each conversation's acked seqs are exactly 1..=n.
    for (conversation, mut seqs) in acked {
        seqs.sort_unstable();
        if seqs != (1..=seqs.len() as u64).collect::<Vec<_>>() {
            bail!("conversation {conversation}: acked seqs are not dense and unique ({} acks)", seqs.len());
        }
    }

    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let seconds = lock(&record.seconds);
    let per_second: Vec<Second> = seconds
        .iter()
        .enumerate()
        .map(|(second, c)| Second {
            second,
            offered: c.offered,
            served: c.served.len(),
            refused: c.refused,
            held: c.held,
            p50_ms: ms(&c.served, 0.5),
            p99_ms: ms(&c.served, 0.99),
            rss_mib: rss.get(second).copied().flatten(),
            pending: in_server.get(second).and_then(|h| h.0),
            slots: in_server.get(second).and_then(|h| h.1),
        })
        .collect();
    let heavy_seconds = args.heavy as usize;
    let phase = |name: &'static str, range: std::ops::Range<usize>, index: usize| {
        let within: Vec<&Second> = per_second.iter().filter(|s| range.contains(&s.second)).collect();
        let span = within.len().max(1) as f64;
        let phases = lock(&record.phases);
        let [tries, whole, refused] = &phases[index];
        Phase {
            name,
            seconds: span,
            offered_per_second: within.iter().map(|s| s.offered).sum::<u64>() as f64 / span,
            served_per_second: within.iter().map(|s| s.served).sum::<u64>() as f64 / span,
            refused_per_second: within.iter().map(|s| s.refused).sum::<u64>() as f64 / span,
            p50_ms: ms(tries, 0.5),
            p99_ms: ms(tries, 0.99),
            p999_ms: ms(tries, 0.999),
            end_to_end_p99_ms: ms(whole, 0.99),
            refused_p50_ms: ms(refused, 0.5),
            refused_p99_ms: ms(refused, 0.99),
        }
    };
    let phases = vec![
        phase("heavy", 0..heavy_seconds, 0),
        phase("light", heavy_seconds..heavy_seconds + args.light as usize, 1),
    ];
    let rss_max_mib = rss.iter().flatten().copied().reduce(f64::max);
    Ok(OverloadReport {
        users: args.users,
        in_flight_per_user: args.in_flight,
        light_users: args.light_users.min(args.users),
        rate: args.rate,
        phases,
        per_second,
        rss_max_mib,
    })
}

/// How one user sends: up to `in_flight` outstanding until `until`, either as fast as acks come back or, with a
/// pace, at a fixed rate.
struct Load {
    in_flight: usize,
    until: Instant,
    pace: Option<Pace>,
}

/// An open load: a send is due every `1 / per_second` seconds from `from`, whatever the node answers.
struct Pace {
    per_second: f64,
    from: Instant,
    /// Sends that fell due so far (made or held back).
    scheduled: u64,
}

impl Pace {
    /// When the next send falls due.
    fn next_due(&self) -> Instant {
        self.from + Duration::from_secs_f64(self.scheduled as f64 / self.per_second)
    }
}

/// One user's WebSocket. Closed (no pace): `in_flight` sends outstanding until `until`, a new one for each ack;
/// a refused send is tried again with the same client_msg_id after the delay it came with, so every send is
/// acked in the end. Open (a pace): a send whenever one falls due and the window has room; a refused send is
/// given up. Returns the conversation and the acked seqs.
async fn user(
    socket: super::client::Socket,
    conversation: ConversationId,
    mut load: Load,
    record: Arc<Record>,
) -> anyhow::Result<(ConversationId, Vec<u64>)> {
    let (mut sink, mut stream) = socket.split();
    let hello = next_frame(&mut stream).await?;
    if !matches!(hello, ServerFrame::Hello { .. }) {
        bail!("expected hello, got {hello:?}");
    }
    // Per send: its client_msg_id, its first try and its latest.
    let mut sends: Vec<(String, Instant, Instant)> = Vec::new();
    let mut retries: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
    let mut outstanding = 0usize;
    let mut acked = Vec::new();
    let frame = |n: usize, id: &str| {
        Message::text(format!(
            r#"{{"type":"send","id":"{n}","conversation_id":"{conversation}","client_msg_id":"{id}","body":"overload {n}"}}"#
        ))
    };
    loop {
        let now = Instant::now();
        // The sends it is time to make: every one due under a pace, else enough to keep `in_flight` outstanding
        // (counting those waiting to be retried).
        let mut due = 0usize;
        match &mut load.pace {
            Some(pace) => {
                while pace.next_due() <= now && now < load.until {
                    pace.scheduled += 1;
                    if outstanding + due < load.in_flight {
                        due += 1;
                    } else {
                        record.held()?;
                    }
                }
            }
            None if now < load.until => due = load.in_flight - outstanding,
            None => {}
        }
        for _ in 0..due {
            let n = sends.len();
            let id = uuid::Uuid::now_v7().to_string();
            let now = Instant::now();
            sink.send(frame(n, &id)).await?;
            record.offered()?;
            sends.push((id, now, now));
            outstanding += 1;
        }
        // Sends fall due up to `until` (those due before it but not yet made when it passed are not made).
        let next_send = load.pace.as_ref().map(Pace::next_due).filter(|at| *at < load.until && now < load.until);
        if outstanding == 0 && next_send.is_none() {
            break;
        }
        let retry = retries.peek().map(|Reverse((at, _))| *at);
        let answer = tokio::select! {
            frame = next_frame(&mut stream) => Some(frame?),
            () = sleep_until(retry) => {
                let Some(Reverse((_, n))) = retries.pop() else { continue };
                sends[n].2 = Instant::now();
                sink.send(frame(n, &sends[n].0)).await?;
                record.offered()?;
                None
            }
            () = sleep_until(next_send) => None,
        };
        match answer {
            None => {}
            Some(ServerFrame::Ack { id: Some(id), seq, .. }) => {
                let n: usize = id.parse().context("an ack's id")?;
                let (_, first, tried) = sends.get(n).context("an ack for a send never made")?;
                record.served(*tried, *first)?;
                acked.push(seq);
                outstanding -= 1;
            }
            Some(ServerFrame::Error { id: Some(id), code: ErrorCode::Unavailable, retry_after_ms, .. }) => {
                let n: usize = id.parse().context("an error's id")?;
                record.refused(sends.get(n).context("a refusal of a send never made")?.2)?;
                if load.pace.is_some() {
                    outstanding -= 1;
                } else {
                    let wait = Duration::from_millis(retry_after_ms.unwrap_or(1000));
                    retries.push(Reverse((Instant::now() + wait, n)));
                }
            }
            Some(other) => bail!("unexpected frame: {other:?}"),
        }
    }
    let _ = sink.close().await;
    Ok((conversation, acked))
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
