//! The router mesh key rollout's records (SPEC §9), on both backends: an agent's durable
//! acknowledgement replaces its previous one, the key it was seen on is kept beside it, and a
//! signed fetch's nonce is spent once within its window.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use xerotier_store::Store;
use xerotier_testkit::{TestDb, per_backend};

async fn open(db: &TestDb) -> Store {
    Store::connect(db.url()).await.unwrap()
}

fn kids(list: &[&str]) -> Vec<String> {
    list.iter().map(|k| k.to_string()).collect()
}

per_backend!(
    an_agents_router_key_ack_replaces_the_previous_and_keeps_what_it_was_seen_on,
    open,
    |db, store| {
        assert_eq!(store.router_key_ack("agt_1").await.unwrap(), None, "{}", db.backend);
        store.record_router_key_seen("agt_1", "mks-00000000000000aa", 5).await.unwrap();
        let seen = store.router_key_ack("agt_1").await.unwrap().unwrap();
        assert!(seen.kids.is_empty(), "seen before any acknowledgement holds no kids");
        store.record_router_key_ack("agt_1", &kids(&["mks-00000000000000aa"]), 10).await.unwrap();
        let both = kids(&["mks-00000000000000aa", "mks-00000000000000bb"]);
        store.record_router_key_ack("agt_1", &both, 20).await.unwrap();
        store.record_router_key_ack("agt_2", &kids(&["mks-00000000000000aa"]), 21).await.unwrap();
        let ack = store.router_key_ack("agt_1").await.unwrap().unwrap();
        assert_eq!(ack.kids, both, "{}: the order is kept", db.backend);
        assert_eq!(ack.acked_at, 20);
        assert_eq!(
            ack.seen_kid.as_deref(),
            Some("mks-00000000000000aa"),
            "an ack keeps the seen key"
        );
        store.record_router_key_seen("agt_1", "mks-00000000000000bb", 30).await.unwrap();
        let ack = store.router_key_ack("agt_1").await.unwrap().unwrap();
        assert_eq!(
            (ack.seen_kid.as_deref(), ack.seen_at),
            (Some("mks-00000000000000bb"), Some(30))
        );
        assert_eq!(ack.kids, both, "being seen keeps the acknowledged set");
        let all = store.router_key_acks().await.unwrap();
        let ids: Vec<_> = all.iter().map(|a| a.agent_id.as_str()).collect();
        assert_eq!(ids, ["agt_1", "agt_2"]);
    }
);

per_backend!(a_router_key_fetch_nonce_is_spent_once_within_its_window, open, |db, store| {
    assert!(store.spend_router_key_nonce("agt_1", "n1", 1_000, 0).await.unwrap());
    assert!(
        !store.spend_router_key_nonce("agt_1", "n1", 1_500, 0).await.unwrap(),
        "{}: a replay is refused",
        db.backend
    );
    assert!(
        !store.spend_router_key_nonce("agt_2", "n1", 1_600, 0).await.unwrap(),
        "another agent cannot spend it either"
    );
    assert!(store.spend_router_key_nonce("agt_1", "n2", 1_700, 0).await.unwrap());
    // Past the window the old nonce is forgotten (its request's timestamp is refused anyway).
    assert!(store.spend_router_key_nonce("agt_1", "n1", 700_000, 600_000).await.unwrap());
});
