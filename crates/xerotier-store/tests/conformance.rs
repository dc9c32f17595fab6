//! One suite, both backends: every test is written once and runs as two, `name::sqlite` on a
//! fresh SQLite file and `name::postgres` on a fresh PostgreSQL database (see
//! `xerotier_testkit::per_backend!`), so a failure on one backend never hides the other.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use xerotier_store::{AuditEntry, AuditFilter, NewApiKey, Outcome, PageRequest, Store, StoreError};
use xerotier_testkit::{TestDb, per_backend};

/// A store on `db`, migrated.
async fn open(db: &TestDb) -> Store {
    Store::connect(db.url()).await.unwrap()
}

fn key(id: &str, name: &str, at: i64) -> NewApiKey {
    NewApiKey {
        id: id.into(),
        name: name.into(),
        scopes: "execution".into(),
        verifier: format!("verifier-of-{id}"),
        created_at: at,
        created_by: Some("key_admin".into()),
        expires_at: None,
    }
}

fn audit(id: &str, action: &str, target: &str, outcome: Outcome) -> AuditEntry {
    AuditEntry {
        id: id.into(),
        at: 1_000,
        actor_key_id: Some("key_admin".into()),
        actor_name: Some("admin".into()),
        action: action.into(),
        target_type: Some("api_key".into()),
        target_id: Some(target.into()),
        target_name: None,
        reason: None,
        request_id: Some(format!("req-{id}")),
        correlation_id: None,
        outcome: outcome.as_str().into(),
        client_addr: Some("127.0.0.1:1".into()),
        details: None,
    }
}

async fn all_audit(store: &Store) -> Vec<AuditEntry> {
    let page = PageRequest { limit: 500, after: None };
    store.list_audit(&AuditFilter::default(), &page).await.unwrap().items
}

per_backend!(migrations_are_idempotent, open, |db, store| {
    assert_eq!(
        store.schema_version().await.unwrap(),
        Store::latest_schema_version(),
        "{}",
        db.backend
    );
    assert!(Store::latest_schema_version() >= 2);
    let again = Store::connect(db.url()).await.unwrap();
    assert_eq!(
        again.schema_version().await.unwrap(),
        Store::latest_schema_version(),
        "{}",
        db.backend
    );
    again.ping().await.unwrap();
});

per_backend!(create_then_read_by_id_and_name_with_audit, open, |db, store| {
    store
        .create_api_key(
            &key("key_a", "ops", 10),
            &audit("aud_1", "api_key.create", "key_a", Outcome::Success),
        )
        .await
        .unwrap();
    let by_id = store.api_key("key_a").await.unwrap().unwrap();
    assert_eq!(by_id.name, "ops", "{}", db.backend);
    assert_eq!(by_id.verifier, "verifier-of-key_a");
    assert_eq!(store.api_key_by_name("ops").await.unwrap().unwrap().id, "key_a");
    assert!(store.api_key("key_missing").await.unwrap().is_none());
    let records = all_audit(&store).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].action, "api_key.create");
    assert_eq!(records[0].target_id.as_deref(), Some("key_a"));
});

per_backend!(duplicate_active_name_is_refused_and_writes_nothing, open, |db, store| {
    store
        .create_api_key(
            &key("key_a", "ops", 10),
            &audit("aud_1", "api_key.create", "key_a", Outcome::Success),
        )
        .await
        .unwrap();
    let err = store
        .create_api_key(
            &key("key_b", "ops", 11),
            &audit("aud_2", "api_key.create", "key_b", Outcome::Success),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NameTaken(ref n) if n == "ops"), "{}: {err}", db.backend);
    assert!(store.api_key("key_b").await.unwrap().is_none());
    assert_eq!(all_audit(&store).await.len(), 1, "the refused create left no audit record");

    store
        .revoke_api_key(
            "key_a",
            20,
            Some("key_admin"),
            Some("leak"),
            true,
            &audit("aud_3", "api_key.revoke", "key_a", Outcome::Success),
        )
        .await
        .unwrap();
    store
        .create_api_key(
            &key("key_c", "ops", 21),
            &audit("aud_4", "api_key.create", "key_c", Outcome::Success),
        )
        .await
        .unwrap();
    assert_eq!(store.api_key_by_name("ops").await.unwrap().unwrap().id, "key_c");
});

per_backend!(concurrent_creates_with_one_name_have_one_winner, open, |db, store| {
    let attempts = (0..16).map(|i| {
        let store = store.clone();
        async move {
            store
                .create_api_key(
                    &key(&format!("key_{i:02}"), "contended", i),
                    &audit(&format!("aud_{i:02}"), "api_key.create", "x", Outcome::Success),
                )
                .await
        }
    });
    let results = futures::future::join_all(attempts).await;
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1, "{}: {results:?}", db.backend);
    assert!(results.iter().all(|r| r.is_ok() || matches!(r, Err(StoreError::NameTaken(_)))));
    assert_eq!(all_audit(&store).await.len(), 1);
});

per_backend!(revoke_is_soft_and_only_once, open, |db, store| {
    store
        .create_api_key(
            &key("key_a", "ops", 10),
            &audit("aud_1", "api_key.create", "key_a", Outcome::Success),
        )
        .await
        .unwrap();
    let revoked = store
        .revoke_api_key(
            "key_a",
            20,
            Some("key_admin"),
            Some("rotation"),
            true,
            &audit("aud_2", "api_key.revoke", "key_a", Outcome::Success),
        )
        .await
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(20), "{}", db.backend);
    assert_eq!(revoked.revoked_reason.as_deref(), Some("rotation"));
    assert!(store.api_key("key_a").await.unwrap().is_some(), "the record stays");
    assert!(store.api_key_by_name("ops").await.unwrap().is_none());

    let again = store
        .revoke_api_key(
            "key_a",
            30,
            None,
            None,
            true,
            &audit("aud_3", "api_key.revoke", "key_a", Outcome::Success),
        )
        .await;
    assert!(matches!(again, Err(StoreError::AlreadyRevoked(_))));
    let missing = store
        .revoke_api_key(
            "key_zz",
            30,
            None,
            None,
            true,
            &audit("aud_4", "api_key.revoke", "key_zz", Outcome::Success),
        )
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))));
    assert_eq!(all_audit(&store).await.len(), 2, "failed revokes left no success record");
});

/// A key with `scopes`, created at 10.
async fn key_with(store: &Store, id: &str, scopes: &str, expires_at: Option<i64>) {
    let mut new = key(id, id, 10);
    new.scopes = scopes.into();
    new.expires_at = expires_at;
    let entry = audit(&format!("aud_create_{id}"), "api_key.create", id, Outcome::Success);
    store.create_api_key(&new, &entry).await.unwrap();
}

/// Revokes `id` at time 100, guarding the last management key or not.
async fn revoke_at_100(store: &Store, id: &str, guard: bool) -> Result<(), StoreError> {
    let entry = audit(&format!("aud_revoke_{id}_{guard}"), "api_key.revoke", id, Outcome::Success);
    store.revoke_api_key(id, 100, None, None, guard, &entry).await.map(|_| ())
}

per_backend!(the_last_management_key_is_kept_unless_lockout_is_allowed, open, |db, store| {
    key_with(&store, "key_m1", "management", None).await;
    key_with(&store, "key_m2", "execution,management", None).await;
    key_with(&store, "key_e1", "execution", None).await;
    key_with(&store, "key_gone", "management", Some(50)).await;
    key_with(&store, "key_later", "management", Some(101)).await;
    revoke_at_100(&store, "key_later", true).await.unwrap();
    revoke_at_100(&store, "key_m1", true).await.unwrap();
    let records = all_audit(&store).await.len();

    // key_m2 is the last usable one: an expired key does not count.
    let refused = revoke_at_100(&store, "key_m2", true).await;
    assert!(
        matches!(refused, Err(StoreError::LastManagementKey(ref id)) if id == "key_m2"),
        "[{}] {refused:?}",
        db.backend
    );
    assert!(store.api_key("key_m2").await.unwrap().unwrap().revoked_at.is_none());
    assert_eq!(all_audit(&store).await.len(), records, "a refusal writes nothing");
    // Keys without the scope, and expired ones, are not guarded.
    revoke_at_100(&store, "key_e1", true).await.unwrap();
    revoke_at_100(&store, "key_gone", true).await.unwrap();
    // Other refusals keep their own reasons.
    assert!(matches!(
        revoke_at_100(&store, "key_m1", true).await,
        Err(StoreError::AlreadyRevoked(_))
    ));
    assert!(matches!(revoke_at_100(&store, "key_none", true).await, Err(StoreError::NotFound(_))));
    // Allowed explicitly: the last one goes too.
    revoke_at_100(&store, "key_m2", false).await.unwrap();
    assert!(store.api_key("key_m2").await.unwrap().unwrap().revoked_at.is_some());
});

per_backend!(
    concurrent_revocations_of_the_last_two_management_keys_leave_one,
    open,
    |db, store| {
        let mut survivor = "key_r0".to_string();
        key_with(&store, &survivor, "management", None).await;
        for round in 1..=12 {
            // Two usable management keys, both revoked at once: exactly one revocation passes.
            let fresh = format!("key_r{round}");
            key_with(&store, &fresh, "management", None).await;
            let (a, b) = tokio::join!(
                revoke_at_100(&store, &survivor, true),
                revoke_at_100(&store, &fresh, true)
            );
            assert_eq!(
                usize::from(a.is_ok()) + usize::from(b.is_ok()),
                1,
                "[{}] round {round}: {a:?} {b:?}",
                db.backend
            );
            for result in [&a, &b] {
                assert!(
                    result.is_ok() || matches!(result, Err(StoreError::LastManagementKey(_))),
                    "{result:?}"
                );
            }
            if a.is_ok() {
                survivor = fresh;
            }
            let page = PageRequest { limit: 100, after: None };
            let active = store.list_api_keys(&page, false).await.unwrap().items;
            assert_eq!(active.len(), 1, "[{}] round {round}: {active:?}", db.backend);
            assert_eq!(active[0].id, survivor);
        }
    }
);

per_backend!(rotate_keeps_previous_verifier_until_grace_ends, open, |db, store| {
    store
        .create_api_key(
            &key("key_a", "ops", 10),
            &audit("aud_1", "api_key.create", "key_a", Outcome::Success),
        )
        .await
        .unwrap();
    let rotated = store
        .rotate_api_key(
            "key_a",
            "new-verifier",
            100,
            5_000,
            &audit("aud_2", "api_key.rotate", "key_a", Outcome::Success),
        )
        .await
        .unwrap();
    assert_eq!(rotated.verifier, "new-verifier", "{}", db.backend);
    assert_eq!(rotated.previous_verifier.as_deref(), Some("verifier-of-key_a"));
    assert_eq!(rotated.previous_valid_until, Some(5_000));
    assert_eq!(rotated.rotated_at, Some(100));

    store
        .revoke_api_key(
            "key_a",
            200,
            None,
            None,
            true,
            &audit("aud_3", "api_key.revoke", "key_a", Outcome::Success),
        )
        .await
        .unwrap();
    let after_revoke = store.api_key("key_a").await.unwrap().unwrap();
    assert_eq!(after_revoke.previous_verifier, None, "revoke also ends the grace window");
    let err = store
        .rotate_api_key(
            "key_a",
            "newer",
            300,
            400,
            &audit("aud_4", "api_key.rotate", "key_a", Outcome::Success),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyRevoked(_)));
});

per_backend!(listing_pages_by_id_and_hides_revoked_unless_asked, open, |db, store| {
    for i in 0..5 {
        let id = format!("key_{i}");
        store
            .create_api_key(
                &key(&id, &format!("k{i}"), i),
                &audit(&format!("aud_{i}"), "api_key.create", &id, Outcome::Success),
            )
            .await
            .unwrap();
    }
    store
        .revoke_api_key(
            "key_1",
            9,
            None,
            None,
            true,
            &audit("aud_r", "api_key.revoke", "key_1", Outcome::Success),
        )
        .await
        .unwrap();

    let first = store.list_api_keys(&PageRequest { limit: 2, after: None }, false).await.unwrap();
    let ids: Vec<_> = first.items.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(ids, ["key_0", "key_2"], "{}", db.backend);
    assert!(first.has_more);
    let second = store
        .list_api_keys(&PageRequest { limit: 2, after: Some("key_2".into()) }, false)
        .await
        .unwrap();
    let ids: Vec<_> = second.items.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(ids, ["key_3", "key_4"]);
    assert!(!second.has_more);
    let all = store.list_api_keys(&PageRequest { limit: 50, after: None }, true).await.unwrap();
    assert_eq!(all.items.len(), 5);
});

per_backend!(audit_filters_combine, open, |db, store| {
    store.record_audit(&audit("aud_1", "api_key.create", "key_a", Outcome::Success)).await.unwrap();
    store.record_audit(&audit("aud_2", "api_key.revoke", "key_a", Outcome::Denied)).await.unwrap();
    let mut late = audit("aud_3", "api_key.revoke", "key_b", Outcome::Success);
    late.at = 9_000;
    store.record_audit(&late).await.unwrap();
    let page = PageRequest { limit: 10, after: None };
    let ids = |filter: AuditFilter| {
        let store = store.clone();
        let page = page.clone();
        async move {
            store
                .list_audit(&filter, &page)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|e| e.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        ids(AuditFilter { action: Some("api_key.revoke".into()), ..Default::default() }).await,
        ["aud_2", "aud_3"],
        "{}",
        db.backend
    );
    assert_eq!(
        ids(AuditFilter {
            target_id: Some("key_a".into()),
            outcome: Some("denied".into()),
            ..Default::default()
        })
        .await,
        ["aud_2"]
    );
    assert_eq!(ids(AuditFilter { since: Some(5_000), ..Default::default() }).await, ["aud_3"]);
    assert_eq!(
        ids(AuditFilter { until: Some(5_000), ..Default::default() }).await,
        ["aud_1", "aud_2"]
    );
    assert_eq!(
        ids(AuditFilter { request_id: Some("req-aud_3".into()), ..Default::default() }).await,
        ["aud_3"]
    );
});

per_backend!(a_forged_correlation_id_never_joins_another_request, open, |db, store| {
    // An honest request, and an attacker's that sends the honest one's id as its own label:
    // each record keeps the router's request id; the label is a field apart.
    let mut honest = audit("aud_h", "api_key.create", "key_h", Outcome::Success);
    honest.request_id = Some("req_honest".into());
    honest.correlation_id = Some("client-42".into());
    store.record_audit(&honest).await.unwrap();
    let mut forged = audit("aud_f", "api_key.revoke", "key_h", Outcome::Denied);
    forged.request_id = Some("req_forger".into());
    forged.correlation_id = Some("req_honest".into());
    store.record_audit(&forged).await.unwrap();
    let page = PageRequest { limit: 10, after: None };
    let by = |filter: AuditFilter| {
        let store = store.clone();
        let page = page.clone();
        async move {
            store
                .list_audit(&filter, &page)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|e| e.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        by(AuditFilter { request_id: Some("req_honest".into()), ..Default::default() }).await,
        ["aud_h"],
        "{}: the request id finds only the router's record",
        db.backend
    );
    assert_eq!(
        by(AuditFilter { correlation_id: Some("req_honest".into()), ..Default::default() }).await,
        ["aud_f"]
    );
    assert_eq!(
        by(AuditFilter { correlation_id: Some("client-42".into()), ..Default::default() }).await,
        ["aud_h"]
    );
    let stored = all_audit(&store).await;
    assert_eq!(stored.iter().find(|e| e.id == "aud_f").unwrap(), &forged, "read back as written");
});

per_backend!(bootstrap_happens_once_even_when_raced, open, |db, store| {
    let attempts = (0..8).map(|i| {
        let store = store.clone();
        async move {
            store
                .bootstrap_api_key(
                    &key(&format!("key_boot{i}"), "bootstrap", i),
                    &audit(&format!("aud_b{i}"), "api_key.bootstrap", "x", Outcome::Success),
                    || Ok::<(), ()>(()),
                )
                .await
                .unwrap()
                .unwrap()
        }
    });
    let won: Vec<bool> = futures::future::join_all(attempts).await;
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{}: {won:?}", db.backend);
    let keys = store.list_api_keys(&PageRequest { limit: 50, after: None }, true).await.unwrap();
    assert_eq!(keys.items.len(), 1);
});

per_backend!(bootstrap_rolls_back_when_the_key_file_cannot_be_written, open, |db, store| {
    let failed = store
        .bootstrap_api_key(
            &key("key_boot", "bootstrap", 1),
            &audit("aud_b", "api_key.bootstrap", "key_boot", Outcome::Success),
            || Err("disk full"),
        )
        .await
        .unwrap();
    assert_eq!(failed, Err("disk full"), "{}", db.backend);
    assert!(store.api_key("key_boot").await.unwrap().is_none());
    assert!(all_audit(&store).await.is_empty());
    let retried = store
        .bootstrap_api_key(
            &key("key_boot2", "bootstrap", 2),
            &audit("aud_b2", "api_key.bootstrap", "key_boot2", Outcome::Success),
            || Ok::<(), ()>(()),
        )
        .await
        .unwrap();
    assert_eq!(retried, Ok(true), "a failed bootstrap can be retried");
});

per_backend!(touch_only_moves_last_used_forward, open, |db, store| {
    store
        .create_api_key(
            &key("key_a", "ops", 10),
            &audit("aud_1", "api_key.create", "key_a", Outcome::Success),
        )
        .await
        .unwrap();
    store.touch_api_key("key_a", 500).await.unwrap();
    store.touch_api_key("key_a", 400).await.unwrap();
    assert_eq!(
        store.api_key("key_a").await.unwrap().unwrap().last_used_at,
        Some(500),
        "{}",
        db.backend
    );
});
