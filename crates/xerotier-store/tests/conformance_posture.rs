//! Credential posture, on both backends: what the report reads of each kind, and the claim
//! that announces each posture transition exactly once, whoever claims it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use xerotier_store::{AuditEntry, AuditFilter, NewApiKey, PageRequest, PostureTransition, Store};
use xerotier_testkit::{TestDb, per_backend};

mod builders;
use builders::{agent, audit, event, join_key, new_keys, rotation};

async fn open(db: &TestDb) -> Store {
    Store::connect(db.url()).await.unwrap()
}

fn posture_audit(id: &str, target: &str) -> AuditEntry {
    AuditEntry {
        action: "credential.overdue".into(),
        target_type: Some("api_key".into()),
        target_id: Some(target.into()),
        ..audit(id)
    }
}

fn transition(id: &str, state: &str, n: usize, announce: bool) -> PostureTransition {
    PostureTransition {
        kind: "curve_key".into(),
        credential_id: id.into(),
        state: state.into(),
        at: 50,
        audit: announce.then(|| posture_audit(&format!("ap-{state}-{n}"), id)),
        event: announce.then(|| event(&format!("ep-{state}-{n}"), id)),
    }
}

async fn posture_records(store: &Store) -> usize {
    let filter =
        AuditFilter { action: Some("credential.overdue".into()), ..AuditFilter::default() };
    let page = PageRequest { limit: 500, after: None };
    store.list_audit(&filter, &page).await.unwrap().items.len()
}

per_backend!(posture_reads_each_kind_in_force, open, |db, store| {
    // Join keys: one live, one consumed (by agt_1), one revoked, one expired at 1_000_000.
    store.create_join_key(&join_key("jk_1"), &audit("a0")).await.unwrap();
    store.create_join_key(&join_key("jk_live"), &audit("a1")).await.unwrap();
    store.create_join_key(&join_key("jk_rev"), &audit("a2")).await.unwrap();
    store.revoke_join_key("jk_rev", 5, None, None, &audit("a3")).await.unwrap();
    store.enroll_agent(&agent("agt_1", "xem-1", "jk_1", "k0"), 1, &audit("a4")).await.unwrap();
    let live: Vec<_> =
        store.posture_join_keys(10).await.unwrap().into_iter().map(|k| k.id).collect();
    assert_eq!(live, ["jk_live"], "{}", db.backend);
    assert!(store.posture_join_keys(1_000_000).await.unwrap().is_empty(), "{}", db.backend);

    // CURVE keys: enrollment time until a rotation is promoted; a failed rotation counts not.
    let keys = store.posture_curve_keys(None).await.unwrap();
    assert_eq!(
        (keys.len(), keys[0].enrolled_at, keys[0].rotated_at),
        (1, 1, None),
        "{}",
        db.backend
    );
    store
        .create_rotation(&rotation("r1", "agt_1"), &event("e1", "agt_1"), &audit("a5"))
        .await
        .unwrap();
    store.promote_rotation("r1", &new_keys("k1"), 20, &[], &audit("a6")).await.unwrap().unwrap();
    store
        .create_rotation(&rotation("r2", "agt_1"), &event("e2", "agt_1"), &audit("a7"))
        .await
        .unwrap();
    store
        .fail_rotation("r2", "acknowledgement timeout", 30, &event("e3", "agt_1"), &audit("a8"))
        .await
        .unwrap();
    let keys = store.posture_curve_keys(Some("agt_1")).await.unwrap();
    assert_eq!(keys[0].rotated_at, Some(20), "{}", db.backend);
    assert!(store.posture_curve_keys(Some("agt_other")).await.unwrap().is_empty());
    store.revoke_agent("agt_1", 40, None, None, &audit("a9")).await.unwrap();
    assert!(store.posture_curve_keys(None).await.unwrap().is_empty(), "{}: revoked", db.backend);

    // API keys: unrevoked and unexpired.
    for (id, expires_at) in [("key_a", None), ("key_b", Some(100)), ("key_c", None)] {
        let new = NewApiKey {
            id: id.into(),
            name: id.into(),
            scopes: "management".into(),
            verifier: "v".into(),
            created_at: 1,
            created_by: None,
            expires_at,
        };
        store.create_api_key(&new, &audit(&format!("ak-{id}"))).await.unwrap();
    }
    store.revoke_api_key("key_c", 2, None, None, false, &audit("akr")).await.unwrap();
    let ids = |keys: Vec<xerotier_store::ApiKeyRecord>| {
        keys.into_iter().map(|k| k.id).collect::<Vec<_>>()
    };
    assert_eq!(ids(store.posture_api_keys(99).await.unwrap()), ["key_a", "key_b"]);
    assert_eq!(ids(store.posture_api_keys(100).await.unwrap()), ["key_a"]);
});

per_backend!(a_posture_transition_is_claimed_once, open, |db, store| {
    assert!(
        store.claim_posture_transition(&transition("agt_1", "overdue", 0, true)).await.unwrap()
    );
    // The same transition again (a restart, another replica): nothing written.
    assert!(
        !store.claim_posture_transition(&transition("agt_1", "overdue", 1, true)).await.unwrap()
    );
    assert_eq!(posture_records(&store).await, 1, "{}", db.backend);
    assert_eq!(
        store
            .list_events("agt_1", &PageRequest { limit: 10, after: None })
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    // Two concurrent claimers of the next transition: exactly one record.
    let (first, second) =
        (transition("agt_2", "overdue", 2, true), transition("agt_2", "overdue", 3, true));
    let (a, b) = tokio::join!(
        store.claim_posture_transition(&first),
        store.claim_posture_transition(&second),
    );
    assert_eq!(u8::from(a.unwrap()) + u8::from(b.unwrap()), 1, "{}: one winner", db.backend);
    assert_eq!(posture_records(&store).await, 2, "{}", db.backend);

    // Back to ok (rotated) is recorded silently; overdue again is announced again.
    assert!(store.claim_posture_transition(&transition("agt_1", "ok", 4, false)).await.unwrap());
    assert!(
        store.claim_posture_transition(&transition("agt_1", "overdue", 5, true)).await.unwrap()
    );
    assert_eq!(posture_records(&store).await, 3, "{}", db.backend);
    let mut announced: Vec<_> = store
        .announced_states()
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.credential_id, s.state))
        .collect();
    announced.sort();
    assert_eq!(announced, [("agt_1".into(), "overdue".into()), ("agt_2".into(), "overdue".into())]);
    store.forget_posture("curve_key", "agt_2").await.unwrap();
    assert_eq!(store.announced_states().await.unwrap().len(), 1, "{}", db.backend);
});
