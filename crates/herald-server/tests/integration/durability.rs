//! Guarantee 2: the ack comes only after the message is durable. Restart (graceful or `kill -9`) on the
//! same data dir and every acked message is there, with its seq.

use super::child::{Node, serve_command};
use super::helpers::*;
use herald_postgres::testing::TestDatabase;
use herald_proto::ConversationId;
use reqwest::StatusCode;
use serde_json::json;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test]
async fn graceful_restart_keeps_everything() {
    let app = spawn_app().await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    let c = app.direct(&alice, &bob).await;
    for i in 0..20 {
        app.send(&alice, c, &format!("m{i}"), &format!("body {i}")).await;
    }
    let before = app.all_messages(&bob, c).await;
    let app = app.restart().await;
    // Tokens, users, conversations and messages all survive; the seq continues without a gap.
    assert_eq!(app.all_messages(&bob, c).await, before);
    assert_eq!(app.send(&bob, c, "after", "still here").await, 21);
    let (status, dup) = app
        .post(
            &format!("/api/v1/conversations/{c}/messages"),
            alice.token(),
            json!({"client_msg_id": "m3", "body": "retry"}),
        )
        .await;
    assert_eq!((status, dup["seq"].clone()), (StatusCode::OK, json!(4)), "idempotency survives a restart");
    app.shutdown().await;
}

/// The storage a child process uses: its TOML and, on PostgreSQL, the database (dropped with this).
struct Backend {
    toml: String,
    _database: Option<TestDatabase>,
}

/// The suite's backend (see `helpers::postgres_backend`) as settings for a child process. On the Kafka pass the
/// child is a one-node cluster of its own, and a restarted child (given the same settings) is that node again:
/// the same topic, consumer group and Redis key prefix.
async fn child_backend() -> Backend {
    if !postgres_backend() {
        return Backend { toml: String::new(), _database: None };
    }
    let database = TestDatabase::create().await;
    let mut toml = format!(
        "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"{}\"\n{}",
        database.url(),
        CHILD_POSTGRES_POOL
    );
    if let Some(cluster) = KafkaCluster::for_this_pass() {
        toml.push_str(&cluster.toml());
    }
    Backend { toml, _database: Some(database) }
}

async fn register(http: &reqwest::Client, base: &str, name: &str) -> (String, herald_proto::UserId) {
    let r: serde_json::Value = http
        .post(format!("{base}/api/v1/accounts"))
        .json(&json!({"username": name, "password": "correct horse"}))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("json");
    (r["access_token"].as_str().expect("token").to_owned(), r["user"]["id"].as_str().expect("id").parse().expect("id"))
}

/// Registers alice and bob on `base` and opens their direct conversation: (alice's token, bob's, conversation).
async fn direct_pair(http: &reqwest::Client, base: &str) -> (String, String, ConversationId) {
    let (alice, _) = register(http, base, "alice").await;
    let (bob, bob_id) = register(http, base, "bob").await;
    let created: serde_json::Value = http
        .post(format!("{base}/api/v1/conversations"))
        .bearer_auth(&alice)
        .json(&json!({"kind": "direct", "user_id": bob_id}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    (alice, bob, conversation_id(&created))
}

#[tokio::test]
async fn kill_9_mid_traffic_loses_no_acked_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = child_backend().await;
    let mut node = Node::start_with(dir.path(), &backend.toml);
    let http = reqwest::Client::new();
    let (alice, _bob, c) = direct_pair(&http, &node.base).await;

    // Eight concurrent senders, each recording what was acked, until the node dies under them.
    let acked: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let attempted: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut lanes = Vec::new();
    for lane in 0..8 {
        let (http, base, token, acked, attempted) =
            (http.clone(), node.base.clone(), alice.clone(), acked.clone(), attempted.clone());
        lanes.push(tokio::spawn(async move {
            for n in 0.. {
                let id = format!("l{lane}-{n}");
                attempted.lock().expect("lock").push(id.clone());
                let sent = http
                    .post(format!("{base}/api/v1/conversations/{c}/messages"))
                    .bearer_auth(&token)
                    .json(&json!({"client_msg_id": id, "body": format!("message {id}")}))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                let Ok(response) = sent else { return };
                let Ok(ack) = response.json::<serde_json::Value>().await else { return };
                let Some(seq) = ack["seq"].as_u64() else { return };
                acked.lock().expect("lock").insert(id, seq);
            }
        }));
    }
    while acked.lock().expect("lock").len() < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    node.kill_9();
    for lane in lanes {
        lane.await.expect("lane");
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() >= 300);

    let node = Node::start_with(dir.path(), &backend.toml);
    // On the embedded store the node was killed within its first checkpoint interval, with sends going on:
    // the acked messages of the last moments were in the journal only, so this restart is the journal's
    // replay at work. (PostgreSQL has no journal of ours: its commit is the durability.)
    if !postgres_backend() {
        assert!(node.replayed_journal(), "no journal replay at restart: {:?}", node.startup_log);
    }
    let history = |from: u64| {
        let (http, base, token) = (http.clone(), node.base.clone(), alice.clone());
        async move {
            http.get(format!("{base}/api/v1/conversations/{c}/messages?from={from}&limit=200"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("history")
                .json::<serde_json::Value>()
                .await
                .expect("json")
        }
    };
    let mut stored: BTreeMap<String, u64> = BTreeMap::new();
    let mut seqs = Vec::new();
    let mut from = 1;
    loop {
        let page = history(from).await;
        for m in page["messages"].as_array().expect("messages") {
            let seq = m["seq"].as_u64().expect("seq");
            seqs.push(seq);
            let previous = stored.insert(m["client_msg_id"].as_str().expect("id").to_owned(), seq);
            assert!(previous.is_none(), "a client_msg_id stored twice");
        }
        match page["next"].as_u64() {
            Some(next) => from = next,
            None => break,
        }
    }
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "seqs are dense after the crash");
    for (id, seq) in &acked {
        assert_eq!(stored.get(id), Some(seq), "acked message {id} (seq {seq}) lost or moved by kill -9");
    }

    // Retrying every unacked send after the crash stores each exactly once, continuing the sequence.
    //
    // On the Kafka log, a send appended before the kill but not acknowledged is still in the log, after the
    // last committed offset: the restarted node stores it when it processes that tail, once the group has given
    // it the partitions (when the dead member's session has timed out), which may be after the history above
    // was read. Its retry is then a duplicate answered with the tail's seq. Until the node owns the partitions
    // its sends end as `unavailable`, and are retried with the same client_msg_id, as a client does.
    let kafka = kafka_backend();
    let unacked: Vec<String> =
        attempted.lock().expect("lock").iter().filter(|id| !acked.contains_key(*id)).cloned().collect();
    let retries_since = std::time::Instant::now();
    for id in &unacked {
        let (status, ack) = loop {
            let response = http
                .post(format!("{}/api/v1/conversations/{c}/messages", node.base))
                .bearer_auth(&alice)
                .json(&json!({"client_msg_id": id, "body": format!("message {id}")}))
                .send()
                .await
                .expect("retry");
            let status = response.status();
            let ack: serde_json::Value = response.json().await.expect("json");
            if kafka && status == StatusCode::SERVICE_UNAVAILABLE && retries_since.elapsed() < Duration::from_secs(60) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            break (status, ack);
        };
        assert!(
            status == StatusCode::CREATED || (status == StatusCode::OK && (stored.contains_key(id) || kafka)),
            "{id}: {status} {ack}"
        );
    }
    // Every attempted send is now stored exactly once: dense seqs 1..=attempted.
    let attempted = attempted.lock().expect("lock").len() as u64;
    assert_eq!(history(1).await["last_seq"].as_u64(), Some(attempted));
}

/// Guarantee 6 on one node: `kill -9` mid-traffic, restart, and a WebSocket client resumes from its feed
/// position with every acked message, in order, none twice.
#[tokio::test]
async fn kill_9_then_a_websocket_client_resumes_with_nothing_acked_lost() {
    use super::ws::{Ws, message_seqs};
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let dir = tempfile::tempdir().expect("tempdir");
    let backend = child_backend().await;
    let mut node = Node::start_with(dir.path(), &backend.toml);
    let http = reqwest::Client::new();
    let (alice, bob, c) = direct_pair(&http, &node.base).await;
    let ws_url = |base: &str, token: &str| format!("{}/ws?v=1&token={token}", base.replace("http://", "ws://"));

    // Bob listens; Alice pipelines sends over her socket and records every ack.
    let (socket, _) = tokio_tungstenite::connect_async(ws_url(&node.base, &bob)).await.expect("bob connects");
    let mut b = Ws::new(socket);
    b.expect("hello").await;
    b.sync(0).await;
    let (mut alice_socket, _) =
        tokio_tungstenite::connect_async(ws_url(&node.base, &alice)).await.expect("alice connects");
    let acked: Arc<Mutex<BTreeMap<u64, String>>> = Arc::default();
    let recorder = {
        let acked = acked.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                for _ in 0..8 {
                    let id = format!("a{n}");
                    n += 1;
                    let frame =
                        json!({"type": "send", "id": id, "conversation_id": c, "client_msg_id": id, "body": id});
                    if alice_socket.send(Message::text(frame.to_string())).await.is_err() {
                        return;
                    }
                }
                let mut answers = 0;
                while answers < 8 {
                    let Some(Ok(Message::Text(text))) = alice_socket.next().await else { return };
                    let frame: serde_json::Value = serde_json::from_str(&text).expect("json");
                    if frame["type"] == "ack" {
                        answers += 1;
                        let seq = frame["seq"].as_u64().expect("seq");
                        acked
                            .lock()
                            .expect("lock")
                            .insert(seq, frame["client_msg_id"].as_str().unwrap_or_default().to_owned());
                    }
                }
            }
        })
    };
    // Bob reads live until the node dies under everyone.
    let mut received = Vec::new();
    let mut last_pos = 0;
    while acked.lock().expect("lock").len() < 200 {
        let frame = b.next().await.expect("live frame");
        if frame["type"] == "event" {
            last_pos = frame["pos"].as_u64().expect("pos");
            received.push(frame);
        }
    }
    node.kill_9();
    recorder.await.expect("recorder");
    drop(b);
    let acked = acked.lock().expect("lock").clone();

    let node = Node::start_with(dir.path(), &backend.toml);
    let (socket, _) = tokio_tungstenite::connect_async(ws_url(&node.base, &bob)).await.expect("bob reconnects");
    let mut b = Ws::new(socket);
    b.expect("hello").await;
    received.extend(b.sync(last_pos).await);
    let seqs = message_seqs(&received, c);
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "every message once, in order");
    let have: std::collections::BTreeSet<u64> = seqs.iter().copied().collect();
    for (seq, id) in &acked {
        assert!(have.contains(seq), "acked message {id} (seq {seq}) missing after kill -9 and resume");
    }
}

/// A flipped byte in the journal of a node killed mid-traffic, with acknowledged records after it: the node
/// refuses to start (naming the file and the offset) instead of serving without them, `herald journal check`
/// says so, and only an explicit `herald journal truncate` lets it start, with everything before the damage.
#[tokio::test]
async fn a_damaged_journal_stops_the_start_until_an_operator_cuts_it() {
    // No checkpoint during the test: every acknowledged send stays in the journal until the kill.
    const NO_CHECKPOINT: &str = "[storage]\ncheckpoint_interval_ms = 600000\n";
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Node::start_with(dir.path(), NO_CHECKPOINT);
    let http = reqwest::Client::new();
    let (alice, _bob, c) = direct_pair(&http, &node.base).await;
    for n in 0..40 {
        let ack: serde_json::Value = http
            .post(format!("{}/api/v1/conversations/{c}/messages", node.base))
            .bearer_auth(&alice)
            .json(&json!({"client_msg_id": format!("m{n}"), "body": format!("message {n}")}))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("ack");
        assert_eq!(ack["seq"].as_u64(), Some(n + 1));
    }
    node.kill_9();

    // Flip a byte inside a record in the middle of the journal.
    let journal = dir.path().join("data").join("herald.journal");
    let mut bytes = std::fs::read(&journal).expect("journal");
    let mut offsets = Vec::new();
    let mut at = 0;
    while at + 16 <= bytes.len() {
        offsets.push(at);
        at += 16 + u32::from_le_bytes(bytes[at..at + 4].try_into().expect("length")) as usize;
    }
    assert!(offsets.len() >= 20, "the acknowledged sends are in the journal: {} records", offsets.len());
    let damaged = offsets[offsets.len() / 2];
    bytes[damaged + 20] ^= 0x08;
    std::fs::write(&journal, &bytes).expect("damage the journal");

    let refused = serve_command(dir.path(), NO_CHECKPOINT).output().expect("run herald serve");
    let said = format!("{}{}", String::from_utf8_lossy(&refused.stdout), String::from_utf8_lossy(&refused.stderr));
    assert!(!refused.status.success(), "a damaged journal with acked records after it must stop the start: {said}");
    assert!(said.contains("herald.journal") && said.contains(&format!("damaged at byte {damaged}")), "{said}");
    assert_eq!(std::fs::read(&journal).expect("journal"), bytes, "refusing changed nothing");

    let journal_command = |action: &str| {
        Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["journal", action, "--data-dir"])
            .arg(dir.path().join("data"))
            .output()
            .expect("run herald journal")
    };
    let check = journal_command("check");
    let report = String::from_utf8_lossy(&check.stdout).to_string();
    assert_eq!(check.status.code(), Some(1), "{report}");
    assert!(report.contains("DAMAGED"), "{report}");
    let cut = journal_command("truncate");
    let dropped = String::from_utf8_lossy(&cut.stdout).to_string();
    assert!(cut.status.success() && dropped.contains(&format!("at byte {damaged}")), "{dropped}");
    assert_eq!(journal_command("check").status.code(), Some(0), "nothing damaged is left");

    // It starts, with the messages before the damage, dense from 1, and goes on from there.
    let node = Node::start_with(dir.path(), NO_CHECKPOINT);
    let page: serde_json::Value = http
        .get(format!("{}/api/v1/conversations/{c}/messages?from=1&limit=100", node.base))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("history")
        .json()
        .await
        .expect("json");
    let seqs: Vec<u64> =
        page["messages"].as_array().expect("messages").iter().map(|m| m["seq"].as_u64().expect("seq")).collect();
    assert!(!seqs.is_empty() && seqs.len() < 40, "the records before the damage only: {seqs:?}");
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}

/// `herald database check` reads every page and row of a stopped node's database: clean after a clean stop,
/// and a byte flipped inside a stored message (which redb would not notice at open) is named as damage,
/// while the check itself changes nothing.
#[tokio::test]
async fn a_damaged_database_file_is_found_by_the_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Node::start_with(dir.path(), "");
    let http = reqwest::Client::new();
    let (alice, _bob, c) = direct_pair(&http, &node.base).await;
    let marker = "database-check-marker-0123456789";
    for n in 0..20 {
        let status = http
            .post(format!("{}/api/v1/conversations/{c}/messages", node.base))
            .bearer_auth(&alice)
            .json(&json!({"client_msg_id": format!("m{n}"), "body": format!("{marker} {n}")}))
            .send()
            .await
            .expect("send")
            .status();
        assert!(status.is_success(), "{status}");
    }
    // A clean stop checkpoints everything into the database file.
    let pid = node.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM").success());
    assert!(node.child.wait().expect("reaped").success(), "a clean stop");

    let data = dir.path().join("data");
    let check = || {
        let out = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["database", "check", "--data-dir"])
            .arg(&data)
            .output()
            .expect("run herald database check");
        (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    let (code, report) = check();
    assert_eq!(code, Some(0), "{report}");
    assert!(report.contains("no damage") && report.contains("messages_v2: 2"), "every message row read: {report}");

    // Flip a byte of the marker wherever the file holds it (the live page, and any stale copies).
    let file = data.join("herald.redb");
    let mut bytes = std::fs::read(&file).expect("database file");
    let found: Vec<usize> =
        bytes.windows(marker.len()).enumerate().filter(|(_, w)| *w == marker.as_bytes()).map(|(i, _)| i).collect();
    assert!(!found.is_empty(), "the messages are in the database file");
    for at in &found {
        bytes[at + 3] ^= 0x20;
    }
    std::fs::write(&file, &bytes).expect("damage the database");
    let (code, report) = check();
    assert_eq!(code, Some(1), "{report}");
    assert!(report.contains("DAMAGED"), "{report}");
    assert_eq!(std::fs::read(&file).expect("database file"), bytes, "the check changed nothing");
    let leftovers: Vec<_> = std::fs::read_dir(&data)
        .expect("data dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("herald.redb.check"))
        .collect();
    assert!(leftovers.is_empty(), "the scratch copy is removed");
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop. `None` when this process may not mount
/// (not root): the full-disk test needs a real filesystem that fills up.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        status.success().then_some(SmallDisk { dir })
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .status()
            .expect("remount");
        assert!(status.success(), "remount the tmpfs");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// The disk fills under sends: every send is then refused with `unavailable` and nothing acknowledged is
/// lost, reads go on, and once the disk has room again sends succeed without a restart; after a restart
/// every acknowledged message is there, dense.
#[tokio::test]
async fn a_full_disk_refuses_sends_and_the_node_recovers_when_space_returns() {
    let Some(disk) = SmallDisk::mount("3m") else {
        eprintln!("SKIPPED: mounting a tmpfs needs root (CI runs as root); this test did not run");
        return;
    };
    let mut node = Node::start_with(disk.dir.path(), "");
    let http = reqwest::Client::new();
    let (alice, bob, c) = direct_pair(&http, &node.base).await;
    let send = |n: usize| {
        http.post(format!("{}/api/v1/conversations/{c}/messages", node.base))
            .bearer_auth(&alice)
            .json(&json!({"client_msg_id": format!("m{n}"), "body": "x".repeat(4000)}))
            .send()
    };
    let mut acked = 0u64;
    let refusal = loop {
        let response = send(acked as usize).await.expect("send");
        if response.status() == StatusCode::CREATED {
            acked += 1;
            assert!(acked < 5_000, "3 MiB never filled");
            continue;
        }
        break (response.status(), response.json::<serde_json::Value>().await.expect("error body"));
    };
    assert_eq!(refusal.0, StatusCode::SERVICE_UNAVAILABLE, "{refusal:?}");
    assert_eq!(refusal.1["code"], "unavailable");
    assert!(acked > 100, "a few hundred sends fit: {acked}");
    for _ in 0..3 {
        assert_eq!(send(acked as usize).await.expect("send").status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let last = |http: reqwest::Client, base: String| {
        let bob = bob.clone();
        async move {
            let page: serde_json::Value = http
                .get(format!("{base}/api/v1/conversations/{c}/messages?dir=backward&limit=1"))
                .bearer_auth(&bob)
                .send()
                .await
                .expect("history")
                .json()
                .await
                .expect("page");
            page["messages"][0]["seq"].as_u64().expect("a message")
        }
    };
    assert_eq!(last(http.clone(), node.base.clone()).await, acked, "reads go on, and show every acked send");

    // Room again: the same retry succeeds, without a restart.
    disk.resize("16m");
    let response = send(acked as usize).await.expect("send");
    assert_eq!(response.status(), StatusCode::CREATED, "sends succeed once the disk has room");
    acked += 1;

    let pid = node.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM").success());
    assert!(node.child.wait().expect("reaped").success(), "a clean stop");
    let node = Node::start_with(disk.dir.path(), "");
    assert_eq!(last(http.clone(), node.base.clone()).await, acked, "every acked send survives the restart");
    let page: serde_json::Value = http
        .get(format!("{}/api/v1/conversations/{c}/messages?limit=200", node.base))
        .bearer_auth(&bob)
        .send()
        .await
        .expect("history")
        .json()
        .await
        .expect("page");
    let seqs: Vec<u64> =
        page["messages"].as_array().expect("messages").iter().filter_map(|m| m["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "dense from 1");
    drop(node);
}

/// Fifty `kill -9`s in a row at random points of a write-heavy run, with a checkpoint every 20 ms so that
/// many land during one: after every restart each acknowledged message is stored once under the seq it was
/// acknowledged with, the seqs are dense, and a device resumes its feed from where it was, gaplessly.
#[tokio::test]
async fn fifty_kills_at_random_points_lose_nothing_acknowledged() {
    use super::ws::{Ws, message_seqs, positions};
    const KILLS: usize = 50;
    const EXTRA: &str = "[storage]\ncheckpoint_interval_ms = 20\n";
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64;
    eprintln!("crash loop seed {seed}");
    let mut random = seed | 1;
    let mut next_random = move |below: u64| {
        // xorshift64: enough to spread the kill points.
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        random % below
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Node::start_with(dir.path(), EXTRA);
    let http = reqwest::Client::new();
    let (alice, bob, c) = direct_pair(&http, &node.base).await;
    let ws_url = |base: &str| format!("{}/ws?v=1&token={bob}", base.replace("http://", "ws://"));
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut bob_events = Vec::new();
    let mut bob_pos = 0;
    let mut sent = 0u64;
    let mut replays = 0;

    for kill in 0..=KILLS {
        // Everything acknowledged so far is there, once, under its seq; the seqs are dense.
        let mut stored: BTreeMap<String, u64> = BTreeMap::new();
        let mut from = 1;
        loop {
            let page: serde_json::Value = http
                .get(format!("{}/api/v1/conversations/{c}/messages?from={from}&limit=200", node.base))
                .bearer_auth(&alice)
                .send()
                .await
                .expect("history")
                .json()
                .await
                .expect("page");
            for m in page["messages"].as_array().expect("messages") {
                let id = m["client_msg_id"].as_str().expect("id").to_owned();
                let seq = m["seq"].as_u64().expect("seq");
                assert!(stored.insert(id, seq).is_none(), "after kill {kill}: a client_msg_id stored twice");
            }
            match page["next"].as_u64() {
                Some(next) => from = next,
                None => break,
            }
        }
        let mut seqs: Vec<u64> = stored.values().copied().collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "after kill {kill}: seqs not dense");
        for (id, seq) in &acked {
            assert_eq!(stored.get(id), Some(seq), "after kill {kill}: acked {id} (seq {seq}) lost or moved");
        }
        // Bob's device resumes from its feed position: the events it gets continue where it was.
        let (socket, _) = tokio_tungstenite::connect_async(ws_url(&node.base)).await.expect("bob connects");
        let mut b = Ws::new(socket);
        b.expect("hello").await;
        let replayed = b.sync(bob_pos).await;
        let got = positions(&replayed);
        assert_eq!(got, (bob_pos + 1..=bob_pos + got.len() as u64).collect::<Vec<_>>(), "after kill {kill}: feed gap");
        bob_pos += got.len() as u64;
        bob_events.extend(replayed);
        drop(b);
        if kill == KILLS {
            break;
        }

        // Four senders until the kill, at a random point 10-300 ms in.
        let acks: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
        let mut lanes = Vec::new();
        for lane in 0..4 {
            let (http, base, token, acks) = (http.clone(), node.base.clone(), alice.clone(), acks.clone());
            let first = sent + lane * 1_000_000;
            lanes.push(tokio::spawn(async move {
                for n in first.. {
                    let id = format!("k{n}");
                    let response = http
                        .post(format!("{base}/api/v1/conversations/{c}/messages"))
                        .bearer_auth(&token)
                        .json(&json!({"client_msg_id": id, "body": "y".repeat(200)}))
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                    let Ok(response) = response else { return };
                    let Ok(ack) = response.json::<serde_json::Value>().await else { return };
                    let Some(seq) = ack["seq"].as_u64() else { return };
                    acks.lock().expect("lock").push((id, seq));
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(10 + next_random(290))).await;
        node.kill_9();
        for lane in lanes {
            lane.await.expect("lane");
        }
        sent += 4 * 1_000_000 + 1;
        acked.extend(acks.lock().expect("lock").drain(..));
        node = Node::start_with(dir.path(), EXTRA);
        replays += usize::from(node.replayed_journal());
    }
    let seqs = message_seqs(&bob_events, c);
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "Bob's device got every message once, in order");
    assert!(acked.len() > 1_000, "a write-heavy run: {} acknowledged sends", acked.len());
    // Kills between a commit and its checkpoint leave records that only the journal holds.
    assert!(replays > 0, "no restart replayed the journal: the kills never landed between checkpoints");
    eprintln!("{KILLS} kills survived; {} sends acknowledged; {replays} restarts replayed the journal", acked.len());
}
