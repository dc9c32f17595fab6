//! CURVE rotations and agent events, on both backends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use xerotier_store::{
    AgentEvent, AuditEntry, AuditFilter, NewAgentKeys, PageRequest, RotationRecord, Store,
    StoreError,
};

mod builders;
use builders::{NEW_SIGNING_KEY, new_keys};

/// The signing key `agt_1` enrolls with (`builders::agent`'s).
const OLD_SIGNING_KEY: &str = "abababababababababababababababababababababababababababababababab";

/// `agt_1`'s signing key and when it was last rotated.
async fn signing(store: &Store) -> (String, Option<i64>) {
    let agent = store.agent("agt_1").await.unwrap().unwrap();
    (agent.signing_public_key, agent.signing_key_rotated_at)
}
use xerotier_testkit::{TestDb, per_backend};

/// A store on `db` with one enrolled agent, `agt_1`, on CURVE key `old-key`.
async fn store_with_agent(db: &TestDb) -> Store {
    let store = Store::connect(db.url()).await.unwrap();
    let jk = builders::join_key("jk_1");
    store.create_join_key(&jk, &audit("a0")).await.unwrap();
    let agent = builders::agent("agt_1", "xem-1", "jk_1", "old-key");
    store.enroll_agent(&agent, 1, &audit("a1")).await.unwrap();
    store
}

fn audit(id: &str) -> AuditEntry {
    AuditEntry {
        id: id.into(),
        at: 1,
        actor_key_id: Some("key_op".into()),
        actor_name: Some("op".into()),
        action: "agent.curve_rotate".into(),
        target_type: Some("agent".into()),
        target_id: Some("agt_1".into()),
        target_name: None,
        reason: Some("scheduled".into()),
        request_id: None,
        correlation_id: None,
        outcome: "success".into(),
        client_addr: None,
        details: None,
    }
}

fn rotation(id: &str, deadline_at: i64) -> RotationRecord {
    RotationRecord {
        id: id.into(),
        agent_id: "agt_1".into(),
        reason: "scheduled".into(),
        nonce: format!("nonce-{id}"),
        status: "pending".into(),
        failure_reason: None,
        requested_at: 10,
        requested_by: Some("key_op".into()),
        requested_by_name: Some("op".into()),
        deadline_at,
        acknowledged_at: None,
        completed_at: None,
        new_public_key: None,
        request_id: Some("http-1".into()),
        new_signing_public_key: None,
    }
}

fn event(id: &str, kind: &str) -> AgentEvent {
    AgentEvent {
        id: id.into(),
        agent_id: "agt_1".into(),
        at: 10,
        event_type: kind.into(),
        request_id: None,
        details: None,
    }
}

async fn keys(store: &Store) -> Vec<String> {
    let mut keys: Vec<String> =
        store.live_agent_keys().await.unwrap().into_iter().map(|(_, k)| k).collect();
    keys.sort();
    keys
}

per_backend!(one_rotation_in_flight_per_agent, store_with_agent, |db, store| {
    store
        .create_rotation(&rotation("r1", 100), &event("e1", "rotation_requested"), &audit("a2"))
        .await
        .unwrap();
    let second = store
        .create_rotation(&rotation("r2", 100), &event("e2", "rotation_requested"), &audit("a3"))
        .await;
    assert!(
        matches!(second, Err(StoreError::RotationInFlight(ref first)) if first == "r1"),
        "{}: {second:?}",
        db.backend
    );
    store
        .fail_rotation(
            "r1",
            "acknowledgement timeout",
            50,
            &event("e3", "rotation_failed"),
            &audit("a4"),
        )
        .await
        .unwrap()
        .unwrap();
    store
        .create_rotation(&rotation("r2", 100), &event("e4", "rotation_requested"), &audit("a5"))
        .await
        .unwrap();
});

per_backend!(
    promotion_keeps_the_old_key_until_the_agent_is_seen_on_the_new_one,
    store_with_agent,
    |db, store| {
        store
            .create_rotation(&rotation("r1", 100), &event("e1", "rotation_requested"), &audit("a2"))
            .await
            .unwrap();
        let events = [event("e2", "rotation_acknowledged"), event("e3", "rotation_promoted")];
        let promoted = store
            .promote_rotation("r1", &new_keys("new-key"), 20, &events, &audit("a3"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (promoted.status.as_str(), promoted.new_public_key.as_deref()),
            ("promoted", Some("new-key")),
            "{}",
            db.backend
        );
        assert_eq!(
            keys(&store).await,
            ["new-key", "old-key"],
            "both keys accepted until the agent is seen on the new one"
        );
        assert_eq!(store.latest_promoted_rotation("agt_1").await.unwrap().as_deref(), Some("r1"));
        assert!(
            !store
                .retire_previous_key("agt_1", "old-key", &event("e4", "x"), &audit("a5"))
                .await
                .unwrap(),
            "seen on the old key: nothing retired"
        );
        assert!(
            store
                .retire_previous_key(
                    "agt_1",
                    "new-key",
                    &event("e5", "rotation_completed"),
                    &audit("a6")
                )
                .await
                .unwrap()
        );
        assert_eq!(keys(&store).await, ["new-key"]);
        let audited: Vec<String> = store
            .list_audit(&AuditFilter::default(), &PageRequest { limit: 100, after: None })
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert!(audited.contains(&"a6".to_string()), "a retirement is audited: {audited:?}");
        assert!(!audited.contains(&"a5".to_string()), "a refused retirement records nothing");
        let again =
            store.promote_rotation("r1", &new_keys("newer"), 30, &[], &audit("a4")).await.unwrap();
        assert!(again.is_none(), "a terminal rotation is never promoted twice");
        let page = PageRequest { limit: 50, after: None };
        let types: Vec<_> = store
            .list_events("agt_1", &page)
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|e| e.event_type)
            .collect();
        assert_eq!(
            types,
            [
                "rotation_requested",
                "rotation_acknowledged",
                "rotation_promoted",
                "rotation_completed"
            ]
        );
    }
);

per_backend!(failed_rotation_changes_no_key_and_ends_once, store_with_agent, |db, store| {
    store
        .create_rotation(&rotation("r1", 100), &event("e1", "rotation_requested"), &audit("a2"))
        .await
        .unwrap();
    assert!(store.overdue_rotations(99).await.unwrap().is_empty(), "{}", db.backend);
    let overdue = store.overdue_rotations(100).await.unwrap();
    assert_eq!(overdue.len(), 1);
    let pending = store.pending_rotations().await.unwrap();
    assert_eq!(pending.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), vec!["r1"]);
    let failed = store
        .fail_rotation(
            "r1",
            "acknowledgement timeout",
            100,
            &event("e2", "rotation_failed"),
            &audit("a3"),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.failure_reason.as_deref(), Some("acknowledgement timeout"));
    assert!(
        store.pending_rotations().await.unwrap().is_empty(),
        "a failed rotation is not pending"
    );
    assert!(
        store
            .fail_rotation("r1", "signature mismatch", 101, &event("e3", "x"), &audit("a4"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .promote_rotation("r1", &new_keys("new-key"), 102, &[], &audit("a5"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(keys(&store).await, ["old-key"]);
    assert_eq!(
        store.rotation("r1").await.unwrap().unwrap().failure_reason.as_deref(),
        Some("acknowledgement timeout")
    );
});

per_backend!(
    promotion_of_a_revoked_agent_is_refused_and_rolled_back,
    store_with_agent,
    |db, store| {
        store
            .create_rotation(&rotation("r1", 100), &event("e1", "rotation_requested"), &audit("a2"))
            .await
            .unwrap();
        store.revoke_agent("agt_1", 15, None, None, &audit("a3")).await.unwrap();
        let promoted =
            store.promote_rotation("r1", &new_keys("new-key"), 20, &[], &audit("a4")).await;
        assert!(
            matches!(promoted, Err(StoreError::AlreadyRevoked(_))),
            "{}: {promoted:?}",
            db.backend
        );
        assert_eq!(
            store.rotation("r1").await.unwrap().unwrap().status,
            "pending",
            "rolled back; the caller fails it"
        );
        assert!(store.live_agent_keys().await.unwrap().is_empty());
    }
);

per_backend!(events_page_by_id, store_with_agent, |db, store| {
    for i in 0..5 {
        store.append_event(&event(&format!("e{i}"), "connected")).await.unwrap();
    }
    let first = store.list_events("agt_1", &PageRequest { limit: 2, after: None }).await.unwrap();
    assert_eq!(
        first.items.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["e0", "e1"],
        "{}",
        db.backend
    );
    assert!(first.has_more);
    let rest = store
        .list_events("agt_1", &PageRequest { limit: 10, after: Some("e1".into()) })
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 3);
    assert!(
        store
            .list_events("agt_other", &PageRequest { limit: 10, after: None })
            .await
            .unwrap()
            .items
            .is_empty()
    );
});

per_backend!(
    promotion_replaces_the_signing_key_in_the_same_transaction,
    store_with_agent,
    |db, store| {
        assert_eq!(signing(&store).await, (OLD_SIGNING_KEY.to_string(), None), "{}", db.backend);
        store
            .create_rotation(&rotation("r1", 100), &event("e1", "rotation_requested"), &audit("a2"))
            .await
            .unwrap();
        assert_eq!(
            store.rotation("r1").await.unwrap().unwrap().new_signing_public_key,
            None,
            "nothing bound before the acknowledgement"
        );
        let promoted =
            store.promote_rotation("r1", &new_keys("new-key"), 20, &[], &audit("a3")).await;
        let promoted = promoted.unwrap().unwrap();
        assert_eq!(promoted.new_signing_public_key.as_deref(), Some(NEW_SIGNING_KEY));
        assert_eq!(
            store.rotation("r1").await.unwrap().unwrap().new_signing_public_key.as_deref(),
            Some(NEW_SIGNING_KEY)
        );
        // Replaced outright: no previous signing key is kept anywhere on the agent.
        assert_eq!(signing(&store).await, (NEW_SIGNING_KEY.to_string(), Some(20)));
        // A second promotion of the ended rotation changes nothing.
        let other = NewAgentKeys { curve: "newer", signing: OLD_SIGNING_KEY };
        assert!(
            store.promote_rotation("r1", &other, 30, &[], &audit("a4")).await.unwrap().is_none()
        );
        assert_eq!(signing(&store).await, (NEW_SIGNING_KEY.to_string(), Some(20)));
    }
);

per_backend!(
    a_failed_or_refused_promotion_leaves_the_signing_key,
    store_with_agent,
    |db, store| {
        store
            .create_rotation(&rotation("r1", 100), &event("e1", "rotation_requested"), &audit("a2"))
            .await
            .unwrap();
        store
            .fail_rotation("r1", "signature mismatch", 50, &event("e2", "x"), &audit("a3"))
            .await
            .unwrap();
        assert!(
            store
                .promote_rotation("r1", &new_keys("new-key"), 60, &[], &audit("a4"))
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(signing(&store).await, (OLD_SIGNING_KEY.to_string(), None), "{}", db.backend);
        let failed = store.rotation("r1").await.unwrap().unwrap();
        assert_eq!(failed.new_signing_public_key, None);
        // A revoked agent: the promotion rolls back whole, the signing key with it.
        store
            .create_rotation(&rotation("r2", 200), &event("e3", "rotation_requested"), &audit("a5"))
            .await
            .unwrap();
        store.revoke_agent("agt_1", 70, None, None, &audit("a6")).await.unwrap();
        let refused =
            store.promote_rotation("r2", &new_keys("new-key"), 80, &[], &audit("a7")).await;
        assert!(matches!(refused, Err(StoreError::AlreadyRevoked(_))), "{refused:?}");
        assert_eq!(signing(&store).await, (OLD_SIGNING_KEY.to_string(), None));
        assert_eq!(store.rotation("r2").await.unwrap().unwrap().new_signing_public_key, None);
    }
);
