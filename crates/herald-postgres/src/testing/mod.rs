//! A fresh database for each test run, on the PostgreSQL server that `HERALD_TEST_POSTGRES_URL` names
//! (default: the machine's, `postgres://postgres@127.0.0.1:5432/postgres`), dropped when the handle goes; and
//! servers of a test's own ([`OwnServer`]: a primary, a streaming replica) for the tests that stop them.

mod server;

pub use server::{OwnServer, give_to_postgres, is_root};

use crate::Settings;
use std::time::Duration;

/// Where the tests' PostgreSQL server is: any database on it that the user may connect to.
pub fn server_url() -> String {
    std::env::var("HERALD_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database created for one test and dropped (with its connections) when this is dropped.
pub struct TestDatabase {
    name: String,
    admin_url: String,
}

impl TestDatabase {
    /// Creates `herald_test_<random>` on the tests' server. Panics with a clear message when the server
    /// cannot be reached: the PostgreSQL tests need a real one (scripts/test starts the machine's).
    pub async fn create() -> Self {
        let admin_url = server_url();
        let name = format!("herald_test_{}", uuid::Uuid::now_v7().simple());
        let client = connect(&admin_url).await;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("creating the test database {name} on {admin_url}: {e}"));
        Self { name, admin_url }
    }

    /// The URL of this database.
    pub fn url(&self) -> String {
        let mut config: tokio_postgres::Config = self.admin_url.parse().expect("the test server URL parses");
        config.dbname(&self.name);
        to_url(&config)
    }

    /// Settings for this database with a small pool (tests open many).
    pub fn settings(&self) -> Settings {
        let mut settings = Settings { url: self.url(), ..Settings::default() };
        settings.pool.min_idle = 1;
        settings.pool.max_size = 16;
        settings
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (name, url) = (self.name.clone(), self.admin_url.clone());
        // Drop runs inside a Tokio runtime that cannot be blocked on: a thread of its own does the work.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let client = connect(&url).await;
                client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("warning: the test database {} was not dropped", self.name);
        }
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let config: tokio_postgres::Config = url.parse().unwrap_or_else(|e| panic!("the test server URL {url}: {e}"));
    let connected = tokio::time::timeout(Duration::from_secs(10), config.connect(tokio_postgres::NoTls)).await;
    let (client, connection) = match connected {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => panic!("the PostgreSQL tests need a server at {url} (set HERALD_TEST_POSTGRES_URL): {e}"),
        Err(_) => panic!("the PostgreSQL server at {url} did not answer within 10 s"),
    };
    tokio::spawn(connection);
    client
}

/// A URL for a parsed config (host, port, user, password, database), the shape `Settings::url` takes.
fn to_url(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "127.0.0.1".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    let password = config.get_password().map(|p| format!(":{}", String::from_utf8_lossy(p))).unwrap_or_default();
    let dbname = config.get_dbname().unwrap_or("postgres");
    format!("postgres://{user}{password}@{host}:{port}/{dbname}")
}
