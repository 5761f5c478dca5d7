//! Issue 20, three nodes as one: three `herald serve` child processes on the Kafka log (a tansu broker of the
//! test's own), one PostgreSQL database and one Redis, with a private nginx in front of them configured from
//! deploy/nginx/herald.conf itself (the node list and the listen address filled in, as scripts/cluster does).
//! Everything a client does goes through nginx; the nodes are only asked directly what they served (their
//! /metrics), and once to resume a device on another node.

use super::super::child::Node;
use super::super::helpers::{self, TestApp, User};
use super::super::ws::{Ws, message_seqs};
use super::{events_until, scraped, wait_until};
use herald_postgres::testing::TestDatabase;
use herald_proto::{ConversationId, UserId};
use herald_redis::testing::OwnRedis;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const NODES: usize = 3;
const PARTITIONS: u32 = 6;

/// Clients through nginx chat 1:1 and in a group, and every member sees one order; nginx keeps each user's
/// sockets on one node (read from each node's `websocket_connections_total`), spreads users over nodes by
/// the `user` hint, and spreads REST over more than one node (least_conn); a device that dropped resumes on
/// another node with exactly what it missed; a socket whose hint is not its token's user is refused; the
/// nodes' /internal/ path and a draining node's 503 never reach a client.
///
/// It fails when the conf stops hashing on the hint (every test socket comes from 127.0.0.1, so hashing on
/// the address puts them all on one node), or when nginx stops passing the WebSocket upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_behind_nginx_chat_as_one() {
    let Some(nginx_binary) = nginx_binary() else { return };
    let Some(broker) = herald_kafka::testing::OwnBroker::start().await else { return };
    let redis = OwnRedis::start().await;
    let database = TestDatabase::create().await;
    let settings = format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n\
         [storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"{}\"\n{}\
         [logins]\nregistrations_per_hour = 1000000\n[log]\npartitions = {PARTITIONS}\napply_timeout_ms = 5000\n\
         [cluster]\nredis_urls = [\"{}\"]\nkey_prefix = \"{}\"\nlog = \"kafka\"\n\
         [cluster.kafka]\nbrokers = \"{}\"\ngroup_id = \"{}\"\nsession_timeout_ms = 6000\nheartbeat_interval_ms = 500\n\
         fetch_wait_max_ms = {}\nlinger_ms = {}\n",
        database.url(),
        helpers::CHILD_POSTGRES_POOL,
        redis.url(),
        helpers::unique_name("herald"),
        broker.brokers(),
        helpers::unique_name("herald"),
        helpers::KAFKA_TEST_FETCH_WAIT_MS,
        helpers::KAFKA_TEST_LINGER_MS,
    );
    let dirs: Vec<tempfile::TempDir> = (0..NODES).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    // One after the other: the first creates the topic and the schema.
    let mut nodes = Vec::new();
    for dir in &dirs {
        nodes.push(tokio::task::block_in_place(|| Node::start_with(dir.path(), &settings)));
    }
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let http = reqwest::Client::new();
    let owned = async |i: usize| scraped(&http, &bases[i], "cluster_partitions_owned").await.unwrap_or(0.0);
    wait_until("the three nodes share the partitions", Duration::from_secs(90), async || {
        let mut all = Vec::new();
        for i in 0..NODES {
            all.push(owned(i).await);
        }
        all.iter().all(|o| *o >= 1.0) && all.iter().sum::<f64>() == f64::from(PARTITIONS)
    })
    .await;

    let nginx = Nginx::start(&nginx_binary, &bases);
    let proxy = helpers::at(&nginx.base);

    // Refused at nginx, whatever the spelling: the nodes' forward path. A node itself answers it (not 404).
    for path in
        ["/internal/v1/forward", "/%69nternal/v1/forward", "/api/../internal/v1/forward", "//internal/v1/forward"]
    {
        assert_eq!(raw_status(&nginx.address, "POST", path).await, 404, "{path} through nginx");
    }
    assert_ne!(raw_status(&address_of(&bases[0]), "POST", "/internal/v1/forward").await, 404, "the node has it");
    // /metrics from loopback is allowed.
    let (status, _) = proxy.call(reqwest::Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK, "/metrics from 127.0.0.1 through nginx");

    // Users until two of them hash to different nodes (with three nodes, the first few do).
    let mut users: Vec<(User, usize)> = Vec::new();
    let mut sockets: Vec<Ws> = Vec::new();
    while users.iter().map(|(_, node)| *node).collect::<BTreeSet<_>>().len() < 2 || users.len() < 3 {
        assert!(users.len() < 12, "twelve users, all on one node: nginx does not hash on the user hint");
        let user = proxy.register("u").await;
        let (ws, node) = connect_counted(&http, &bases, &nginx.ws_base(), &user, Some(user.id())).await;
        sockets.push(ws);
        users.push((user, node));
    }
    // Sticky: a second device of each user, and a reconnect of the first, land on the same node.
    for (user, node) in &users {
        let second = proxy.login(user).await;
        let (ws, again) = connect_counted(&http, &bases, &nginx.ws_base(), &second, Some(user.id())).await;
        assert_eq!(again, *node, "a second device of {} on the node of the first", user.id());
        sockets.push(ws);
        let (ws, again) = connect_counted(&http, &bases, &nginx.ws_base(), user, Some(user.id())).await;
        assert_eq!(again, *node, "a reconnect of {} on the same node", user.id());
        sockets.push(ws);
    }
    let homes: BTreeMap<UserId, usize> = users.iter().map(|(u, n)| (u.id(), *n)).collect();
    eprintln!("users per node: {homes:?}");
    drop(sockets);
    // Closed on every node before counting again (a close and an open on one node would cancel out).
    wait_until("the sockets are closed", Duration::from_secs(15), async || {
        sockets_per_node(&http, &bases).await.iter().sum::<f64>() == 0.0
    })
    .await;

    // A hint that is not the token's user is refused, through nginx as directly.
    let (alice, bob) = (&users[0].0, &users[1].0);
    let url = format!("{}/ws?v=1&token={}&user={}", nginx.ws_base(), alice.token(), bob.id());
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 400),
        other => panic!("another user's hint through nginx: {other:?}"),
    }

    // REST through least_conn reaches more than one node.
    let before = requests_per_node(&http, &bases).await;
    let burst: Vec<_> = (0..30)
        .map(|_| {
            let (http, base, token) = (proxy.http.clone(), nginx.base.clone(), alice.token().to_owned());
            tokio::spawn(async move { http.get(format!("{base}/api/v1/me")).bearer_auth(token).send().await })
        })
        .collect();
    for request in burst {
        let response = request.await.expect("task").expect("GET /api/v1/me through nginx");
        assert_eq!(response.status(), StatusCode::OK);
    }
    let after = requests_per_node(&http, &bases).await;
    let served: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(served.iter().sum::<f64>(), 30.0, "every request served once: {served:?}");
    assert!(served.iter().filter(|n| **n > 0.0).count() >= 2, "least_conn spread the requests: {served:?}");

    // Chat through nginx: Alice and Bob 1:1, a group of Alice, Bob and Carol; every device through nginx.
    let carol = &users[2].0;
    let direct = proxy.direct(alice, bob).await;
    let group = proxy.group(bob, &[alice, carol]).await;
    let mut devices = Vec::new();
    for (user, in_direct) in [(alice, true), (bob, true), (carol, false)] {
        let (mut ws, _) = connect_counted(&http, &bases, &nginx.ws_base(), user, Some(user.id())).await;
        ws.sync(0).await;
        devices.push((user, ws, in_direct));
    }
    // A second device of Alice's, which will drop and resume on another node.
    let wanderer = proxy.login(alice).await;
    let (mut wanderer_ws, _) = connect_counted(&http, &bases, &nginx.ws_base(), &wanderer, Some(alice.id())).await;
    wanderer_ws.sync(0).await;

    let rounds = 10;
    for i in 0..rounds {
        send(&proxy, alice, direct, &format!("d-a-{i}")).await;
        send(&proxy, bob, direct, &format!("d-b-{i}")).await;
        send(&proxy, bob, group, &format!("g-b-{i}")).await;
        send(&proxy, carol, group, &format!("g-c-{i}")).await;
        if i == rounds / 2 {
            // Over WebSocket too: Alice's device sends into the group through her node.
            let ack = devices[0].1.send_message(group, "g-a-ws", "over the socket").await;
            assert_eq!(ack["type"], "ack", "{ack}");
        }
    }
    let direct_last = proxy.last_seq(bob, direct).await;
    let group_last = proxy.last_seq(bob, group).await;
    assert_eq!(direct_last, 2 * rounds, "each direct send stored once");
    assert_eq!(group_last, 2 * rounds + 1, "each group send stored once");
    let mut group_orders = Vec::new();
    for (user, ws, in_direct) in &mut devices {
        let mut targets = vec![(group, group_last)];
        if *in_direct {
            targets.push((direct, direct_last));
        }
        let events = events_until(ws, &targets).await;
        if *in_direct {
            assert_eq!(message_seqs(&events, direct), (1..=direct_last).collect::<Vec<_>>(), "{}: direct", user.id());
        }
        assert_eq!(message_seqs(&events, group), (1..=group_last).collect::<Vec<_>>(), "{}: group", user.id());
        group_orders.push(bodies(&events, group));
    }
    for order in &group_orders[1..] {
        assert_eq!(order, &group_orders[0], "one order for every member");
    }

    // The wanderer has it all too; it drops, misses messages, and resumes on a node nginx would not pick.
    let events = events_until(&mut wanderer_ws, &[(direct, direct_last), (group, group_last)]).await;
    let pos = events.last().and_then(|e| e["pos"].as_u64()).expect("a position");
    drop(wanderer_ws);
    for i in 0..3 {
        send(&proxy, bob, direct, &format!("missed-d-{i}")).await;
        send(&proxy, carol, group, &format!("missed-g-{i}")).await;
    }
    let elsewhere = (homes[&alice.id()] + 1) % NODES;
    let node = helpers::at(&bases[elsewhere]);
    let (mut resumed, replayed) = Ws::connect_synced(&node, &wanderer, pos).await;
    assert_eq!(message_seqs(&replayed, direct), (direct_last + 1..=direct_last + 3).collect::<Vec<_>>());
    assert_eq!(message_seqs(&replayed, group), (group_last + 1..=group_last + 3).collect::<Vec<_>>());
    let positions: Vec<u64> = replayed.iter().filter_map(|e| e["pos"].as_u64()).collect();
    assert!(positions.first().is_some_and(|p| *p > pos), "nothing before the resume point: {positions:?}");
    assert!(positions.windows(2).all(|w| w[1] > w[0]), "in order: {positions:?}");
    // And it is live there: the next message arrives on the other node.
    let seq = send(&proxy, bob, direct, "after-resume").await;
    let live = events_until(&mut resumed, &[(direct, seq)]).await;
    assert_eq!(message_seqs(&live, direct).last(), Some(&seq));

    // A draining node: nginx sends new sockets elsewhere instead of passing its 503 on. The node of the
    // first user gets SIGTERM; that user's sockets now land on another node, as a client of it would.
    let (drained_user, drained_node) = (&users[0].0, users[0].1);
    drop(devices);
    drop(resumed);
    // Logged in first: nginx never retries a login (a POST without an idempotency key), so one that reached
    // the node as it closed its last connections would fail, as it would for any client.
    let device = proxy.login(drained_user).await;
    nodes[drained_node].terminate();
    // First /readyz turns 503 while the node hands its partitions over (it still takes sockets then, and sends
    // them away with a reconnect hint); then new sockets get 503, and at last the port closes.
    let direct = format!("{}/ws?v=1&token={}", bases[drained_node].replace("http://", "ws://"), device.token());
    wait_until("the node refuses new sockets", Duration::from_secs(60), async || {
        tokio_tungstenite::connect_async(direct.as_str()).await.is_err()
    })
    .await;
    let url = format!("{}/ws?v=1&token={}&user={}", nginx.ws_base(), device.token(), drained_user.id());
    let (socket, _) = tokio_tungstenite::connect_async(url).await.expect("a socket on another node");
    let mut ws = Ws::new(socket);
    assert_eq!(ws.expect("hello").await["user_id"], json!(drained_user.id()));
}

/// nginx's binary: `HERALD_NGINX`, else `nginx` on PATH, else /usr/sbin/nginx. None (the test is skipped)
/// when there is none, except under CI, where scripts/test installs it and its absence is a failure.
fn nginx_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::var_os("HERALD_NGINX")
        .map(PathBuf::from)
        .into_iter()
        .chain(std::env::split_paths(&path).map(|dir| dir.join("nginx")))
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|p| p.is_file());
    if found.is_none() {
        let hint = "no nginx (Debian's nginx package; scripts/test installs it), or set HERALD_NGINX";
        assert!(std::env::var_os("CI").is_none(), "{hint}");
        eprintln!("skipped: {hint}");
    }
    found
}

/// An nginx of the test's own, in a temp dir, from deploy/nginx/herald.conf; stopped on drop.
struct Nginx {
    child: Child,
    address: String,
    base: String,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(binary: &Path, bases: &[String]) -> Nginx {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
        let address = format!("127.0.0.1:{port}");
        let template =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nginx/herald.conf"))
                .expect("deploy/nginx/herald.conf");
        let nodes: Vec<String> = bases.iter().map(|b| address_of(b)).collect();
        let prefix = dir.path().display().to_string();
        let access_log = format!("{prefix}/logs/herald-access.log");
        std::fs::write(dir.path().join("herald.conf"), render(&template, &address, &access_log, &nodes))
            .expect("herald.conf");
        for sub in ["logs", "temp"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("dir");
        }
        // The same main configuration as scripts/lib/nginx.sh writes.
        std::fs::write(
            dir.path().join("nginx.conf"),
            format!(
                "pid {prefix}/nginx.pid;\nerror_log {prefix}/logs/error.log warn;\nworker_processes 2;\n\
                 events {{\n    worker_connections 1024;\n}}\n\
                 http {{\n    access_log {prefix}/logs/access.log;\n    client_body_temp_path {prefix}/temp/body;\n\
                 proxy_temp_path {prefix}/temp/proxy;\n    fastcgi_temp_path {prefix}/temp/fastcgi;\n\
                 uwsgi_temp_path {prefix}/temp/uwsgi;\n    scgi_temp_path {prefix}/temp/scgi;\n\
                 include {prefix}/herald.conf;\n}}\n"
            ),
        )
        .expect("nginx.conf");
        let child = Command::new(binary)
            .args(["-p", &prefix, "-c", &format!("{prefix}/nginx.conf"), "-g", "daemon off;"])
            .stdin(Stdio::null())
            .spawn()
            .expect("start nginx");
        let nginx = Nginx { child, base: format!("http://{address}"), address, _dir: dir };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&nginx.address).is_err() {
            let log = std::fs::read_to_string(nginx._dir.path().join("logs/error.log")).unwrap_or_default();
            assert!(std::time::Instant::now() < deadline, "nginx did not listen within 10 s:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
        nginx
    }

    fn ws_base(&self) -> String {
        format!("ws://{}", self.address)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers (SIGKILL would leave them behind).
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// herald.conf with every run of `# herald-node` lines repeated once per node, the `# herald-listen` line
/// listening on `listen`, and the `# herald-access-log` line writing to `access_log` (what
/// scripts/lib/nginx.sh's render_herald_conf does).
fn render(template: &str, listen: &str, access_log: &str, nodes: &[String]) -> String {
    let mut out = String::new();
    let mut in_run = false;
    for line in template.lines() {
        if line.trim_end().ends_with("# herald-node") {
            if !in_run {
                let (indent, rest) = line.split_once("server ").expect("a node line is a server line");
                let options = rest.split_once(' ').map_or("", |(_, options)| options);
                for node in nodes {
                    out.push_str(&format!("{indent}server {node} {options}\n"));
                }
            }
            in_run = true;
            continue;
        }
        in_run = false;
        if line.trim_end().ends_with("# herald-listen") {
            out.push_str(&format!("    listen {listen};  # herald-listen\n"));
        } else if line.trim_end().ends_with("# herald-access-log") {
            out.push_str(&format!("    access_log {access_log} herald_no_query;  # herald-access-log\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(out.contains(&format!("server {} ", nodes[0])), "the template has no `# herald-node` lines");
    out
}

fn address_of(base: &str) -> String {
    base.trim_start_matches("http://").trim_end_matches('/').to_owned()
}

/// Each node's open WebSocket connections (`websocket_connections_total` is a gauge).
async fn sockets_per_node(http: &reqwest::Client, bases: &[String]) -> Vec<f64> {
    let mut out = Vec::new();
    for base in bases {
        out.push(scraped(http, base, "websocket_connections_total").await.unwrap_or(0.0));
    }
    out
}

/// Connects `user`'s device to `ws_base` with the `user` hint `hint`, reads `hello`, and says which node took
/// the socket: the one whose open connections grew by one (connections are opened one at a time here, and
/// none is closed meanwhile).
async fn connect_counted(
    http: &reqwest::Client,
    bases: &[String],
    ws_base: &str,
    user: &User,
    hint: Option<UserId>,
) -> (Ws, usize) {
    let before = sockets_per_node(http, bases).await;
    let mut url = format!("{ws_base}/ws?v=1&token={}", user.token());
    if let Some(hint) = hint {
        url.push_str(&format!("&user={hint}"));
    }
    let (socket, _) = tokio_tungstenite::connect_async(url).await.expect("a socket through nginx");
    let mut ws = Ws::new(socket);
    ws.hello = ws.expect("hello").await;
    // The gauge is raised before hello is sent; a scrape may still race a node's recorder by a moment.
    let mut grown = Vec::new();
    for _ in 0..50 {
        let after = sockets_per_node(http, bases).await;
        grown = (0..bases.len()).filter(|i| after[*i] > before[*i]).collect();
        if !grown.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(grown.len(), 1, "exactly one node took the socket: {grown:?}");
    (ws, grown[0])
}

/// Each node's count of `GET /api/v1/me` answered.
async fn requests_per_node(http: &reqwest::Client, bases: &[String]) -> Vec<f64> {
    let mut out = Vec::new();
    for base in bases {
        let text = http.get(format!("{base}/metrics")).send().await.expect("scrape").text().await.expect("text");
        let count = text
            .lines()
            .filter(|l| l.starts_with("http_requests_total{") && l.contains("route=\"/api/v1/me\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        out.push(count);
    }
    out
}

/// Sends over REST through nginx, retrying what a client retries (503 while the group settles, and the 502
/// nginx answers when it has no node left to try) with the same client_msg_id; returns the seq.
async fn send(proxy: &TestApp, user: &User, conversation: ConversationId, client_msg_id: &str) -> u64 {
    for _ in 0..100 {
        let (status, ack) = proxy.post_message(user, conversation, client_msg_id, client_msg_id).await;
        match status {
            StatusCode::CREATED | StatusCode::OK => return ack["seq"].as_u64().expect("seq"),
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::BAD_GATEWAY => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => panic!("send {client_msg_id}: {other} {ack}"),
        }
    }
    panic!("send {client_msg_id}: still refused after 100 tries");
}

/// (seq, body) of the group's messages among `events`, in the order they arrived.
fn bodies(events: &[Value], conversation: ConversationId) -> Vec<(u64, String)> {
    events
        .iter()
        .filter(|e| e["event"]["message"]["conversation_id"] == json!(conversation))
        .map(|e| (e["event"]["message"]["seq"].as_u64().expect("seq"), e["event"]["message"]["body"].to_string()))
        .collect()
}

/// The status of a raw HTTP/1.1 request to `address` for `path` exactly as written (no client normalises
/// it on the way: `..` and `%69` reach nginx as they are).
async fn raw_status(address: &str, method: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
         Connection: close\r\n\r\n{{}}"
    );
    stream.write_all(request.as_bytes()).await.expect("request");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("an answer within 10 s")
        .expect("read");
    let text = String::from_utf8_lossy(&response);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("not an HTTP answer: {text}"))
}
