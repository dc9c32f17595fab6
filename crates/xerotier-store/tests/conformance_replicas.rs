//! Replicas on both backends: the signal every audited change leaves (and only a successful
//! one), their commit order under concurrent writers, the registry's leases judged by the
//! database's clock, and the rule that a lost lease comes back only caught up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use xerotier_store::{AuditEntry, NewApiKey, NewReplica, Outcome, Renewal, SignalKind, Store};
use xerotier_testkit::{TestDb, per_backend};

async fn open(db: &TestDb) -> Store {
    Store::connect(db.url()).await.unwrap()
}

fn key(id: &str) -> NewApiKey {
    NewApiKey {
        id: id.into(),
        name: format!("name-{id}"),
        scopes: "execution".into(),
        verifier: "v".repeat(64),
        created_at: 1_000,
        created_by: None,
        expires_at: None,
    }
}

fn audit(id: &str, action: &str, target: &str, outcome: Outcome) -> AuditEntry {
    AuditEntry {
        id: id.into(),
        at: 1_000,
        actor_key_id: None,
        actor_name: None,
        action: action.into(),
        target_type: Some("api_key".into()),
        target_id: Some(target.into()),
        target_name: None,
        reason: None,
        request_id: None,
        correlation_id: None,
        outcome: outcome.as_str().into(),
        client_addr: None,
        details: None,
    }
}

fn replica(id: &str) -> NewReplica {
    NewReplica {
        id: id.into(),
        https_url: format!("https://{id}.example:8443"),
        mesh_addr: format!("tcp://{id}.example:5555"),
        started_at: 1,
    }
}

per_backend!(an_audited_change_leaves_one_signal_and_a_refusal_none, open, |db, store| {
    assert_eq!(store.latest_signal_seq().await.unwrap(), 0);
    store
        .create_api_key(&key("key_a"), &audit("aud_1", "api_key.create", "key_a", Outcome::Success))
        .await
        .unwrap();
    store
        .revoke_api_key(
            "key_a",
            2_000,
            None,
            None,
            false,
            &audit("aud_2", "api_key.revoke", "key_a", Outcome::Success),
        )
        .await
        .unwrap();
    // A refused attempt is recorded, but changed nothing: no signal.
    store.record_audit(&audit("aud_3", "api_key.revoke", "key_a", Outcome::Failed)).await.unwrap();
    let signals = store.signals_after(0, 10).await.unwrap();
    assert_eq!(signals.len(), 2, "{signals:?}");
    assert_eq!(signals.iter().map(|s| s.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert!(signals.iter().all(|s| s.kind == Some(SignalKind::ApiKey) && s.subject == "key_a"));
    assert_eq!(store.latest_signal_seq().await.unwrap(), 2);
    assert_eq!(store.signals_after(1, 10).await.unwrap().len(), 1, "a cursor reads what follows");
});

per_backend!(concurrent_changes_commit_their_signals_in_seq_order, open, |db, store| {
    // Writers race; a reader that followed a cursor while they ran must have seen every
    // signal, in seq order, with no gap left behind its cursor.
    let writers: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = format!("key_{i:02}");
                let entry = audit(&format!("aud_{i:02}"), "api_key.create", &id, Outcome::Success);
                store.create_api_key(&key(&id), &entry).await.unwrap();
            })
        })
        .collect();
    let mut cursor = 0;
    let mut seen = Vec::new();
    let reader = async {
        while seen.len() < 16 {
            for signal in store.signals_after(cursor, 100).await.unwrap() {
                assert_eq!(signal.seq, cursor + 1, "no signal commits behind a cursor");
                cursor = signal.seq;
                seen.push(signal.subject);
            }
            tokio::task::yield_now().await;
        }
    };
    reader.await;
    for writer in writers {
        writer.await.unwrap();
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 16);
});

per_backend!(
    leases_are_judged_by_the_database_and_a_lost_one_returns_only_caught_up,
    open,
    |db, store| {
        let at = store.register_replica(&replica("rtr_a"), 0, 60_000).await.unwrap();
        let now = store.db_now().await.unwrap();
        assert!((now - at).abs() < 5_000, "registered at the database's time: {at} vs {now}");
        store.register_replica(&replica("rtr_b"), 0, 60_000).await.unwrap();
        assert!(store.replicas_behind(0).await.unwrap().is_empty(), "nothing to apply yet");

        store
            .create_api_key(
                &key("key_a"),
                &audit("aud_1", "api_key.create", "key_a", Outcome::Success),
            )
            .await
            .unwrap();
        let mut behind = store.replicas_behind(1).await.unwrap();
        behind.sort();
        assert_eq!(behind, vec!["rtr_a", "rtr_b"], "both hold the change up");
        store.acknowledge_signals("rtr_a", 1).await.unwrap();
        assert_eq!(store.replicas_behind(1).await.unwrap(), vec!["rtr_b"]);
        // An older acknowledgement never moves a replica back.
        store.acknowledge_signals("rtr_a", 0).await.unwrap();
        assert_eq!(store.replicas_behind(1).await.unwrap(), vec!["rtr_b"]);

        // rtr_b's lease runs out (a negative lease: over at once): it no longer holds anything
        // up, and it cannot renew before it has applied what it missed.
        assert!(matches!(store.renew_replica("rtr_b", 0, 0, -1).await.unwrap(), Renewal::Renewed));
        assert!(
            store.replicas_behind(1).await.unwrap().is_empty(),
            "a lapsed lease holds nothing up"
        );
        assert_eq!(store.renew_replica("rtr_b", 0, 0, 60_000).await.unwrap(), Renewal::MustCatchUp);
        assert!(matches!(
            store.renew_replica("rtr_b", 1, 3, 60_000).await.unwrap(),
            Renewal::Renewed
        ));
        let listed = store.list_replicas().await.unwrap();
        let b = listed.iter().find(|r| r.id == "rtr_b").unwrap();
        assert_eq!((b.applied_seq, b.sessions), (1, 3));
        assert_eq!(b.mesh_addr, "tcp://rtr_b.example:5555");

        assert_eq!(store.renew_replica("rtr_gone", 1, 0, 60_000).await.unwrap(), Renewal::Unknown);

        // A clean stop holds nothing up either.
        store
            .create_api_key(
                &key("key_b"),
                &audit("aud_2", "api_key.create", "key_b", Outcome::Success),
            )
            .await
            .unwrap();
        store.mark_replica_stopped("rtr_a").await.unwrap();
        assert_eq!(store.replicas_behind(2).await.unwrap(), vec!["rtr_b"]);
    }
);
