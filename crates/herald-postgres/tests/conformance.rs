//! The store conformance suite against the PostgreSQL backend, on a fresh database of the machine's server.

use herald_core::conformance;
use herald_postgres::PostgresDb;
use herald_postgres::testing::TestDatabase;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_conforms() {
    let database = TestDatabase::create().await;
    let db = PostgresDb::open(&database.settings()).await.expect("open the PostgreSQL store");
    conformance::run_all(db.stores()).await;
    // Again on the same, no longer empty, database: the suite must not assume an empty store.
    conformance::run_all(db.stores()).await;
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_trait_conforms_on_its_own() {
    let database = TestDatabase::create().await;
    let db = PostgresDb::open(&database.settings()).await.expect("open the PostgreSQL store");
    let stores = db.stores();
    conformance::cursors(&stores).await;
    conformance::threads(&stores).await;
    conformance::search(&stores).await;
    conformance::messages(&stores).await;
    conformance::conversations(&stores).await;
    conformance::users(&stores).await;
    conformance::media(&stores).await;
    conformance::reports(&stores).await;
    db.close().await;
}
