//! The media invariants under racing writers, which the conformance suite's sequential checks cannot reach.

use herald_core::conformance::{content_of, upload};
use herald_core::now_millis;
use herald_core::store::{MediaStore, StoreError};
use herald_postgres::PostgresDb;
use herald_postgres::testing::TestDatabase;
use herald_proto::{MediaId, UserId};
use std::sync::Arc;

/// Checks the whole database against the invariants of `MediaStore`: usage is the sum of what uploads are
/// charged, refs the number of ready uploads, every ready upload has its content, no taken-down hash is stored.
async fn assert_consistent(raw: &tokio_postgres::Client) {
    let count =
        |sql: &'static str| async move { raw.query_one(sql, &[]).await.expect("an invariant query").get::<_, i64>(0) };
    let drifted_usage = count(
        "SELECT count(*) FROM media_usage u
          WHERE u.bytes <> (SELECT coalesce(sum(m.charged), 0) FROM media m WHERE m.owner = u.user_id)",
    )
    .await;
    assert_eq!(drifted_usage, 0, "users whose usage is not the sum of their uploads' charges");
    let drifted_charges = count(
        "SELECT count(*) FROM media m
          WHERE m.charged <> CASE m.state WHEN 'rejected' THEN 0
                                          WHEN 'ready' THEN (SELECT c.size FROM media_contents c WHERE c.hash = m.content_hash)
                                          ELSE m.declared_size END",
    )
    .await;
    assert_eq!(drifted_charges, 0, "uploads charged other than their state says");
    let drifted_refs = count(
        "SELECT count(*) FROM media_contents c
          WHERE c.refs <> (SELECT count(*) FROM media m WHERE m.content_hash = c.hash AND m.state = 'ready')",
    )
    .await;
    assert_eq!(drifted_refs, 0, "contents whose refs are not their ready uploads");
    let orphans = count(
        "SELECT count(*) FROM media m WHERE m.state = 'ready'
            AND NOT EXISTS (SELECT 1 FROM media_contents c WHERE c.hash = m.content_hash)",
    )
    .await;
    assert_eq!(orphans, 0, "ready uploads without their content");
    let banned = count("SELECT count(*) FROM media_contents c JOIN media_takedowns t ON t.hash = c.hash").await;
    assert_eq!(banned, 0, "taken-down contents still stored");
}

/// Completions of one content racing each other, the removal of its last upload, a takedown (every other
/// round) and access times recorded in opposite orders: every write commits or is refused whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_invariants_hold_under_races() {
    let database = TestDatabase::create().await;
    let db = PostgresDb::open(&database.settings()).await.expect("open");
    let (raw, connection) = tokio_postgres::connect(&database.url(), tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    let s: Arc<dyn MediaStore> = db.clone();
    let t0 = now_millis();
    let other = content_of(&format!("{}{}", MediaId::new().0.simple(), MediaId::new().0.simple()), 10, t0);
    let holder = upload(UserId::new(), 10, t0);
    s.create_upload(&holder, u64::MAX / 2).await.expect("create_upload");
    s.complete(holder.id, &other).await.expect("complete");
    // A first upload racing others of the same new user: the usage row does not exist yet.
    let newcomer = UserId::new();
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let (store, record) = (s.clone(), upload(newcomer, 100, t0));
            tokio::spawn(async move { store.create_upload(&record, 300).await })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        match racer.await.expect("a racing create_upload panicked") {
            Ok(()) => won += 1,
            Err(StoreError::LimitExceeded(_)) => {}
            Err(e) => panic!("create_upload failed: {e:?}"),
        }
    }
    assert_eq!((won, s.usage(newcomer).await.expect("usage")), (3, 300), "three of 100 bytes fit in 300");
    for round in 0..40 {
        let hash = format!("{}{}", MediaId::new().0.simple(), MediaId::new().0.simple());
        let owners: Vec<UserId> = (0..3).map(|_| UserId::new()).collect();
        let mut uploads = Vec::new();
        for (i, size) in (100..106).enumerate() {
            let u = upload(owners[i % owners.len()], size, t0);
            s.create_upload(&u, u64::MAX / 2).await.expect("create_upload");
            uploads.push(u);
        }
        s.complete(uploads[0].id, &content_of(&hash, 50, t0)).await.expect("complete");
        let mut tasks = Vec::new();
        for u in &uploads[1..] {
            let (s, id, content) = (s.clone(), u.id, content_of(&hash, 50, t0));
            tasks.push(tokio::spawn(async move {
                match s.complete(id, &content).await {
                    Ok(_) | Err(StoreError::Conflict(_)) => {}
                    Err(e) => panic!("complete failed: {e:?}"),
                }
            }));
        }
        let (store, id) = (s.clone(), uploads[0].id);
        tasks.push(tokio::spawn(async move {
            store.remove(id).await.expect("remove");
        }));
        if round % 2 == 0 {
            let (store, hash) = (s.clone(), hash.clone());
            tasks.push(tokio::spawn(async move {
                store.take_down(&hash, Some("racing"), t0).await.expect("take_down");
            }));
        }
        for order in
            [[(hash.clone(), t0 + 5), (other.hash.clone(), t0)], [(other.hash.clone(), t0 + 1), (hash.clone(), t0 + 3)]]
        {
            let store = s.clone();
            tasks.push(tokio::spawn(async move {
                store.touch(&order).await.expect("touch");
            }));
        }
        for task in tasks {
            task.await.expect("a racing task panicked");
        }
        assert_consistent(&raw).await;
        if round % 2 == 1 {
            let content = s.content(&hash).await.expect("content").expect("the content without a takedown");
            assert_eq!(content.refs, 5, "five completions, one removal");
        }
    }
    db.close().await;
}
