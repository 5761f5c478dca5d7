//! The hub's paced fan-out, on a real hub over the embedded store: a big group's message reaches every
//! connection in order, and other tasks run while it is being queued (a small conversation's delivery does not
//! wait behind the whole fan-out).

use herald_core::auth::Principal;
use herald_core::delivery::{FeedDelivery, FeedSink};
use herald_core::hub::{Hub, HubConfig, Outgoing};
use herald_embedded::EmbeddedDb;
use herald_proto::{ConversationId, DeviceId, UserId};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const MEMBERS: usize = 5_000;

fn feed(users: &[UserId], conversation: ConversationId, pos: u64) -> Vec<FeedDelivery> {
    let event: Arc<str> = Arc::from(format!(r#"{{"kind":"message","n":{pos}}}"#));
    users
        .iter()
        .map(|user| FeedDelivery { user: *user, conversation, pos, event: event.clone(), sent_at: None, notice: false })
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn a_big_fan_out_lets_other_tasks_run_and_keeps_each_connection_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = EmbeddedDb::open(dir.path()).expect("open the embedded database");
    let hub = Hub::new(db.stores(), HubConfig { queue_depth: 16, ..HubConfig::default() });
    let users: Vec<UserId> = (0..MEMBERS).map(|_| UserId::new()).collect();
    let registrations: Vec<_> =
        users.iter().map(|user| hub.register(Principal { user: *user, device: DeviceId::new() })).collect();
    let queued = |r: &herald_core::hub::Registration| {
        let mut items = Vec::new();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let _ = r.outbox.poll_recv_many(&mut cx, &mut items, usize::MAX);
        items
    };

    // Each registration scheduled a presence announcement; let those tasks reach their timers first, so the
    // runtime's queue holds only what this test puts there.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;

    // A task that is ready while the fan-out runs. On one thread it can only run where the fan-out yields;
    // it takes what the last member (queued last) has by then: nothing, if the fan-out let it run midway.
    let last = registrations.last().expect("members");
    let last_had_it = Arc::new(AtomicUsize::new(usize::MAX));
    let watcher = {
        let (had, outbox) = (last_had_it.clone(), last.outbox.clone());
        tokio::spawn(async move {
            let mut items = Vec::new();
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            let _ = outbox.poll_recv_many(&mut cx, &mut items, usize::MAX);
            had.store(items.len(), Ordering::SeqCst);
        })
    };
    let conversation = ConversationId::new();
    hub.deliver_paced(feed(&users, conversation, 1)).await;
    watcher.await.expect("watcher");
    assert_eq!(
        last_had_it.load(Ordering::SeqCst),
        0,
        "another task ran before the fan-out reached its last member: it yields between chunks"
    );

    // Two more messages, each paced: every connection has them in order after the first (the last member's first
    // was still to come when the watcher looked, so it has all three).
    hub.deliver_paced(feed(&users, conversation, 2)).await;
    hub.deliver_paced(feed(&users, conversation, 3)).await;
    for (i, r) in registrations.iter().enumerate() {
        let positions: Vec<u64> = queued(r)
            .into_iter()
            .map(|item| match item {
                Outgoing::Event { pos, .. } => pos,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(positions, [1, 2, 3], "member {i}");
        assert!(!r.outbox.is_kicked(), "member {i} was not kicked");
    }
}
