//! Security events and webhook deliveries on both backends: the outbox row commits with its
//! audit record or neither does, every security action maps to its event (and nothing else
//! does), two replicas claiming one delivery leave one winner, and retries are scheduled,
//! re-claimed when due and end `failed` or `delivered`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use xerotier_store::{
    AttemptEnd, AttemptResult, AuditEntry, AuditFilter, DeliveryFilter, NewDelivery, Outcome,
    PageRequest, SecurityEventType, Store,
};
use xerotier_testkit::{TestDb, per_backend};

async fn open(db: &TestDb) -> Store {
    Store::connect(db.url()).await.unwrap()
}

fn audit(id: &str, action: &str, target: (&str, &str), outcome: Outcome) -> AuditEntry {
    AuditEntry {
        id: id.into(),
        at: 1_000,
        actor_key_id: Some("key_admin".into()),
        actor_name: None,
        action: action.into(),
        target_type: Some(target.0.into()),
        target_id: Some(target.1.into()),
        target_name: None,
        reason: Some("suspected leak".into()),
        request_id: None,
        correlation_id: None,
        outcome: outcome.as_str().into(),
        client_addr: None,
        details: Some(
            serde_json::json!({
                "agent_id": "agt_9", "state": "overdue", "join_key_value": "eyJ.secret",
                "secret_hash": "abc", "registration_name": "edge-1",
            })
            .to_string(),
        ),
    }
}

/// One pending delivery of a fresh event to `webhook`.
async fn one_delivery(store: &Store, webhook: &str) -> String {
    let cursor = store.webhook_cursor(webhook).await.unwrap();
    store
        .record_audit(&audit("aud_q", "agent.quarantine", ("agent", "agt_1"), Outcome::Success))
        .await
        .unwrap();
    let events = store.security_events_after(cursor, 10).await.unwrap();
    let (seq, event) = events.last().unwrap().clone();
    let new = NewDelivery {
        id: "del_1".into(),
        event_id: event.id.clone(),
        event_type: event.event_type.clone(),
    };
    store.enqueue_deliveries(webhook, seq, std::slice::from_ref(&new), 1_000).await.unwrap();
    // The same event enqueued again (another replica, or a retry of the fan-out) is one row.
    let again = NewDelivery { id: "del_2".into(), ..new };
    store.enqueue_deliveries(webhook, seq, &[again], 1_000).await.unwrap();
    assert_eq!(store.webhook_cursor(webhook).await.unwrap(), seq);
    "del_1".into()
}

per_backend!(each_security_action_writes_its_event_and_nothing_else_does, open, |db, store| {
    let cases = [
        ("aud_01", "agent.curve_rotate", ("agent", "agt_1"), Outcome::Failed),
        ("aud_02", "agent.revoke_credentials", ("agent", "agt_1"), Outcome::Success),
        ("aud_03", "agent.quarantine", ("agent", "agt_1"), Outcome::Success),
        ("aud_04", "agent.enroll", ("join_key", "jk_1"), Outcome::Denied),
        ("aud_05", "credential.overdue", ("api_key", "key_1"), Outcome::Success),
        ("aud_06", "credential.expired", ("workspace_credential", "agt_9/k"), Outcome::Success),
        ("aud_07", "router_key.update_servers", ("router_key", "mesh"), Outcome::Success),
        // Not security events:
        ("aud_08", "agent.curve_rotate", ("agent", "agt_1"), Outcome::Success),
        ("aud_09", "agent.enroll", ("agent", "agt_2"), Outcome::Success),
        ("aud_10", "agent.revoke_credentials", ("agent", "agt_1"), Outcome::Failed),
        ("aud_11", "api_key.revoke", ("api_key", "key_1"), Outcome::Success),
        ("aud_12", "router_key.init", ("router_key", "tls"), Outcome::Denied),
    ];
    for (id, action, target, outcome) in cases {
        store.record_audit(&audit(id, action, target, outcome)).await.unwrap();
    }
    let events = store.security_events_after(0, 100).await.unwrap();
    let types: Vec<&str> = events.iter().map(|(_, e)| e.event_type.as_str()).collect();
    let expected: Vec<&str> = SecurityEventType::ALL.iter().map(|t| t.as_str()).collect();
    assert_eq!(types, expected, "{}", db.backend);
    assert_eq!(events.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5, 6, 7]);
    for (_, event) in &events {
        assert_eq!(event.id, format!("sev_{}", event.audit_id.trim_start_matches("aud_")));
        let payload: serde_json::Value = serde_json::from_str(&event.payload).unwrap();
        assert_eq!(payload["type"], event.event_type.as_str());
        assert_eq!(payload["reason"], "suspected leak");
        // Never a secret, nor a hash of one, whatever the record's details held.
        assert!(!event.payload.contains("eyJ.secret") && !event.payload.contains("abc"));
        assert_eq!(payload["details"]["registration_name"], "edge-1");
    }
    let denied: serde_json::Value = serde_json::from_str(&events[3].1.payload).unwrap();
    assert_eq!(denied["credential"], serde_json::json!({ "kind": "join_key", "id": "jk_1" }));
    let overdue: serde_json::Value = serde_json::from_str(&events[4].1.payload).unwrap();
    assert_eq!(overdue["agent_id"], "agt_9");
    assert_eq!(overdue["credential"]["kind"], "api_key");
});

per_backend!(an_outbox_row_commits_with_its_audit_record_or_neither_does, open, |db, store| {
    store
        .record_audit(&audit("aud_x", "agent.quarantine", ("agent", "agt_1"), Outcome::Success))
        .await
        .unwrap();
    // This record's event id collides with the first one's (`sev_x`): the outbox insert
    // fails after the audit insert, and the transaction takes both back.
    let colliding = audit("x", "agent.quarantine", ("agent", "agt_1"), Outcome::Success);
    assert!(store.record_audit(&colliding).await.is_err(), "{}", db.backend);
    let page = PageRequest { limit: 10, after: None };
    let records = store.list_audit(&AuditFilter::default(), &page).await.unwrap();
    let ids: Vec<&str> = records.items.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["aud_x"], "{}", db.backend);
    assert_eq!(store.security_events_after(0, 10).await.unwrap().len(), 1);
    // And the counter is not left ahead: the next event is number 2.
    store
        .record_audit(&audit("aud_y", "agent.quarantine", ("agent", "agt_1"), Outcome::Success))
        .await
        .unwrap();
    let seqs: Vec<i64> =
        store.security_events_after(0, 10).await.unwrap().iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, vec![1, 2], "{}", db.backend);
});

per_backend!(a_new_webhook_starts_after_the_events_so_far, open, |db, store| {
    store
        .record_audit(&audit("aud_1", "agent.quarantine", ("agent", "agt_1"), Outcome::Success))
        .await
        .unwrap();
    assert_eq!(store.webhook_cursor("soc").await.unwrap(), 1, "{}", db.backend);
    assert!(store.security_events_after(1, 10).await.unwrap().is_empty());
});

per_backend!(two_replicas_claiming_one_delivery_leave_one_winner, open, |db, store| {
    let id = one_delivery(&store, "soc").await;
    let other = open(&db).await;
    let (a, b) = tokio::join!(
        store.claim_deliveries("rtr_a", 2_000, 30_000, 10),
        other.claim_deliveries("rtr_b", 2_000, 30_000, 10),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len() + b.len(), 1, "{} {a:?} {b:?}", db.backend);
    let (winner, loser) = if a.is_empty() { ("rtr_b", "rtr_a") } else { ("rtr_a", "rtr_b") };
    // Held: nobody else gets it while the lease runs.
    assert!(store.claim_deliveries(loser, 31_999, 30_000, 10).await.unwrap().is_empty());
    // The lease lapsed (the winner died): the other replica takes it, and the late winner's
    // result is refused.
    let taken = store.claim_deliveries(loser, 32_000, 30_000, 10).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].id, id);
    let result = AttemptResult {
        at: 32_001,
        status_code: Some(200),
        error: None,
        end: AttemptEnd::Delivered,
    };
    assert!(store.finish_attempt(&id, winner, &result).await.unwrap().is_none());
    let done = store.finish_attempt(&id, loser, &result).await.unwrap().unwrap();
    assert_eq!(
        (done.status.as_str(), done.attempts, done.delivered_at),
        ("delivered", 1, Some(32_001))
    );
    assert!(store.claim_deliveries(winner, 99_000, 30_000, 10).await.unwrap().is_empty());
});

per_backend!(a_failed_attempt_is_retried_when_due_and_ends_failed, open, |db, store| {
    let id = one_delivery(&store, "soc").await;
    assert_eq!(store.pending_webhook_deliveries().await.unwrap(), 1);
    let claimed = store.claim_deliveries("rtr_a", 1_000, 30_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1, "{}", db.backend);
    let retry = AttemptResult {
        at: 1_100,
        status_code: Some(500),
        error: Some("x".repeat(1_000)),
        end: AttemptEnd::Retry(5_000),
    };
    let row = store.finish_attempt(&id, "rtr_a", &retry).await.unwrap().unwrap();
    assert_eq!((row.status.as_str(), row.attempts, row.next_attempt_at), ("pending", 1, 5_000));
    assert_eq!(row.last_error.unwrap().len(), xerotier_store::MAX_ERROR_CHARS);
    assert!(store.claim_deliveries("rtr_a", 4_999, 30_000, 10).await.unwrap().is_empty());
    assert_eq!(store.claim_deliveries("rtr_b", 5_000, 30_000, 10).await.unwrap().len(), 1);
    let last = AttemptResult {
        at: 5_100,
        status_code: None,
        error: Some("timed out".into()),
        end: AttemptEnd::Failed,
    };
    let row = store.finish_attempt(&id, "rtr_b", &last).await.unwrap().unwrap();
    assert_eq!((row.status.as_str(), row.attempts, row.last_status_code), ("failed", 2, None));
    assert!(store.claim_deliveries("rtr_a", 99_000, 30_000, 10).await.unwrap().is_empty());
    assert_eq!(store.pending_webhook_deliveries().await.unwrap(), 0);
    let failed = DeliveryFilter { webhook: Some("soc".into()), status: Some("failed".into()) };
    let page = store.list_webhook_deliveries(&failed, &PageRequest { limit: 5, after: None });
    assert_eq!(page.await.unwrap().items.len(), 1);
    // An operator's retry puts it back, audited.
    let entry =
        audit("aud_r", "webhook_delivery.retry", ("webhook_delivery", &id), Outcome::Success);
    let row = store.retry_delivery(&id, 100_000, &entry).await.unwrap().unwrap();
    assert_eq!((row.status.as_str(), row.attempts), ("pending", 0));
    assert!(store.retry_delivery(&id, 100_000, &entry).await.unwrap().is_none());
});
