//! The router's own keys and their phased rotations, on both backends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use xerotier_store::{
    RotationEnd, RotationOutcome, RouterKeyRecord, RouterKeyRotationRecord, RouterKeyStatus, Store,
    StoreError,
};
use xerotier_testkit::{TestDb, per_backend};

mod builders;
use builders::{audit, join_key};

async fn open(db: &TestDb) -> Store {
    Store::connect(db.url()).await.unwrap()
}

fn key(kid: &str, kind: &str) -> RouterKeyRecord {
    RouterKeyRecord {
        kid: kid.into(),
        kind: kind.into(),
        public_key: format!("pub-{kid}"),
        secret_sealed: Some(format!("sealed-{kid}")),
        state: "current".into(),
        created_at: 10,
        activated_at: None,
        retired_at: None,
        rotation_id: None,
    }
}

fn rotation(id: &str, kind: &str, old: &str, new: &str) -> RouterKeyRotationRecord {
    RouterKeyRotationRecord {
        id: id.into(),
        kind: kind.into(),
        phase: "init".into(),
        old_kid: old.into(),
        new_kid: new.into(),
        started_at: 20,
        phase_changed_at: 20,
        ended_at: None,
        outcome: None,
        requested_by: Some("key_admin".into()),
        reason: Some("scheduled".into()),
        open_kind: None,
    }
}

fn end<'a>(id: &'a str, from: &'a str, outcome: RotationOutcome) -> RotationEnd<'a> {
    RotationEnd {
        rotation_id: id,
        from_phase: from,
        final_phase: match outcome {
            RotationOutcome::Completed => "standby",
            RotationOutcome::RolledBack => "rollback",
        },
        outcome,
        dropped_state: RouterKeyStatus::VerifyOnly,
        at: 50,
    }
}

per_backend!(router_key_import_happens_once_and_attributes_old_join_keys, open, |db, store| {
    store.create_join_key(&join_key("jk_old"), &audit("a1")).await.unwrap();
    assert!(store.import_router_key(&key("jks-aaaa", "join_signing")).await.unwrap());
    // A second replica importing (the same or another key) changes nothing.
    assert!(!store.import_router_key(&key("jks-aaaa", "join_signing")).await.unwrap());
    assert!(!store.import_router_key(&key("jks-bbbb", "join_signing")).await.unwrap());
    let keys = store.router_keys("join_signing").await.unwrap();
    assert_eq!(keys.len(), 1, "{}", db.backend);
    assert_eq!(keys[0].status(), Some(RouterKeyStatus::Current));
    assert_eq!(keys[0].activated_at, Some(10));
    let old = store.join_key("jk_old").await.unwrap().unwrap();
    assert_eq!(old.signing_kid.as_deref(), Some("jks-aaaa"), "{}", db.backend);
    assert_eq!(store.usable_join_keys_signed_by("jks-aaaa", 0).await.unwrap(), 1);
    assert_eq!(store.usable_join_keys_signed_by("jks-aaaa", 2_000_000).await.unwrap(), 0);
});

per_backend!(racing_router_key_imports_leave_one_current_key, open, |db, store| {
    let mut tasks = Vec::new();
    for i in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.import_router_key(&key(&format!("mks-{i:04}"), "mesh")).await
        }));
    }
    let mut won = 0;
    for task in tasks {
        if task.await.unwrap().unwrap() {
            won += 1;
        }
    }
    assert_eq!(won, 1, "{}", db.backend);
    assert_eq!(store.router_keys("mesh").await.unwrap().len(), 1);
});

per_backend!(router_key_rotation_completes_and_keeps_the_old_key_verify_only, open, |db, store| {
    store.import_router_key(&key("jks-old", "join_signing")).await.unwrap();
    let mut new = key("jks-new", "join_signing");
    new.created_at = 20;
    store
        .start_router_key_rotation(
            &rotation("rk_1", "join_signing", "jks-old", "jks-new"),
            &new,
            &audit("a1"),
        )
        .await
        .unwrap();
    let open = store.open_router_key_rotation("join_signing").await.unwrap().unwrap();
    assert_eq!(open.phase, "init");
    assert_eq!(open.open_kind.as_deref(), Some("join_signing"));
    assert_eq!(store.router_key("jks-new").await.unwrap().unwrap().state, "next");
    // A phase move from a phase it is not in is refused, and writes nothing.
    let stale = store
        .advance_router_key_rotation("rk_1", "update_clients", "update_servers", 30, &audit("a2"))
        .await;
    assert!(matches!(stale, Err(StoreError::RouterKeyConflict(_))), "{}", db.backend);
    store
        .advance_router_key_rotation("rk_1", "init", "update_clients", 30, &audit("a3"))
        .await
        .unwrap();
    store
        .advance_router_key_rotation("rk_1", "update_clients", "update_servers", 40, &audit("a4"))
        .await
        .unwrap();
    let done = store
        .end_router_key_rotation(
            end("rk_1", "update_servers", RotationOutcome::Completed),
            &audit("a5"),
        )
        .await
        .unwrap();
    assert_eq!(done.outcome.as_deref(), Some("completed"));
    assert_eq!(done.open_kind, None);
    assert!(store.open_router_key_rotation("join_signing").await.unwrap().is_none());
    let old = store.router_key("jks-old").await.unwrap().unwrap();
    let new = store.router_key("jks-new").await.unwrap().unwrap();
    assert_eq!(
        (old.state.as_str(), new.state.as_str()),
        ("verify_only", "current"),
        "{}",
        db.backend
    );
    assert!(old.secret_sealed.is_some());
    assert_eq!(new.activated_at, Some(50));
    // Dropping it deletes its secret; dropping twice changes nothing.
    assert!(store.drop_router_key("jks-old", 60, &audit("a6")).await.unwrap());
    assert!(!store.drop_router_key("jks-old", 61, &audit("a7")).await.unwrap());
    let old = store.router_key("jks-old").await.unwrap().unwrap();
    assert_eq!(old.state, "retired");
    assert_eq!(old.secret_sealed, None);
    assert_eq!(old.retired_at, Some(60));
    // A new rotation may start once the last one ended.
    store
        .start_router_key_rotation(
            &rotation("rk_2", "join_signing", "jks-new", "jks-3"),
            &key("jks-3", "join_signing"),
            &audit("a8"),
        )
        .await
        .unwrap();
});

per_backend!(router_key_rollback_keeps_the_old_key_current, open, |db, store| {
    store.import_router_key(&key("mks-old", "mesh")).await.unwrap();
    store
        .start_router_key_rotation(
            &rotation("rk_1", "mesh", "mks-old", "mks-new"),
            &key("mks-new", "mesh"),
            &audit("a1"),
        )
        .await
        .unwrap();
    store
        .advance_router_key_rotation("rk_1", "init", "update_clients", 30, &audit("a2"))
        .await
        .unwrap();
    let mut rollback = end("rk_1", "update_clients", RotationOutcome::RolledBack);
    rollback.dropped_state = RouterKeyStatus::Retired;
    let ended = store.end_router_key_rotation(rollback, &audit("a3")).await.unwrap();
    assert_eq!(ended.outcome.as_deref(), Some("rolled_back"), "{}", db.backend);
    assert_eq!(ended.phase, "rollback");
    assert_eq!(store.router_key("mks-old").await.unwrap().unwrap().state, "current");
    let new = store.router_key("mks-new").await.unwrap().unwrap();
    assert_eq!(new.state, "retired");
    assert_eq!(new.secret_sealed, None);
    // Ending it again is a conflict.
    let again = store
        .end_router_key_rotation(
            end("rk_1", "update_clients", RotationOutcome::RolledBack),
            &audit("a4"),
        )
        .await;
    assert!(matches!(again, Err(StoreError::RouterKeyConflict(_))), "{}", db.backend);
    let last = store.last_router_key_rotation("mesh").await.unwrap().unwrap();
    assert_eq!(last.id, "rk_1");
});

per_backend!(racing_router_key_rotation_starts_have_exactly_one_winner, open, |db, store| {
    store.import_router_key(&key("jks-old", "join_signing")).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("rk_{i}");
            let kid = format!("jks-new{i}");
            store
                .start_router_key_rotation(
                    &rotation(&id, "join_signing", "jks-old", &kid),
                    &key(&kid, "join_signing"),
                    &audit(&format!("a{i}")),
                )
                .await
        }));
    }
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => won += 1,
            Err(StoreError::RouterKeyConflict(_)) => {}
            Err(other) => panic!("{}: {other}", db.backend),
        }
    }
    assert_eq!(won, 1, "{}", db.backend);
    let keys = store.router_keys("join_signing").await.unwrap();
    assert_eq!(keys.len(), 2, "the loser's key was not written ({})", db.backend);
    // Two racing phase moves from the same phase: one wins.
    let open = store.open_router_key_rotation("join_signing").await.unwrap().unwrap();
    let (b1, b2) = (audit("b1"), audit("b2"));
    let (a, b) = tokio::join!(
        store.advance_router_key_rotation(&open.id, "init", "update_clients", 30, &b1),
        store.advance_router_key_rotation(&open.id, "init", "update_clients", 31, &b2),
    );
    assert_eq!(a.is_ok() as u8 + b.is_ok() as u8, 1, "{}", db.backend);
});
