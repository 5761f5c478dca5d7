//! The Redis servers of a test's own (`herald_redis::testing`) do what the other tests rely on: a single
//! server that can be crashed and restarted empty, a cluster whose killed master is replaced by its replica,
//! and guards that leave nothing running. They are checked with `redis-cli` only, independently of the Redis
//! client the crate uses.

use std::time::{Duration, Instant};

use herald_redis::testing::{OwnRedis, OwnRedisCluster, redis_cli};

/// Whether something accepts connections on the port.
fn accepts(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A command that must succeed; its output, trimmed.
async fn ok(port: u16, args: &[&str]) -> String {
    redis_cli(port, args).await.unwrap_or_else(|e| panic!("{e}")).trim().to_owned()
}

#[tokio::test]
async fn a_single_server_is_killed_restarted_empty_and_stopped_on_drop() {
    let mut redis = OwnRedis::start().await;
    let port = redis.port();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    assert_ne!(port, 6379, "never the machine's own Redis");
    assert_eq!(ok(port, &["ping"]).await, "PONG");
    assert_eq!(ok(port, &["set", "herald:key", "value"]).await, "OK");
    assert_eq!(ok(port, &["get", "herald:key"]).await, "value");
    // Persistence is off.
    assert_eq!(ok(port, &["config", "get", "save"]).await, "save");
    assert_eq!(ok(port, &["config", "get", "appendonly"]).await, "appendonly\nno");

    redis.kill();
    assert!(!accepts(port), "a killed server refuses connections");
    assert!(redis_cli(port, &["ping"]).await.is_err());

    redis.restart().await;
    assert_eq!(redis.port(), port, "restarted on the same port");
    assert_eq!(ok(port, &["exists", "herald:key"]).await, "0", "nothing survives a crash without persistence");
    assert_eq!(ok(port, &["set", "herald:key", "again"]).await, "OK");

    drop(redis);
    assert!(!accepts(port), "the guard stops the server");
}

#[tokio::test]
async fn a_panicking_test_stops_its_server() {
    let port = tokio::spawn(async {
        let redis = OwnRedis::start().await;
        let port = redis.port();
        assert!(accepts(port));
        // Hand the port out through the panic, then unwind with the guard alive. (The panic message that the
        // test's output shows is this one, expected.)
        std::panic::panic_any(port);
    })
    .await
    .expect_err("the task panics")
    .into_panic()
    .downcast::<u16>()
    .map(|port| *port)
    .expect("the panic carries the port");
    assert!(!accepts(port), "the guard stopped the server while the panic unwound");
}

#[tokio::test]
async fn two_servers_have_ports_of_their_own() {
    let (a, b) = tokio::join!(OwnRedis::start(), OwnRedis::start());
    assert_ne!(a.port(), b.port());
    assert_eq!(ok(a.port(), &["set", "k", "a"]).await, "OK");
    assert_eq!(ok(b.port(), &["exists", "k"]).await, "0");
}

#[tokio::test]
async fn a_cluster_fails_over_to_the_replica_of_a_killed_master() {
    let started = Instant::now();
    let mut cluster = OwnRedisCluster::start().await;
    let start_time = started.elapsed();

    let ports = cluster.ports();
    assert_eq!(ports.len(), 6);
    assert_eq!(cluster.urls(), ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect::<Vec<_>>());
    for &port in &ports {
        let info = ok(port, &["cluster", "info"]).await;
        assert!(info.contains("cluster_state:ok"), "127.0.0.1:{port}: {info}");
        assert!(info.contains("cluster_size:3"), "127.0.0.1:{port}: {info}");
    }
    let masters = cluster.master_ports().await;
    assert_eq!(masters.len(), 3, "{masters:?}");
    for &master in &masters {
        assert_eq!(cluster.replicas_of(master).await.len(), 1, "one replica for 127.0.0.1:{master}");
    }

    // Keys on every master, written through any node (-c follows the redirections).
    let keys: Vec<String> = (0..30).map(|i| format!("herald:key:{i}")).collect();
    for key in &keys {
        assert_eq!(ok(ports[0], &["-c", "set", key, key]).await, "OK");
    }
    let mut on_master = Vec::new();
    for &master in &masters {
        let count: usize = ok(master, &["dbsize"]).await.parse().expect("DBSIZE is a number");
        assert!(count > 0, "the keys spread over every master; 127.0.0.1:{master} has none");
        on_master.push(count);
    }
    assert_eq!(on_master.iter().sum::<usize>(), keys.len());

    let victim = masters[0];
    let replica = cluster.replicas_of(victim).await[0];
    // Replication is asynchronous: wait until the replica has the victim's keys, so that all must survive.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ok(replica, &["dbsize"]).await != on_master[0].to_string() {
        assert!(Instant::now() < deadline, "the replica 127.0.0.1:{replica} did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let killed_at = Instant::now();
    assert_eq!(cluster.kill_master(0).await, victim);
    assert!(!accepts(victim), "a killed master refuses connections");
    cluster.wait_healthy(Duration::from_secs(30)).await;
    let failover_time = killed_at.elapsed();
    println!("cluster start: {start_time:?}; failover: {failover_time:?}");

    let masters_now = cluster.master_ports().await;
    assert_eq!(masters_now.len(), 3, "{masters_now:?}");
    assert!(!masters_now.contains(&victim), "{masters_now:?} still has the killed 127.0.0.1:{victim}");
    assert_eq!(masters_now[0], replica, "the replica took over the killed master's slots");
    assert_eq!(masters_now[1..], masters[1..]);
    assert!(ok(replica, &["role"]).await.starts_with("master"), "127.0.0.1:{replica} was promoted");

    let survivor = ports.iter().copied().find(|&p| p != victim).expect("a live node");
    for key in &keys {
        assert_eq!(ok(survivor, &["-c", "get", key]).await, *key, "{key} after the failover");
    }
    assert_eq!(ok(replica, &["-c", "set", "herald:after", "1"]).await, "OK");

    drop(cluster);
    for port in ports {
        assert!(!accepts(port), "the guard stopped 127.0.0.1:{port}");
    }
}
