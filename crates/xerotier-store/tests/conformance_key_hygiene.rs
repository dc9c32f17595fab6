//! Key hygiene, on both backends: a CURVE key any agent ever used (current, previous, retired,
//! revoked) never enrolls and is never promoted again; the refusal changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use xerotier_store::{AuditFilter, PageRequest, Store, StoreError};
use xerotier_testkit::{TestDb, per_backend};

mod builders;
use builders::{agent, audit, event, join_key, new_keys, rotation};

/// A store with `agt_1` enrolled on `k0`, rotated to `k1` (so `k0` is its previous key), and a
/// fresh join key per attempt in `jk_a0..`.
async fn rotated_store(db: &TestDb) -> Store {
    let store = Store::connect(db.url()).await.unwrap();
    store.create_join_key(&join_key("jk_1"), &audit("a0")).await.unwrap();
    store.enroll_agent(&agent("agt_1", "xem-1", "jk_1", "k0"), 1, &audit("a1")).await.unwrap();
    store
        .create_rotation(&rotation("r1", "agt_1"), &event("e1", "agt_1"), &audit("a2"))
        .await
        .unwrap();
    store.promote_rotation("r1", &new_keys("k1"), 20, &[], &audit("a3")).await.unwrap().unwrap();
    for i in 0..4 {
        store
            .create_join_key(&join_key(&format!("jk_a{i}")), &audit(&format!("aj{i}")))
            .await
            .unwrap();
    }
    store
}

async fn audit_ids(store: &Store) -> Vec<String> {
    let page = PageRequest { limit: 500, after: None };
    let items = store.list_audit(&AuditFilter::default(), &page).await.unwrap().items;
    items.into_iter().map(|e| e.id).collect()
}

/// An attacker tries to enroll `key` under a new name with join key `jk`: refused
/// `CurveKeyTaken`, nothing written, and the join key is still usable.
async fn assert_enroll_refused(db: &TestDb, store: &Store, jk: &str, key: &str, what: &str) {
    let before = audit_ids(store).await;
    let name = format!("thief-{jk}");
    let result = store
        .enroll_agent(&agent(&format!("agt_{jk}"), &name, jk, key), 30, &audit(&format!("x-{jk}")))
        .await;
    assert!(
        matches!(result, Err(StoreError::CurveKeyTaken)),
        "{}: {what} key {key} enrolled again: {result:?}",
        db.backend
    );
    assert!(store.agent(&format!("agt_{jk}")).await.unwrap().is_none(), "{}: no agent", db.backend);
    assert_eq!(audit_ids(store).await, before, "{}: a refusal records nothing", db.backend);
    let view = store.join_key(jk).await.unwrap().unwrap();
    assert!(view.consumed_at.is_none(), "{}: the join key survives a refused key", db.backend);
}

per_backend!(used_curve_keys_never_enroll_again, rotated_store, |db, store| {
    // Honest path: a fresh key enrolls.
    store
        .enroll_agent(&agent("agt_2", "xem-2", "jk_a0", "k-fresh"), 25, &audit("ok"))
        .await
        .unwrap();
    // The previous key (rotated away, not yet retired) and the current one.
    assert_enroll_refused(&db, &store, "jk_a1", "k0", "previous").await;
    assert_enroll_refused(&db, &store, "jk_a1", "k1", "current").await;
    // Retired: the agent was seen on k1, so k0 is no longer the agent's previous key.
    assert!(
        store
            .retire_previous_key("agt_1", "k1", &event("e2", "agt_1"), &audit("a4"))
            .await
            .unwrap()
    );
    let agent_row = store.agent("agt_1").await.unwrap().unwrap();
    assert!(agent_row.previous_curve_public_key.is_none());
    assert_enroll_refused(&db, &store, "jk_a2", "k0", "retired").await;
    // Revoked: agt_2's key, after its revocation.
    store.revoke_agent("agt_2", 40, None, Some("compromised"), &audit("a5")).await.unwrap();
    assert_enroll_refused(&db, &store, "jk_a3", "k-fresh", "revoked").await;
    assert_eq!(store.agent_curve_keys("agt_1").await.unwrap(), ["k0", "k1"]);
    assert_eq!(store.agent_curve_keys("agt_2").await.unwrap(), ["k-fresh"]);
});

per_backend!(promotion_to_a_used_key_is_refused, rotated_store, |db, store| {
    store
        .enroll_agent(&agent("agt_2", "xem-2", "jk_a0", "k-other"), 25, &audit("ok"))
        .await
        .unwrap();
    store.revoke_agent("agt_2", 26, None, None, &audit("rv")).await.unwrap();
    // k0: agt_1's own previous key; k1: its current one; k-other: a revoked agent's.
    for (i, used) in ["k0", "k1", "k-other"].iter().enumerate() {
        let id = format!("r-used-{i}");
        store
            .create_rotation(
                &rotation(&id, "agt_1"),
                &event(&format!("eu{i}"), "agt_1"),
                &audit(&format!("au{i}")),
            )
            .await
            .unwrap();
        let before = audit_ids(&store).await;
        let result =
            store.promote_rotation(&id, &new_keys(used), 30, &[], &audit(&format!("ap{i}"))).await;
        assert!(
            matches!(result, Err(StoreError::CurveKeyTaken)),
            "{}: promoted to used key {used}: {result:?}",
            db.backend
        );
        assert_eq!(audit_ids(&store).await, before, "{}: a refusal records nothing", db.backend);
        let row = store.agent("agt_1").await.unwrap().unwrap();
        assert_eq!(
            (row.curve_public_key.as_str(), row.previous_curve_public_key.as_deref()),
            ("k1", Some("k0")),
            "{}: the keys in force are unchanged",
            db.backend
        );
        let pending = store.rotation(&id).await.unwrap().unwrap();
        assert_eq!(
            pending.status, "pending",
            "{}: the service fails it, the store changed nothing",
            db.backend
        );
        store
            .fail_rotation(
                &id,
                "signature mismatch",
                31,
                &event(&format!("ef{i}"), "agt_1"),
                &audit(&format!("af{i}")),
            )
            .await
            .unwrap();
    }
    // Honest path: a fresh key is promoted.
    store
        .create_rotation(&rotation("r-fresh", "agt_1"), &event("ef", "agt_1"), &audit("afr"))
        .await
        .unwrap();
    store
        .promote_rotation("r-fresh", &new_keys("k2"), 40, &[], &audit("apf"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.agent_curve_keys("agt_1").await.unwrap(), ["k0", "k1", "k2"]);
});
