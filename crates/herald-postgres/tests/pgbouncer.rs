//! Herald's PostgreSQL stores behind a real PgBouncer in transaction mode, with fewer server connections than
//! Herald's pool has clients: the conformance suite and a concurrent load must pass through it. Every statement
//! is sent unnamed (`query_typed`), so nothing depends on which server connection PgBouncer hands out next.
//!
//! A negative control shows the setup does catch the mistake it guards against: a statement prepared by name
//! on one server connection is missing on the next one PgBouncer picks.
//!
//! The test starts Debian's `pgbouncer` (scripts/test installs it) as a child process on a free port, with its
//! config, log and pid file in a temp dir, and kills it on every exit path, panics included.

use herald_core::conformance;
use herald_core::store::{ClientKey, MessageWrite, Stores};
use herald_postgres::PostgresDb;
use herald_postgres::testing::{self, TestDatabase, give_to_postgres, is_root};
use herald_proto::{ConversationId, DeviceId, Direction, Message, UserId};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// Server connections PgBouncer keeps per database and user: fewer than Herald's pool holds at once.
const POOL_SIZE: usize = 4;
/// Herald's pool: `MIN_IDLE` connections are opened at start and kept, so PgBouncer serves at least that many
/// clients on its `POOL_SIZE` server connections.
const MAX_SIZE: usize = 16;
const MIN_IDLE: usize = 8;
/// The concurrent load: tasks, each committing this many messages to a conversation of its own.
const TASKS: usize = 16;
const COMMITS: u64 = 50;
/// A second PgBouncer database (a pool of its own, on the same PostgreSQL database) for the negative control,
/// so that nothing else can take its server connections.
const CONTROL_DB: &str = "herald_negative_control";
const CONTROL_POOL_SIZE: usize = 2;
/// How long PgBouncer may take to accept a login.
const START_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_work_behind_pgbouncer_in_transaction_mode() {
    let started = Instant::now();
    let database = TestDatabase::create().await;
    let server = Target::parse(&database.url());
    // Declared after the database, so it is dropped (killed) first.
    let bouncer = PgBouncer::start(&server).await;
    eprintln!(
        "{} on 127.0.0.1:{}, pool_mode = transaction, default_pool_size = {POOL_SIZE}",
        bouncer.version, bouncer.port
    );

    let mut settings = database.settings();
    settings.url = bouncer.url(&server.dbname);
    settings.pool.startup_statement_timeout = false;
    settings.pool.max_size = MAX_SIZE;
    settings.pool.min_idle = MIN_IDLE;

    // The server connections PostgreSQL sees for the test database, sampled while Herald works.
    let peak = Arc::new(AtomicI64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn(sample_backends(server.dbname.clone(), peak.clone(), sampling.clone()));

    let db = PostgresDb::open(&settings).await.expect("open the PostgreSQL store through PgBouncer");
    conformance::run_all(db.stores()).await;
    eprintln!("conformance suite passed through PgBouncer");
    // Again on the same, no longer empty, database.
    conformance::run_all(db.stores()).await;
    eprintln!("conformance suite passed through PgBouncer a second time");
    let load_started = Instant::now();
    concurrent_load(&db.stores()).await;
    eprintln!(
        "concurrent load passed: {TASKS} tasks x {COMMITS} commits in {:.1} s",
        load_started.elapsed().as_secs_f64()
    );

    // Herald's clients outnumbered the server connections, which PgBouncer therefore shared between them.
    let pools = bouncer.show_pools(&server.user).await;
    let pool = pools
        .iter()
        .find(|p| p.database == server.dbname)
        .unwrap_or_else(|| panic!("PgBouncer has no pool for {}: {pools:?}", server.dbname));
    eprintln!("PgBouncer's pool after the load: {pool:?}");
    assert!(pool.clients >= MIN_IDLE, "Herald keeps {MIN_IDLE} connections to PgBouncer: {pool:?}");
    assert!(pool.servers <= POOL_SIZE, "PgBouncer opened more than {POOL_SIZE} server connections: {pool:?}");
    sampling.store(false, Ordering::Relaxed);
    sampler.await.expect("the backend sampler");
    let peak = peak.load(Ordering::Relaxed);
    eprintln!("most server connections to the test database at once: {peak} (Herald's pool: up to {MAX_SIZE})");
    assert!(peak >= 1, "the sampler never saw PgBouncer's server connections");
    assert!(peak <= POOL_SIZE as i64, "PostgreSQL saw {peak} connections, more than PgBouncer's {POOL_SIZE}");

    db.close().await;
    drop(db);

    negative_control(&bouncer).await;
    eprintln!("whole test: {:.1} s", started.elapsed().as_secs_f64());
}

/// `TASKS` tasks commit `COMMITS` messages each, one commit at a time, to their own conversation, checking
/// `last_seq` after each; then every message must be in `history` and `by_client_ids`, exactly as committed.
async fn concurrent_load(stores: &Stores) {
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let stores = stores.clone();
            tokio::spawn(async move {
                let (conversation, sender, device) = (ConversationId::new(), UserId::new(), DeviceId::new());
                let mut sent = Vec::new();
                for seq in 1..=COMMITS {
                    let message = conformance::message(conversation, seq, sender, device);
                    stores
                        .messages
                        .commit(&[MessageWrite::Insert(message.clone())])
                        .await
                        .unwrap_or_else(|e| panic!("task {task}: commit of seq {seq}: {e}"));
                    let last = stores.messages.last_seq(conversation).await.expect("last_seq");
                    assert_eq!(last, seq, "task {task}: last_seq right after committing seq {seq}");
                    sent.push(message);
                }
                check(&stores, conversation, sender, &sent).await;
                (conversation, sender, sent)
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.push(task.await.expect("a load task panicked"));
    }

    // Once more, all conversations at once, after every task is done.
    let keys: Vec<ClientKey<'_>> = all
        .iter()
        .flat_map(|(conversation, sender, sent)| {
            sent.iter().map(|m| (*conversation, *sender, m.client_msg_id.as_str()))
        })
        .collect();
    let found = stores.messages.by_client_ids(&keys).await.expect("by_client_ids of every message");
    let expected: Vec<Option<Message>> = all.iter().flat_map(|(_, _, sent)| sent.iter().cloned().map(Some)).collect();
    assert_eq!(found.len(), TASKS * COMMITS as usize);
    assert!(found == expected, "by_client_ids over all conversations must answer every message as committed");
    for (conversation, sender, sent) in &all {
        check(stores, *conversation, *sender, sent).await;
        let mut backward = stores
            .messages
            .history(*conversation, COMMITS, Direction::Backward, 2 * COMMITS as usize)
            .await
            .expect("history backward");
        backward.reverse();
        assert!(&backward == sent, "history backward from the last seq must return every message");
    }
}

/// The conversation holds exactly `sent`: its history, its last seq and each message by its idempotency key.
async fn check(stores: &Stores, conversation: ConversationId, sender: UserId, sent: &[Message]) {
    let history = stores.messages.history(conversation, 1, Direction::Forward, 2 * sent.len()).await.expect("history");
    assert_eq!(history.len(), sent.len(), "history must hold every committed message and nothing else");
    assert!(history == sent, "history must return the messages exactly as committed, in seq order");
    assert_eq!(stores.messages.last_seq(conversation).await.expect("last_seq"), sent.len() as u64);
    let keys: Vec<ClientKey<'_>> = sent.iter().map(|m| (conversation, sender, m.client_msg_id.as_str())).collect();
    let found = stores.messages.by_client_ids(&keys).await.expect("by_client_ids");
    let expected: Vec<Option<Message>> = sent.iter().cloned().map(Some).collect();
    assert!(found == expected, "by_client_ids must answer every key with its message");
}

/// Polls how many backends PostgreSQL has for `dbname` (all of them PgBouncer's: Herald connects only
/// through it) and keeps the highest count, until `running` goes false.
async fn sample_backends(dbname: String, peak: Arc<AtomicI64>, running: Arc<AtomicBool>) {
    let client = connect(&testing::server_url()).await.expect("connect to PostgreSQL directly");
    while running.load(Ordering::Relaxed) {
        let row = client
            .query_typed_one("SELECT count(*) FROM pg_stat_activity WHERE datname::text = $1", &[(&dbname, Type::TEXT)])
            .await
            .expect("count the test database's backends");
        peak.fetch_max(row.get::<_, i64>(0), Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The mistake this test guards against, made on purpose: a statement prepared by name (`Client::prepare`)
/// lives on one server connection, and in transaction mode the next transaction may run on another.
///
/// Deterministic: the control database's pool has `CONTROL_POOL_SIZE` (2) server connections and nobody else
/// uses it. `holder` keeps a transaction open on S1; `preparer` prepares on S2, the only one free; `thief` opens
/// a transaction, necessarily on S2 (the only idle one, and the pool is full); `holder` commits, so the
/// preparer's next statement can only run on S1, where its named statement was never prepared. The same
/// interleaving with an unnamed statement (`query_typed`, what Herald sends) works.
async fn negative_control(bouncer: &PgBouncer) {
    let url = bouncer.url(CONTROL_DB);
    let (holder, preparer, thief) =
        (login(&url, "holder").await, login(&url, "preparer").await, login(&url, "thief").await);

    begin(&holder, "holder").await;
    let s1 = backend(&holder, "holder").await;
    let s2 = backend(&preparer, "preparer").await;
    assert_ne!(s1, s2, "S1 is in the holder's transaction, so the preparer must run elsewhere");
    let statement = preparer.prepare("SELECT 1::int4").await.expect("preparer: prepare a named statement");
    begin(&thief, "thief").await;
    assert_eq!(backend(&thief, "thief").await, s2, "the thief must be on S2, the only idle server connection");
    commit(&holder, "holder").await;

    let result = preparer.query(&statement, &[]).await;
    eprintln!("negative control: prepared by name on backend {s2}, executed while S2 is busy: {result:?}");
    let error = result.expect_err("a named statement must not survive a transaction boundary in transaction mode");
    assert_eq!(
        error.code(),
        Some(&SqlState::INVALID_SQL_STATEMENT_NAME),
        "the named statement must be missing on the other server connection: {error}"
    );
    assert_eq!(backend(&preparer, "preparer").await, s1, "the preparer's next transaction ran on S1");
    commit(&thief, "thief").await;

    // The control of the control: what Herald sends goes through the same interleaving, landing on both
    // server connections in turn.
    begin(&holder, "holder").await;
    let held = backend(&holder, "holder").await;
    let first = unnamed(&preparer).await;
    begin(&thief, "thief").await;
    assert_eq!(backend(&thief, "thief").await, first, "the thief must be on the preparer's last server connection");
    commit(&holder, "holder").await;
    let second = unnamed(&preparer).await;
    commit(&thief, "thief").await;
    assert_ne!(first, second, "the unnamed statements must have run on two server connections");
    assert_eq!(second, held, "the second unnamed statement must have run on the holder's server connection");
    eprintln!(
        "negative control: the named statement failed as expected (26000); unnamed ones worked on backends \
         {first} and {second}"
    );
}

async fn login(url: &str, who: &str) -> Client {
    connect(url).await.unwrap_or_else(|e| panic!("{who} logs in to PgBouncer: {e}"))
}

async fn begin(client: &Client, who: &str) {
    client.batch_execute("BEGIN").await.unwrap_or_else(|e| panic!("{who}: BEGIN: {e}"));
}

async fn commit(client: &Client, who: &str) {
    client.batch_execute("COMMIT").await.unwrap_or_else(|e| panic!("{who}: COMMIT: {e}"));
}

/// The PostgreSQL backend (server connection) the client's statement ran on.
async fn backend(client: &Client, who: &str) -> i32 {
    let row = client
        .query_typed_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap_or_else(|e| panic!("{who}: SELECT pg_backend_pid(): {e}"));
    row.get(0)
}

/// An unnamed statement with a parameter, as Herald sends them; returns the backend it ran on.
async fn unnamed(client: &Client) -> i32 {
    let row = client
        .query_typed_one("SELECT $1::int4 + 1, pg_backend_pid()", &[(&41i32, Type::INT4)])
        .await
        .expect("an unnamed statement through PgBouncer");
    assert_eq!(row.get::<_, i32>(0), 42);
    row.get(1)
}

async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = url.parse::<tokio_postgres::Config>()?.connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The PostgreSQL server and database behind PgBouncer, from the test database's URL.
struct Target {
    host: String,
    port: u16,
    user: String,
    password: String,
    dbname: String,
}

impl Target {
    fn parse(url: &str) -> Self {
        let config: tokio_postgres::Config = url.parse().expect("the test database URL parses");
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
            None => "127.0.0.1".into(),
        };
        Self {
            host,
            port: config.get_ports().first().copied().unwrap_or(5432),
            user: config.get_user().unwrap_or("postgres").into(),
            password: config.get_password().map(|p| String::from_utf8_lossy(p).into_owned()).unwrap_or_default(),
            dbname: config.get_dbname().expect("the test database URL names a database").into(),
        }
    }
}

/// A running PgBouncer, killed (and its temp dir removed) when dropped.
struct PgBouncer {
    child: Child,
    /// Dropped after the child is killed (fields drop after `Drop::drop`).
    dir: tempfile::TempDir,
    port: u16,
    user: String,
    version: String,
}

/// A PgBouncer pool as `SHOW POOLS` reports it.
#[derive(Debug)]
struct PoolState {
    database: String,
    clients: usize,
    servers: usize,
}

impl PgBouncer {
    /// Starts PgBouncer in front of `server` and waits until it accepts a login. A port taken between choosing
    /// it and PgBouncer binding it is retried with another.
    async fn start(server: &Target) -> Self {
        let binary = binary();
        let version = version(&binary);
        for _ in 0..5 {
            let mut bouncer = Self::spawn(&binary, &version, server);
            match bouncer.wait_ready(&server.dbname).await {
                Ok(()) => return bouncer,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("PgBouncer did not start:\n{log}"),
            }
        }
        panic!("PgBouncer found no free port in 5 attempts");
    }

    fn spawn(binary: &Path, version: &(String, u32, u32), server: &Target) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("find a free port")
            .port();
        let temp = tempfile::Builder::new().prefix("herald-pgbouncer-").tempdir().expect("a temp dir for PgBouncer");
        let dir = temp.path().to_owned();
        let quote = |s: &str| s.replace('"', "\"\"");
        let (name, minor) = (&version.0, version.2);
        // max_prepared_statements exists from 1.21 on; 0 turns PgBouncer's tracking of named statements off.
        // Older versions have no such tracking at all (and refuse the unknown setting).
        let prepared = if version.1 > 1 || minor >= 21 { "max_prepared_statements = 0\n" } else { "" };
        let ini = format!(
            "[databases]\n\
             * = host={host} port={server_port}\n\
             {CONTROL_DB} = host={host} port={server_port} dbname={dbname} pool_size={CONTROL_POOL_SIZE}\n\
             \n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {auth}\n\
             admin_users = {user}\n\
             pool_mode = transaction\n\
             default_pool_size = {POOL_SIZE}\n\
             min_pool_size = 0\n\
             reserve_pool_size = 0\n\
             max_client_conn = 200\n\
             server_round_robin = 0\n\
             {prepared}\
             log_connections = 0\n\
             log_disconnections = 0\n\
             logfile = {log}\n\
             pidfile = {pid}\n",
            host = server.host,
            server_port = server.port,
            dbname = server.dbname,
            auth = dir.join("userlist.txt").display(),
            user = server.user,
            log = dir.join("pgbouncer.log").display(),
            pid = dir.join("pgbouncer.pid").display(),
        );
        let files = [
            ("pgbouncer.ini", ini),
            // In trust mode the user must still be listed; its password (if any) is what PgBouncer logs in to
            // PostgreSQL with.
            ("userlist.txt", format!("\"{}\" \"{}\"\n", quote(&server.user), quote(&server.password))),
        ];
        for (file, text) in &files {
            std::fs::write(dir.join(file), text).unwrap_or_else(|e| panic!("write {file}: {e}"));
        }
        let stderr = std::fs::File::create(dir.join("stderr.log")).expect("create PgBouncer's stderr file");
        let root = is_root();
        if root {
            // PgBouncer refuses to run as root: it drops to postgres (-u), which must own its files.
            give_to_postgres(&dir);
        }
        let mut command = Command::new(binary);
        if root {
            command.args(["-u", "postgres"]);
        }
        let child = command
            .arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        Self { child, dir: temp, port, user: server.user.clone(), version: name.clone() }
    }

    /// Waits until a real login through PgBouncer runs a statement; on failure, PgBouncer's output.
    async fn wait_ready(&mut self, dbname: &str) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let url = self.url(dbname);
        loop {
            if let Some(status) = self.child.try_wait().expect("poll PgBouncer") {
                return Err(format!("PgBouncer exited ({status}):\n{}", self.output()));
            }
            let attempt = tokio::time::timeout(Duration::from_secs(1), async {
                connect(&url).await?.query_typed("SELECT 1", &[]).await
            })
            .await;
            let error = match attempt {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no answer within 1 s".to_owned(),
            };
            if Instant::now() > deadline {
                return Err(format!(
                    "PgBouncer did not accept a login within {START_TIMEOUT:?} (last: {error}):\n{}",
                    self.output()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A URL to `dbname` through PgBouncer (which asks for no password: auth_type = trust).
    fn url(&self, dbname: &str) -> String {
        format!("postgres://{}@127.0.0.1:{}/{dbname}", self.user, self.port)
    }

    fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_else(|e| format!("(no output: {e})"))
    }

    /// PgBouncer's pools, from its admin console.
    async fn show_pools(&self, user: &str) -> Vec<PoolState> {
        let admin = connect(&self.url("pgbouncer")).await.expect("log in to PgBouncer's admin console");
        let messages = admin.simple_query("SHOW POOLS").await.expect("SHOW POOLS");
        let count = |row: &tokio_postgres::SimpleQueryRow, columns: &[&str]| -> usize {
            columns
                .iter()
                .filter_map(|column| row.try_get(*column).ok().flatten())
                .map(|value| value.parse::<usize>().expect("a count in SHOW POOLS"))
                .sum()
        };
        messages
            .iter()
            .filter_map(|message| match message {
                SimpleQueryMessage::Row(row) if row.get("user") == Some(user) => Some(PoolState {
                    database: row.get("database").unwrap_or_default().to_owned(),
                    clients: count(row, &["cl_active", "cl_waiting"]),
                    servers: count(row, &["sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"]),
                }),
                _ => None,
            })
            .collect()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // Already gone (it failed to start) or killed here; either way reaped, so no process is left behind.
        if let Err(e) = self.child.kill() {
            eprintln!("warning: killing PgBouncer ({}): {e}", self.child.id());
        }
        if let Err(e) = self.child.wait() {
            eprintln!("warning: waiting for PgBouncer ({}): {e}", self.child.id());
        }
    }
}

/// Debian's package puts PgBouncer in /usr/sbin, which a non-root PATH often lacks.
fn binary() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/pgbouncer");
    if sbin.exists() { sbin } else { PathBuf::from("pgbouncer") }
}

/// ("PgBouncer X.Y.Z", X, Y) from `pgbouncer --version`.
fn version(binary: &Path) -> (String, u32, u32) {
    let output = Command::new(binary).arg("--version").output().unwrap_or_else(|e| {
        panic!("this test needs PgBouncer ({}; Debian's package, scripts/test installs it): {e}", binary.display())
    });
    let text = String::from_utf8_lossy(&output.stdout);
    let first = text.lines().next().unwrap_or_default().trim().to_owned();
    let number = first.split_whitespace().nth(1).unwrap_or_default();
    let mut parts = number.split('.').map(|part| part.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (first, major, minor),
        _ => panic!("unexpected `pgbouncer --version` output: {text}"),
    }
}
