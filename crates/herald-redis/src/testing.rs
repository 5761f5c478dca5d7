//! Redis servers of a test's own (feature `testing`), the way each integration test gets an app of its own:
//! [`OwnRedis`] is a single `redis-server`, [`OwnRedisCluster`] a Redis Cluster of 3 masters with a replica
//! each. Every server is a child process on free ports of 127.0.0.1, in a temp dir, without persistence, and is
//! killed (SIGKILL) and reaped when its guard is dropped, on every exit path of a test, a panic included. The
//! machine's own Redis (Debian's service on 6379, if any) is never touched.
//!
//! The binaries are Debian's `redis-server` and `redis-cli` (packages `redis-server` and `redis-tools`;
//! scripts/test installs them), found on `PATH` or in `/usr/bin`, or named by `HERALD_REDIS_SERVER` and
//! `HERALD_REDIS_CLI`. Nothing here uses a Redis client library: the helpers talk to the servers through
//! `redis-cli`, so this module compiles in a moment and checks the servers independently of the client that
//! the code under test uses.
//!
//! The guards are plain `std::process::Child`ren, killed with a blocking kill + wait in `Drop`: that works
//! whichever runtime, if any, is still alive when the test ends, and leaves no zombie behind. The methods that
//! wait (start, restart, failover) are `async` and sleep with tokio, so a test's other tasks (a client that
//! reconnects, say) keep running meanwhile. A test process killed outright (SIGKILL, `panic = "abort"`) runs
//! no `Drop`, and leaves its servers running until they are killed by hand.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a server may take to answer after it was spawned. It starts in milliseconds; 10 s leaves room
/// for a machine loaded by a parallel test run.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one `redis-cli` call may take before it counts as no answer (a server that is alive answers in
/// milliseconds; a dead one refuses the connection at once).
const CLI_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------------
// A single server
// ---------------------------------------------------------------------------------------------------

/// A `redis-server` of the test's own on a free port of 127.0.0.1, in a temp dir, with persistence off (no
/// RDB snapshots, no AOF), so a [`restart`](OwnRedis::restart) after a [`kill`](OwnRedis::kill) comes back
/// empty, as a crashed Redis without persistence does. Killed on drop.
pub struct OwnRedis {
    // `server` is dropped (killed and reaped) before `_dir` (declared after it) is removed.
    server: Server,
    /// Held for its `Drop`, which removes the directory.
    _dir: tempfile::TempDir,
}

impl OwnRedis {
    /// Starts the server and waits until it answers (it starts in ~10 ms).
    ///
    /// # Panics
    /// When `redis-server` is not installed (the message says how to install it) or does not answer within
    /// 10 s (the message shows its log).
    pub async fn start() -> OwnRedis {
        let dir = tempfile::Builder::new().prefix("herald-redis-").tempdir().expect("a temp dir for redis-server");
        let server = Server::start(dir.path().to_owned(), false).await;
        OwnRedis { server, _dir: dir }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.server.port)
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// Kills the server with SIGKILL and waits until it has exited: a crash, as far as its clients can tell
    /// (connections reset, new ones refused). Does nothing when it is not running.
    pub fn kill(&mut self) {
        self.server.kill();
    }

    /// Starts the server again on the same port (killing it first if it runs). It comes back empty: nothing
    /// was persisted.
    ///
    /// # Panics
    /// When it does not come back within 10 s, e.g. because another process took the port meanwhile (the
    /// message shows the log).
    pub async fn restart(&mut self) {
        self.server.kill();
        if let Err(failure) = self.server.run().await {
            panic!("redis-server did not restart on port {}: {failure}", self.server.port);
        }
    }

    /// The server's log (stdout and stderr of every run), for failure messages.
    pub fn log(&self) -> String {
        self.server.log()
    }
}

// ---------------------------------------------------------------------------------------------------
// A cluster
// ---------------------------------------------------------------------------------------------------

/// How many slot-owning masters the cluster has; each has one replica.
const MASTERS: usize = 3;

/// All of Redis Cluster's hash slots.
const SLOTS: u32 = 16384;

/// A Redis Cluster of the test's own: 3 masters, each with a replica (6 `redis-server` processes, each in its
/// own directory of one temp dir, on free ports of 127.0.0.1), made with `redis-cli --cluster create`. The
/// replicas are there so that a test can kill a master ([`kill_master`](OwnRedisCluster::kill_master)) and see
/// its replica take over ([`wait_healthy`](OwnRedisCluster::wait_healthy)). All nodes are killed on drop.
///
/// Settings, for fast and reliable failover:
/// - `cluster-node-timeout 2000`: a master that does not answer for 2 s is suspected (PFAIL), and marked
///   FAIL once a majority of masters agree; its replica then runs an election after 0.5–1 s. (The default,
///   15 s, would make every failover test wait 15 s or more.) Much lower is flaky on a loaded machine: a
///   node busy for a moment would be failed over for nothing.
/// - `cluster-replica-validity-factor 0`: a replica always tries to fail over, however long it has been cut
///   off from its master. With the default (10), a replica whose link has been down for longer than
///   10 × node timeout + 10 s refuses; that cannot happen in these short tests, and 0 makes sure it never
///   blocks a failover on a slow machine either. (Redis documents 0 as the setting for maximum
///   availability.)
/// - `cluster-require-full-coverage` and `cluster-allow-reads-when-down` keep their defaults (yes, no):
///   while a failed master's slots have no owner the whole cluster answers `CLUSTERDOWN`, as a production
///   cluster does, and `cluster_state:ok` means that every slot is served again, which is what
///   [`wait_healthy`](OwnRedisCluster::wait_healthy) waits for.
/// - `repl-diskless-sync-delay 0`: a master sends a new replica its first sync at once; by default it
///   waits 5 s for more replicas to share the transfer, which made [`start`](OwnRedisCluster::start) 5 s
///   slower.
/// - Each node has its cluster bus on a free port of its own (`cluster-port`) rather than the default
///   port + 10000, which might be taken, or above 65535 for ports from the ephemeral range.
///
/// Measured on a 2-CPU machine (Redis 7.0, debug build of the tests): [`start`](OwnRedisCluster::start)
/// takes about 3 s (2.3–3.5 s; up to 4.8 s with four clusters starting at once): the nodes start in ~0.2 s,
/// `redis-cli --cluster create` takes 2 s (it waits in 1 s steps for the nodes to meet), then ~1 s until
/// every node has heard of every replica by gossip and the replicas have synced. A failover, from
/// [`kill_master`](OwnRedisCluster::kill_master) until [`wait_healthy`](OwnRedisCluster::wait_healthy)
/// returns, takes 3.3–4.6 s: ~2.4 s until the master is marked FAIL (the 2 s node timeout, then the
/// masters' agreement), then the replica's election delay (0.5–1 s) and the new slot map reaching every
/// node. A test that waits for a failover should allow 30 s, for loaded machines.
pub struct OwnRedisCluster {
    // The nodes are dropped (killed and reaped) before `_dir` (declared after them) is removed.
    nodes: Vec<Server>,
    /// Held for its `Drop`, which removes the directory.
    _dir: tempfile::TempDir,
}

impl OwnRedisCluster {
    /// Starts 6 nodes, makes them a cluster of 3 masters with a replica each, and waits until every node
    /// agrees that all slots are served and every replica has synced with its master (so that a master can
    /// be killed at once, and what was written to it is on its replica).
    ///
    /// # Panics
    /// When the binaries are missing, a node does not start, `redis-cli --cluster create` fails, or the
    /// cluster is not healthy within 60 s (the message says what was not ready, with the nodes' logs).
    pub async fn start() -> OwnRedisCluster {
        let dir =
            tempfile::Builder::new().prefix("herald-redis-cluster-").tempdir().expect("a temp dir for a Redis Cluster");
        let mut nodes = Vec::with_capacity(2 * MASTERS);
        for i in 0..2 * MASTERS {
            nodes.push(Server::start(dir.path().join(format!("node-{i}")), true).await);
        }
        let cluster = OwnRedisCluster { nodes, _dir: dir };

        let mut create = tokio::process::Command::new(redis_cli_binary());
        create
            .args(["--cluster", "create"])
            .args(cluster.nodes.iter().map(|node| format!("127.0.0.1:{}", node.port)))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let output = match tokio::time::timeout(Duration::from_secs(60), create.output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => panic!("cannot run {}: {e}", redis_cli_binary().display()),
            Err(_) => panic!("redis-cli --cluster create did not finish within 60 s\n{}", cluster.logs()),
        };
        if !output.status.success() {
            panic!(
                "redis-cli --cluster create failed ({}):\n{}{}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                cluster.logs()
            );
        }
        cluster.wait_until(Duration::from_secs(60), true).await;
        cluster
    }

    /// `redis://127.0.0.1:PORT` of every node, masters and replicas, killed ones included (a cluster client
    /// needs only one that answers to find the others).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|node| format!("redis://127.0.0.1:{}", node.port)).collect()
    }

    /// The ports of every node, masters and replicas, killed ones included.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|node| node.port).collect()
    }

    /// The ports of the masters that serve slots, as the first live node sees them (CLUSTER NODES), in slot
    /// order: the master of slot 0 first. A killed master stays in this list until the cluster has failed it
    /// over; then its replica takes its place.
    ///
    /// # Panics
    /// When no node answers.
    pub async fn master_ports(&self) -> Vec<u16> {
        let nodes = self.cluster_nodes().await;
        slot_map(&nodes).into_values().fold(Vec::new(), |mut masters, port| {
            if !masters.contains(&port) {
                masters.push(port);
            }
            masters
        })
    }

    /// The ports of the replicas of the master on `master_port`, as the first live node sees them.
    ///
    /// # Panics
    /// When no node answers.
    pub async fn replicas_of(&self, master_port: u16) -> Vec<u16> {
        let nodes = self.cluster_nodes().await;
        let Some(master) = nodes.iter().find(|node| node.port == master_port) else {
            return Vec::new();
        };
        nodes.iter().filter(|node| node.master_id.as_deref() == Some(&master.id)).map(|node| node.port).collect()
    }

    /// Kills the master at `index` of [`master_ports`](Self::master_ports) with SIGKILL, waits until it has
    /// exited, and returns its port. Its replica takes over 3–5 s later: see
    /// [`wait_healthy`](Self::wait_healthy). (Killing a second master before that leaves no majority of
    /// masters to agree on a failover: the cluster stays down.)
    ///
    /// # Panics
    /// When `index` is not below the number of masters.
    pub async fn kill_master(&mut self, index: usize) -> u16 {
        let masters = self.master_ports().await;
        let Some(&port) = masters.get(index) else {
            panic!("kill_master({index}): the cluster has {} masters: {masters:?}", masters.len());
        };
        self.kill_node(port);
        port
    }

    /// Kills the node on `port` (master or replica) with SIGKILL and waits until it has exited.
    ///
    /// # Panics
    /// When no node of this cluster has that port.
    pub fn kill_node(&mut self, port: u16) {
        let Some(node) = self.nodes.iter_mut().find(|node| node.port == port) else {
            panic!("kill_node({port}): no node of this cluster has that port");
        };
        node.kill();
    }

    /// Waits until the cluster is healthy again on every live node: `cluster_state:ok` with all 16384 slots
    /// served, all nodes agreeing on who serves which, and no slot served by a killed node (so after
    /// [`kill_master`](Self::kill_master) this returns only once the replica has been promoted and every
    /// node knows it, not in the seconds before the cluster notices). Returns how long it waited.
    ///
    /// # Panics
    /// When the cluster is not healthy within `timeout` (the message says what was not, with the logs).
    pub async fn wait_healthy(&self, timeout: Duration) -> Duration {
        self.wait_until(timeout, false).await
    }

    /// Waits until [`health`](Self::health) passes; panics after `timeout`.
    async fn wait_until(&self, timeout: Duration, replicas_synced: bool) -> Duration {
        let started = Instant::now();
        loop {
            let failure = match self.health(replicas_synced).await {
                Ok(()) => return started.elapsed(),
                Err(failure) => failure,
            };
            if started.elapsed() > timeout {
                panic!("the Redis Cluster was not healthy within {timeout:?}: {failure}\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether every live node reports `cluster_state:ok`, all slots served and the 6 nodes known, and sees
    /// the same [`Topology`]: 3 masters serving slots, all alive. With `fresh` (a cluster just made), also
    /// whether every master has its replica, in every node's view, and every replica has synced (its link to
    /// its master is up): a replica's role spreads by gossip, and its first sync takes a moment, and a test
    /// that kills a master at once needs both done. The error says the first thing that is not so.
    async fn health(&self, fresh: bool) -> Result<(), String> {
        let mut agreed: Option<(u16, Topology)> = None;
        for node in self.nodes.iter().filter(|node| node.is_running()) {
            let port = node.port;
            let info = redis_cli(port, &["cluster", "info"]).await?;
            let info = fields(&info);
            let all_slots = SLOTS.to_string();
            let node_count = self.nodes.len().to_string();
            for (name, wanted) in [
                ("cluster_state", "ok"),
                ("cluster_slots_assigned", all_slots.as_str()),
                ("cluster_slots_ok", all_slots.as_str()),
                ("cluster_known_nodes", node_count.as_str()),
            ] {
                let found = info.get(name).copied().unwrap_or("(missing)");
                if found != wanted {
                    return Err(format!("127.0.0.1:{port} reports {name}:{found}, not {wanted}"));
                }
            }

            let nodes = parse_cluster_nodes(&redis_cli(port, &["cluster", "nodes"]).await?);
            let topology = Topology::of(&nodes);
            let masters = topology.masters();
            for owner in nodes.iter().filter(|n| masters.contains(&n.port)) {
                if let Some(dead) = self.nodes.iter().find(|n| n.port == owner.port && !n.is_running()) {
                    return Err(format!("127.0.0.1:{port} still has slots served by 127.0.0.1:{}, killed", dead.port));
                }
                if owner.flags.iter().any(|f| f == "fail" || f == "fail?") {
                    return Err(format!("127.0.0.1:{port} sees 127.0.0.1:{} as {:?}", owner.port, owner.flags));
                }
            }
            if masters.len() != MASTERS {
                return Err(format!("127.0.0.1:{port} sees {} masters serving slots: {topology}", masters.len()));
            }
            if fresh {
                for master in &masters {
                    let replicas = topology.replicas.values().filter(|&m| m == master).count();
                    if replicas != 1 {
                        return Err(format!("127.0.0.1:{port} sees {replicas} replicas of {master}: {topology}"));
                    }
                }
            }
            match &agreed {
                None => agreed = Some((port, topology)),
                Some((first, first_topology)) if *first_topology != topology => {
                    return Err(format!(
                        "127.0.0.1:{port} and 127.0.0.1:{first} disagree: {topology} / {first_topology}"
                    ));
                }
                Some(_) => {}
            }

            if fresh && nodes.iter().any(|n| n.myself && n.master_id.is_some()) {
                let replication = redis_cli(port, &["info", "replication"]).await?;
                let link = fields(&replication).get("master_link_status").copied().unwrap_or("(missing)");
                if link != "up" {
                    return Err(format!("replica 127.0.0.1:{port} has master_link_status:{link}"));
                }
            }
        }
        match agreed {
            Some(_) => Ok(()),
            None => Err("no node is running".to_owned()),
        }
    }

    /// CLUSTER NODES of the first live node that answers.
    async fn cluster_nodes(&self) -> Vec<ClusterNode> {
        let mut failures = Vec::new();
        for node in self.nodes.iter().filter(|node| node.is_running()) {
            match redis_cli(node.port, &["cluster", "nodes"]).await {
                Ok(text) => return parse_cluster_nodes(&text),
                Err(failure) => failures.push(failure),
            }
        }
        panic!("no node of the Redis Cluster answered CLUSTER NODES: {failures:?}");
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes.iter().map(|node| format!("--- 127.0.0.1:{} log:\n{}\n", node.port, node.log())).collect()
    }
}

/// One line of CLUSTER NODES: `<id> <ip:port@cport[,hostname]> <flags> <master id or -> <ping-sent>
/// <pong-recv> <config-epoch> <link-state> <slot or range>...`.
struct ClusterNode {
    id: String,
    port: u16,
    flags: Vec<String>,
    myself: bool,
    /// The master's id, for a replica.
    master_id: Option<String>,
    /// Inclusive slot ranges served.
    slots: Vec<(u32, u32)>,
}

fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() < 8 {
                return None;
            }
            let address = parts[1].split(['@', ',']).next().unwrap_or_default();
            let port = address.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let flags: Vec<String> = parts[2].split(',').map(str::to_owned).collect();
            let slots = parts[8..]
                .iter()
                // `[slot->-id]` and `[slot-<-id]` are slots being migrated, still served by this node.
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((first, last)) => Some((first.parse().ok()?, last.parse().ok()?)),
                    None => s.parse().ok().map(|slot| (slot, slot)),
                })
                .collect();
            Some(ClusterNode {
                id: parts[0].to_owned(),
                port,
                myself: flags.iter().any(|f| f == "myself"),
                flags,
                master_id: (parts[3] != "-").then(|| parts[3].to_owned()),
                slots,
            })
        })
        .collect()
}

/// Who serves what, as one node sees it: what the nodes must agree on.
#[derive(PartialEq)]
struct Topology {
    /// First slot of each range → port of the master that serves it.
    slots: BTreeMap<u32, u16>,
    /// Port of each replica → port of its master.
    replicas: BTreeMap<u16, u16>,
}

impl Topology {
    fn of(nodes: &[ClusterNode]) -> Topology {
        let slots = slot_map(nodes);
        let replicas = nodes
            .iter()
            .filter_map(|replica| {
                let master = nodes.iter().find(|m| Some(&m.id) == replica.master_id.as_ref())?;
                Some((replica.port, master.port))
            })
            .collect();
        Topology { slots, replicas }
    }

    /// The masters that serve slots, by port.
    fn masters(&self) -> Vec<u16> {
        let mut masters: Vec<u16> = self.slots.values().copied().collect();
        masters.sort_unstable();
        masters.dedup();
        masters
    }
}

impl std::fmt::Display for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let slots: Vec<String> = self.slots.iter().map(|(slot, port)| format!("{slot}..: {port}")).collect();
        let replicas: Vec<String> =
            self.replicas.iter().map(|(replica, master)| format!("{replica}→{master}")).collect();
        write!(f, "slots [{}], replicas [{}]", slots.join(", "), replicas.join(", "))
    }
}

/// First slot of each range → port of the node that serves it.
fn slot_map(nodes: &[ClusterNode]) -> BTreeMap<u32, u16> {
    nodes.iter().flat_map(|node| node.slots.iter().map(move |&(first, _)| (first, node.port))).collect()
}

/// The `name:value` lines of INFO and CLUSTER INFO.
fn fields(text: &str) -> BTreeMap<&str, &str> {
    text.lines().filter_map(|line| line.trim_end().split_once(':')).collect()
}

// ---------------------------------------------------------------------------------------------------
// One redis-server process: what OwnRedis and OwnRedisCluster share
// ---------------------------------------------------------------------------------------------------

/// One `redis-server` child process: its directory (working dir and log), its ports, and the child while it
/// runs. Killed and reaped on drop.
struct Server {
    dir: PathBuf,
    port: u16,
    /// The cluster bus port, for a cluster node.
    bus_port: Option<u16>,
    child: Option<Child>,
}

/// Why a server did not start.
enum StartFailure {
    /// Another process has the port (it was free when picked, and taken before the server bound it): worth
    /// another try on other ports.
    PortTaken(String),
    Failed(String),
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartFailure::PortTaken(message) | StartFailure::Failed(message) => f.write_str(message),
        }
    }
}

impl Server {
    /// Starts a server in `dir` (created) on free ports, with a cluster bus when `cluster`. A free port is
    /// found by binding port 0 and letting it go, so another process can take it before the server binds it:
    /// then the server exits at once, and it is tried again on other ports.
    async fn start(dir: PathBuf, cluster: bool) -> Server {
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let mut taken = Vec::new();
        for _ in 0..5 {
            let ports = free_ports(if cluster { 2 } else { 1 });
            let mut server = Server { dir: dir.clone(), port: ports[0], bus_port: ports.get(1).copied(), child: None };
            match server.run().await {
                Ok(()) => return server,
                Err(StartFailure::PortTaken(message)) => taken.push(message),
                Err(failure) => panic!("redis-server did not start: {failure}"),
            }
        }
        panic!("redis-server did not start: its port was taken 5 times: {taken:?}");
    }

    /// Spawns the server on its ports and waits until it answers, as itself (another server on the port
    /// would answer too). On failure the child is killed, and the error has the log.
    async fn run(&mut self) -> Result<(), StartFailure> {
        let binary = redis_server_binary();
        let log_path = self.dir.join("redis.log");
        // Appended to, so that the log of a restarted server shows every run.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log_path.display()));
        let log_err = log.try_clone().expect("a second handle on the redis-server log");
        let mut command = Command::new(binary);
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--daemonize", "no"])
            .args(["--save", "", "--appendonly", "no", "--logfile", ""])
            .arg("--dir")
            .arg(&self.dir);
        if let Some(bus_port) = self.bus_port {
            command
                .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
                .args(["--cluster-port", &bus_port.to_string(), "--cluster-node-timeout", "2000"])
                .args(["--cluster-replica-validity-factor", "0"])
                // A master sends its first full sync at once rather than after waiting 5 s for more replicas.
                .args(["--repl-diskless-sync-delay", "0"]);
        }
        let child = command
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let pid = child.id();
        self.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        let failure = loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                let log = self.log();
                let message = format!("127.0.0.1:{} exited at start ({status}); log:\n{log}", self.port);
                break if log.contains("Address already in use") {
                    StartFailure::PortTaken(message)
                } else {
                    StartFailure::Failed(message)
                };
            }
            if let Ok(info) = redis_cli(self.port, &["info", "server"]).await {
                let answered = fields(&info).get("process_id").and_then(|p| p.parse::<u32>().ok());
                if answered == Some(pid) {
                    return Ok(());
                }
                break StartFailure::PortTaken(format!(
                    "127.0.0.1:{} is served by another process ({answered:?}), not the redis-server started ({pid})",
                    self.port
                ));
            }
            if Instant::now() > deadline {
                break StartFailure::Failed(format!(
                    "127.0.0.1:{} did not answer within {START_TIMEOUT:?}; log:\n{}",
                    self.port,
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        self.kill();
        Err(failure)
    }

    fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL, then wait for the exit (blocking: it takes a moment, and works without a runtime).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_else(|e| format!("(no log: {e})"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `n` distinct ports that were free a moment ago (all bound at once, so they differ, then let go).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port")).collect();
    listeners.iter().map(|l| l.local_addr().expect("a bound listener's address").port()).collect()
}

// ---------------------------------------------------------------------------------------------------
// redis-cli and the binaries
// ---------------------------------------------------------------------------------------------------

/// Runs `redis-cli -h 127.0.0.1 -p PORT ARGS...` and returns what it printed. `args` may start with
/// `redis-cli` options, e.g. `-c` to follow a cluster's redirections. An error reply, a refused connection,
/// or no answer within 5 s is an `Err` with what `redis-cli` said.
///
/// # Panics
/// When `redis-cli` cannot be run (not installed: the message says how to install it).
pub async fn redis_cli(port: u16, args: &[&str]) -> Result<String, String> {
    let mut command = tokio::process::Command::new(redis_cli_binary());
    // -e: exit with an error status on an error reply (redis-cli prints it and exits 0 otherwise).
    command.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-e"]).args(args).stdin(Stdio::null()).kill_on_drop(true);
    let output = match tokio::time::timeout(CLI_TIMEOUT, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => panic!("cannot run {}: {e}", redis_cli_binary().display()),
        Err(_) => return Err(format!("redis-cli -p {port} {args:?}: no answer within {CLI_TIMEOUT:?}")),
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "redis-cli -p {port} {args:?} ({}): {}{}",
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn redis_server_binary() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| find_program("HERALD_REDIS_SERVER", "redis-server"))
}

fn redis_cli_binary() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| find_program("HERALD_REDIS_CLI", "redis-cli"))
}

/// `$env`, else `name` on `PATH`, else `/usr/bin/name` (Debian's).
fn find_program(env: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return path.into();
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found: install Debian's redis-server and redis-tools packages (scripts/test does), \
                 or point {env} at the binary"
            )
        })
}
