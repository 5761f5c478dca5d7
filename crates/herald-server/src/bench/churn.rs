//! The rest of a mixed `soak`, beside the fleet's group traffic: devices that go offline and come back,
//! resuming their feed from the position they left it at; pages of history read over REST; photos uploaded
//! through the media pipeline and their thumbnails fetched. Each goes at a steady pace, is timed, and is
//! checked: a resumed feed must go on at the next position and with the room's next seq (nothing lost or
//! doubled across the gap), a history page must be dense, an upload must become ready with its thumbnails.
//! A broken promise ends the run; a request that fails (a refused handshake, a timeout) is counted, said on
//! stderr, and the next one goes ahead.

use super::client::{connect, next_frame, register_users, ws_url};
use super::latency::histogram;
use super::lock;
use super::media;
use super::node::Target;
use anyhow::{Context, bail};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use herald_client::Api;
use herald_proto::{ConversationId, Direction, Event, HistoryQuery, ServerFrame, Session, UserId};
use rand::Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Users that read history, the rate shared between them.
const HISTORY_READERS: usize = 4;
/// Messages per history page.
const PAGE: u32 = 50;
/// The uploaded photos' size: a phone picture after the client has scaled it down.
const PHOTO: (u32, u32) = (1280, 960);
/// How long a resumed device may take to catch up before the attempt counts as failed.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(30);
/// Failures said on stderr; the rest are only counted.
const FAILURES_SAID: u64 = 20;

#[derive(clap::Args, Debug, Clone, Copy, serde::Serialize)]
pub struct ChurnArgs {
    /// Devices that come and go: each connects, resumes its feed where it left it, stays online for
    /// `--online-seconds`, then goes offline as long, for the whole run. Each is a member of one room.
    #[arg(long, default_value_t = 0)]
    pub reconnecting: usize,
    #[arg(long, default_value_t = 5)]
    pub online_seconds: u64,
    /// History pages (50 messages back from a random point of a room) read per second over REST.
    #[arg(long, default_value_t = 0)]
    pub history_per_second: u64,
    /// Photos (1280×960 JPEGs, each one different) uploaded per second, each followed until it is ready and
    /// its thumbnail fetched.
    #[arg(long, default_value_t = 0.0)]
    pub uploads_per_second: f64,
}

impl ChurnArgs {
    pub fn any(&self) -> bool {
        self.reconnecting > 0 || self.history_per_second > 0 || self.uploads_per_second > 0.0
    }

    fn readers(&self) -> usize {
        if self.history_per_second > 0 { HISTORY_READERS } else { 0 }
    }
}

/// The churn's users, registered before the rooms are made: the devices and history readers are made members
/// of the rooms (see [`ChurnUsers::members`]); the uploader belongs to none.
pub struct ChurnUsers {
    devices: Vec<Session>,
    readers: Vec<Session>,
    uploader: Option<Session>,
}

impl ChurnUsers {
    pub async fn register(target: &Target, args: &ChurnArgs) -> anyhow::Result<ChurnUsers> {
        let uploaders = usize::from(args.uploads_per_second > 0.0);
        let n = args.reconnecting + args.readers() + uploaders;
        let mut sessions = register_users(&super::client::http()?, target.base(), n, 32).await?;
        let uploader = if uploaders > 0 { sessions.pop() } else { None };
        let readers = sessions.split_off(args.reconnecting);
        Ok(ChurnUsers { devices: sessions, readers, uploader })
    }

    /// The users to make members of the rooms: member k of room k mod rooms.
    pub fn members(&self) -> Vec<UserId> {
        self.devices.iter().chain(&self.readers).map(|s| s.user.id).collect()
    }
}

/// One kind of operation since the last [`Churn::take`].
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct OpFigures {
    pub done: u64,
    pub failed: u64,
    pub per_second: f64,
    pub ms_p50: f64,
    pub ms_p99: f64,
    pub ms_max: f64,
}

/// What the churn did in one interval.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Interval {
    /// Connect, authenticate, resume and catch up: from dialling until `synced`.
    pub reconnects: OpFigures,
    /// Events a resumed device received before `synced` (what it missed while offline), on average.
    pub caught_up_per_reconnect: f64,
    pub history: OpFigures,
    /// From announcing the upload until it was ready and its thumbnail fetched.
    pub uploads: OpFigures,
}

impl Interval {
    /// Requests of every kind that failed.
    pub fn failed(&self) -> u64 {
        self.reconnects.failed + self.history.failed + self.uploads.failed
    }
}

struct Tally {
    done: u64,
    failed: u64,
    times: Histogram<u64>,
}

/// Counts and times one kind of operation.
struct Op {
    name: &'static str,
    tally: Mutex<Tally>,
}

impl Op {
    fn new(name: &'static str) -> anyhow::Result<Op> {
        Ok(Op { name, tally: Mutex::new(Tally { done: 0, failed: 0, times: histogram()? }) })
    }

    fn done(&self, took: Duration) {
        let mut t = lock(&self.tally);
        t.done += 1;
        // Anything beyond the histogram's two minutes is recorded as two minutes.
        t.times.saturating_record(took.as_micros() as u64);
    }

    fn failed(&self, said: &AtomicU64, error: &anyhow::Error) {
        lock(&self.tally).failed += 1;
        if said.fetch_add(1, Ordering::Relaxed) < FAILURES_SAID {
            eprintln!("soak: a {} failed: {error:#}", self.name);
        }
    }

    fn take(&self, seconds: f64) -> OpFigures {
        let mut t = lock(&self.tally);
        let ms = |v: u64| v as f64 / 1000.0;
        let figures = OpFigures {
            done: t.done,
            failed: t.failed,
            per_second: t.done as f64 / seconds,
            ms_p50: ms(t.times.value_at_quantile(0.5)),
            ms_p99: ms(t.times.value_at_quantile(0.99)),
            ms_max: ms(t.times.max()),
        };
        t.done = 0;
        t.failed = 0;
        t.times.reset();
        figures
    }
}

struct Stats {
    reconnects: Op,
    caught_up: AtomicU64,
    history: Op,
    uploads: Op,
    failures_said: AtomicU64,
}

/// A promise the server broke (a gap in a resumed feed, a page with a hole): the run stops on it, whereas
/// a failed request only counts.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Broken(String);

fn broken(what: String) -> anyhow::Error {
    Broken(what).into()
}

/// The churn, running.
pub struct Churn {
    stats: Arc<Stats>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
    since: Instant,
}

impl Churn {
    /// Starts every device, reader and the uploader; `rooms` are the fleet's conversations, which `users`
    /// were made members of.
    pub fn start(
        target: &Target,
        args: &ChurnArgs,
        users: ChurnUsers,
        rooms: &[ConversationId],
    ) -> anyhow::Result<Churn> {
        let stats = Arc::new(Stats {
            reconnects: Op::new("reconnect")?,
            caught_up: AtomicU64::new(0),
            history: Op::new("history read")?,
            uploads: Op::new("upload")?,
            failures_said: AtomicU64::new(0),
        });
        let stop = CancellationToken::new();
        let http = super::client::http()?;
        let api = Api::with_http_client(target.base(), http.clone())?;
        let room_of = |k: usize| rooms[k % rooms.len()];
        let mut tasks = Vec::new();
        let online = Duration::from_secs(args.online_seconds.max(1));
        let devices = users.devices.len();
        for (k, session) in users.devices.into_iter().enumerate() {
            // Spread over one online-and-offline cycle, so reconnects come at a steady pace.
            let first = online.mul_f64(2.0 * k as f64 / devices as f64);
            let device = Device {
                ws_base: target.ws_base(),
                account: Account::new(api.clone(), session),
                feed: Feed { room: room_of(k), pos: None, seq: None },
                online,
            };
            tasks.push(tokio::spawn(device.run(first, stats.clone(), stop.clone())));
        }
        let readers = users.readers.len();
        for (j, session) in users.readers.into_iter().enumerate() {
            let every = Duration::from_secs_f64(readers as f64 / args.history_per_second as f64);
            let reader = Reader { account: Account::new(api.clone(), session), room: room_of(devices + j), every };
            tasks.push(tokio::spawn(reader.run(stats.clone(), stop.clone())));
        }
        if let Some(session) = users.uploader {
            let uploader = Uploader {
                account: Account::new(api.clone(), session),
                http,
                base: target.base().to_owned(),
                every: Duration::from_secs_f64(1.0 / args.uploads_per_second),
            };
            tasks.push(tokio::spawn(uploader.run(stats.clone(), stop.clone())));
        }
        Ok(Churn { stats, stop, tasks, since: Instant::now() })
    }

    /// What was done since the last call (or the start).
    pub fn take(&mut self) -> Interval {
        let seconds = self.since.elapsed().as_secs_f64().max(1e-3);
        self.since = Instant::now();
        let reconnects = self.stats.reconnects.take(seconds);
        let caught_up = self.stats.caught_up.swap(0, Ordering::Relaxed);
        Interval {
            reconnects,
            caught_up_per_reconnect: caught_up as f64 / reconnects.done.max(1) as f64,
            history: self.stats.history.take(seconds),
            uploads: self.stats.uploads.take(seconds),
        }
    }

    /// Fails when a task has stopped: only a broken promise stops one.
    pub async fn check(&mut self) -> anyhow::Result<()> {
        let Some(i) = self.tasks.iter().position(|t| t.is_finished()) else { return Ok(()) };
        self.tasks.swap_remove(i).await.context("churn task")?.context("churn")?;
        bail!("a churn task stopped before the run ended")
    }

    pub async fn finish(self) -> anyhow::Result<()> {
        self.stop.cancel();
        for task in self.tasks {
            task.await.context("churn task")??;
        }
        Ok(())
    }
}

/// A user's session, refreshed as a client does it: once a third of the access token's life is left.
struct Account {
    api: Api,
    session: Session,
    lifetime_ms: i64,
}

impl Account {
    fn new(api: Api, session: Session) -> Account {
        let lifetime_ms = session.access_expires_at - now_ms();
        Account { api, session, lifetime_ms }
    }

    fn user(&self) -> UserId {
        self.session.user.id
    }

    async fn token(&mut self) -> anyhow::Result<String> {
        if self.session.access_expires_at - now_ms() < self.lifetime_ms / 3 {
            self.session = self.api.refresh(&self.session.refresh_token).await.context("refreshing the session")?;
            self.lifetime_ms = self.session.access_expires_at - now_ms();
        }
        Ok(self.session.access_token.clone())
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Where a device's feed and its room's stream stand.
struct Feed {
    room: ConversationId,
    /// The last feed position received.
    pos: Option<u64>,
    /// The last seq of the room received.
    seq: Option<u64>,
}

impl Feed {
    /// Feed positions are dense per user, and the room's seqs dense within it, across every reconnect.
    fn take(&mut self, pos: u64, event: &Event) -> anyhow::Result<()> {
        if let Some(last) = self.pos
            && pos != last + 1
        {
            return Err(broken(format!("a resumed feed went from position {last} to {pos}")));
        }
        self.pos = Some(pos);
        if let Event::Message { message } = event
            && message.conversation_id == self.room
        {
            if let Some(last) = self.seq
                && message.seq != last + 1
            {
                return Err(broken(format!("a resumed feed went from seq {last} to {} of its room", message.seq)));
            }
            self.seq = Some(message.seq);
        }
        Ok(())
    }
}

struct Device {
    ws_base: String,
    account: Account,
    feed: Feed,
    online: Duration,
}

impl Device {
    async fn run(mut self, first: Duration, stats: Arc<Stats>, stop: CancellationToken) -> anyhow::Result<()> {
        if pause(first, &stop).await {
            return Ok(());
        }
        loop {
            if let Err(e) = self.visit(&stats, &stop).await {
                if e.is::<Broken>() {
                    return Err(e);
                }
                stats.reconnects.failed(&stats.failures_said, &e);
            }
            if pause(self.online, &stop).await {
                return Ok(());
            }
        }
    }

    /// Connects, resumes from the feed position it left at, stays online for a while, and leaves.
    async fn visit(&mut self, stats: &Stats, stop: &CancellationToken) -> anyhow::Result<()> {
        let token = self.account.token().await?;
        let started = Instant::now();
        let (socket, _) = connect(&ws_url(&self.ws_base, &token, self.account.user())).await?;
        let (mut sink, mut stream) = socket.split();
        let ServerFrame::Hello { pos: newest, .. } = next_frame(&mut stream).await? else {
            bail!("the first frame was not hello");
        };
        let since = *self.feed.pos.get_or_insert(newest);
        sink.send(Message::text(format!(r#"{{"type":"sync","since":{since}}}"#))).await?;
        let mut caught_up = 0;
        let deadline = tokio::time::Instant::now() + CATCH_UP_LIMIT;
        loop {
            let frame = tokio::time::timeout_at(deadline, next_frame(&mut stream)).await.context("catching up")??;
            match frame {
                ServerFrame::Event { pos, event } => {
                    self.feed.take(pos, &event)?;
                    caught_up += 1;
                }
                ServerFrame::Synced { pos } if Some(pos) == self.feed.pos => break,
                ServerFrame::Synced { pos } => {
                    return Err(broken(format!("synced at {pos} with events up to {:?} received", self.feed.pos)));
                }
                ServerFrame::Resync { reason, .. } => {
                    // The feed no longer reaches back that far: a client reloads over REST and starts afresh.
                    self.feed.pos = None;
                    self.feed.seq = None;
                    bail!("told to resync: {reason}");
                }
                _ => {}
            }
        }
        stats.reconnects.done(started.elapsed());
        stats.caught_up.fetch_add(caught_up, Ordering::Relaxed);
        let leave = tokio::time::Instant::now() + self.online;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(leave) => break,
                () = stop.cancelled() => break,
                frame = next_frame(&mut stream) => {
                    if let ServerFrame::Event { pos, event } = frame? {
                        self.feed.take(pos, &event)?;
                    }
                }
            }
        }
        let _ = sink.close().await;
        Ok(())
    }
}

struct Reader {
    account: Account,
    room: ConversationId,
    every: Duration,
}

impl Reader {
    async fn run(mut self, stats: Arc<Stats>, stop: CancellationToken) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut newest = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return Ok(()),
            }
            // From the newest message first, then from random points of what the room holds.
            let from = (newest > 0).then(|| rand::rng().random_range(1..=newest));
            let started = Instant::now();
            match self.page(from).await {
                Ok(page) => {
                    stats.history.done(started.elapsed());
                    check_page(&page, from)?;
                    newest = newest.max(page.last_seq);
                }
                Err(e) => stats.history.failed(&stats.failures_said, &e),
            }
        }
    }

    async fn page(&mut self, from: Option<u64>) -> anyhow::Result<herald_proto::HistoryPage> {
        let token = self.account.token().await?;
        let query = HistoryQuery { from, dir: Direction::Backward, limit: Some(PAGE) };
        Ok(self.account.api.history(&token, self.room, &query).await?)
    }
}

/// A backward page from `from` (the newest when `None`) holds the `PAGE` seqs up to it, or all down to 1.
fn check_page(page: &herald_proto::HistoryPage, from: Option<u64>) -> anyhow::Result<()> {
    let top = from.unwrap_or(page.last_seq);
    let want: Vec<u64> = (top.saturating_sub(u64::from(PAGE) - 1).max(1)..=top).collect();
    let mut got: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
    got.sort_unstable();
    if got != want {
        let span = |v: &[u64]| format!("{} seqs {:?}..{:?}", v.len(), v.first(), v.last());
        return Err(broken(format!("a history page from {top} held {}, not {}", span(&got), span(&want))));
    }
    Ok(())
}

struct Uploader {
    account: Account,
    http: reqwest::Client,
    base: String,
    every: Duration,
}

impl Uploader {
    async fn run(mut self, stats: Arc<Stats>, stop: CancellationToken) -> anyhow::Result<()> {
        let (w, h) = PHOTO;
        let photo = tokio::task::spawn_blocking(move || media::photo(w, h, 7)).await??;
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        for n in 0u64.. {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return Ok(()),
            }
            let started = Instant::now();
            match self.upload(distinct(&photo, n), n).await {
                Ok(()) => stats.uploads.done(started.elapsed()),
                Err(e) => stats.uploads.failed(&stats.failures_said, &e),
            }
        }
        Ok(())
    }

    /// Uploads, waits until ready (with every thumbnail), and fetches the 300 px thumbnail by its signed URL.
    async fn upload(&mut self, photo: Bytes, n: u64) -> anyhow::Result<()> {
        let token = self.account.token().await?;
        let sample = media::upload(&self.account.api, &token, "image", photo, n as usize).await?;
        let thumb = sample.info.variants.get("thumb_300").context("no thumb_300")?;
        let url = thumb.url.as_deref().context("thumb_300 without a URL")?;
        let url = if url.starts_with("http") { url.to_owned() } else { format!("{}{url}", self.base) };
        let body = self.http.get(&url).send().await?.error_for_status()?.bytes().await?;
        if body.len() as u64 != thumb.size {
            bail!("thumb_300 is {} bytes, not the {} its upload says", body.len(), thumb.size);
        }
        Ok(())
    }
}

/// The photo with a JPEG comment segment naming `n` after its start marker: the same picture, different
/// bytes, so the store never deduplicates one upload against another.
fn distinct(photo: &Bytes, n: u64) -> Bytes {
    let text = format!("herald soak upload {n}");
    let mut out = Vec::with_capacity(photo.len() + text.len() + 4);
    out.extend_from_slice(&photo[..2]);
    out.extend_from_slice(&[0xFF, 0xFE]);
    out.extend_from_slice(&((text.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&photo[2..]);
    Bytes::from(out)
}

/// Waits `how_long`; true when the run stopped meanwhile.
async fn pause(how_long: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(how_long) => false,
        () = stop.cancelled() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_distinct_photo_is_still_a_jpeg_and_differs() {
        let photo = media::photo(64, 48, 1).expect("a photo");
        let (a, b) = (distinct(&photo, 1), distinct(&photo, 2));
        assert_ne!(a, b);
        for jpeg in [a, b] {
            let image = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg).expect("decodes");
            assert_eq!((image.width(), image.height()), (64, 48));
        }
    }

    #[test]
    fn a_feed_with_a_gap_is_broken() {
        let room = ConversationId::new();
        let mut feed = Feed { room, pos: Some(10), seq: None };
        let receipt = Event::Receipt { conversation_id: room, user_id: UserId::new(), delivered: 0, read: 0 };
        feed.take(11, &receipt).expect("the next position");
        assert!(feed.take(13, &receipt).expect_err("a gap").is::<Broken>());
    }

    #[test]
    fn a_page_must_hold_what_the_room_holds() {
        let page = |last_seq: u64| herald_proto::HistoryPage { messages: Vec::new(), next: None, last_seq };
        check_page(&page(0), None).expect("an empty room, an empty page");
        // A room of 3 messages read from the newest: an empty page is not what it holds.
        assert!(check_page(&page(3), None).expect_err("a page short of the room").is::<Broken>());
    }
}
