//! Join keys and agents, on both backends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use xerotier_store::{
    AgentEvent, AgentRecord, AuditFilter, CANDIDATE, Decision, DeclaredWorkspace, GRANTED,
    Heartbeat, JoinKeyRecord, PageRequest, REJECTED, Store, StoreError, WITHDRAWN,
};
use xerotier_testkit::{TestDb, per_backend};

mod builders;
use builders::audit;

/// A store on `db`, migrated.
async fn open(db: &TestDb) -> Store {
    Store::connect(db.url()).await.unwrap()
}

fn join_key(id: &str, expires_at: i64) -> JoinKeyRecord {
    JoinKeyRecord {
        id: id.into(),
        name: "xem-fleet-02".into(),
        region: Some("us-east".into()),
        role: "execution".into(),
        router_addr: "tcp://router:5555".into(),
        created_at: 0,
        created_by: Some("key_admin".into()),
        expires_at,
        consumed_at: None,
        consumed_by_agent: None,
        revoked_at: None,
        revoked_by: None,
        revoked_reason: None,
        grant_workspaces: None,
        require_approval: false,
        signing_kid: None,
    }
}

fn agent(id: &str, name: &str, jk: &str, curve: &str) -> AgentRecord {
    AgentRecord {
        id: id.into(),
        name: name.into(),
        role: "execution".into(),
        region: None,
        join_key_id: jk.into(),
        enrolled_at: 10,
        curve_public_key: curve.into(),
        signing_public_key: "ab".repeat(32),
        manifest: "{}".into(),
        manifest_hash: "h0".into(),
        manifest_version: 1,
        lease_interval_ms: 10_000,
        last_heartbeat_at: None,
        revoked_at: None,
        revoked_by: None,
        revoked_reason: None,
        previous_curve_public_key: None,
        approval: "approved".into(),
        quarantined_at: None,
        quarantine_reason: None,
        replica_id: None,
        replica_since: None,
        signing_key_rotated_at: None,
    }
}

async fn audit_count(store: &Store) -> usize {
    let page = PageRequest { limit: 500, after: None };
    store.list_audit(&AuditFilter::default(), &page).await.unwrap().items.len()
}

per_backend!(join_key_lists_active_and_terminal_states, open, |db, store| {
    for (id, exp) in [("jk_1", 1_000), ("jk_2", 1_000), ("jk_3", 1_000), ("jk_4", 50)] {
        store.create_join_key(&join_key(id, exp), &audit(&format!("a{id}"))).await.unwrap();
    }
    store.enroll_agent(&agent("agt_1", "xem-1", "jk_1", "c1"), 10, &audit("e1")).await.unwrap();
    store.revoke_join_key("jk_2", 20, Some("key_admin"), Some("leak"), &audit("r2")).await.unwrap();
    let now = 100;
    let page = PageRequest { limit: 50, after: None };
    let active = store.list_join_keys(&page, false, now).await.unwrap();
    let ids: Vec<_> = active.items.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(ids, ["jk_3"], "{}", db.backend);
    let all = store.list_join_keys(&page, true, now).await.unwrap();
    let states: Vec<_> = all.items.iter().map(|k| (k.id.as_str(), k.state(now))).collect();
    assert_eq!(
        states,
        [("jk_1", "used"), ("jk_2", "revoked"), ("jk_3", "active"), ("jk_4", "expired")]
    );
    let used = store.join_key("jk_1").await.unwrap().unwrap();
    assert_eq!(used.consumed_by_agent.as_deref(), Some("agt_1"));
    let revoked = store.join_key("jk_2").await.unwrap().unwrap();
    assert_eq!(
        (revoked.revoked_by.as_deref(), revoked.revoked_reason.as_deref()),
        (Some("key_admin"), Some("leak"))
    );
});

per_backend!(a_join_key_enrolls_once_and_terminal_keys_say_why, open, |db, store| {
    store.create_join_key(&join_key("jk_1", 1_000), &audit("a1")).await.unwrap();
    store.create_join_key(&join_key("jk_2", 1_000), &audit("a2")).await.unwrap();
    store.create_join_key(&join_key("jk_3", 50), &audit("a3")).await.unwrap();
    store.enroll_agent(&agent("agt_1", "xem-1", "jk_1", "c1"), 10, &audit("e1")).await.unwrap();
    let again = store.enroll_agent(&agent("agt_2", "xem-2", "jk_1", "c2"), 11, &audit("e2")).await;
    assert!(matches!(again, Err(StoreError::JoinKeyUsed(_))), "{}: {again:?}", db.backend);
    store.revoke_join_key("jk_2", 12, None, None, &audit("r2")).await.unwrap();
    let revoked =
        store.enroll_agent(&agent("agt_3", "xem-3", "jk_2", "c3"), 13, &audit("e3")).await;
    assert!(matches!(revoked, Err(StoreError::JoinKeyRevoked(_))));
    let expired =
        store.enroll_agent(&agent("agt_4", "xem-4", "jk_3", "c4"), 50, &audit("e4")).await;
    assert!(matches!(expired, Err(StoreError::JoinKeyExpired(_))));
    let unknown =
        store.enroll_agent(&agent("agt_5", "xem-5", "jk_9", "c5"), 10, &audit("e5")).await;
    assert!(matches!(unknown, Err(StoreError::NotFound(_))));
    let used_revoke = store.revoke_join_key("jk_1", 14, None, None, &audit("r1")).await;
    assert!(matches!(used_revoke, Err(StoreError::JoinKeyUsed(_))));
    for id in ["agt_2", "agt_3", "agt_4", "agt_5"] {
        assert!(store.agent(id).await.unwrap().is_none());
    }
    assert_eq!(audit_count(&store).await, 5, "3 creates + 1 enroll + 1 revoke");
});

per_backend!(thirty_two_concurrent_enrollments_with_one_key_make_one_agent, open, |db, store| {
    store.create_join_key(&join_key("jk_1", 1_000_000), &audit("a1")).await.unwrap();
    let attempts = (0..32).map(|i| {
        let store = store.clone();
        async move {
            let a = agent(&format!("agt_{i:02}"), &format!("xem-{i}"), "jk_1", &format!("c{i}"));
            store.enroll_agent(&a, 10, &audit(&format!("e{i}"))).await
        }
    });
    let results = futures::future::join_all(attempts).await;
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1, "{}: {results:?}", db.backend);
    assert!(results.iter().all(|r| r.is_ok() || matches!(r, Err(StoreError::JoinKeyUsed(_)))));
    let page = PageRequest { limit: 100, after: None };
    assert_eq!(store.list_agents(&page, true).await.unwrap().items.len(), 1);
});

per_backend!(refused_agent_leaves_the_join_key_usable, open, |db, store| {
    store.create_join_key(&join_key("jk_1", 1_000), &audit("a1")).await.unwrap();
    store.create_join_key(&join_key("jk_2", 1_000), &audit("a2")).await.unwrap();
    store.create_join_key(&join_key("jk_3", 1_000), &audit("a3")).await.unwrap();
    store.enroll_agent(&agent("agt_1", "xem-1", "jk_1", "c1"), 10, &audit("e1")).await.unwrap();
    let name = store.enroll_agent(&agent("agt_2", "xem-1", "jk_2", "c2"), 11, &audit("e2")).await;
    assert!(
        matches!(name, Err(StoreError::AgentNameTaken(ref n)) if n == "xem-1"),
        "{}: {name:?}",
        db.backend
    );
    let curve = store.enroll_agent(&agent("agt_3", "xem-3", "jk_3", "c1"), 12, &audit("e3")).await;
    assert!(matches!(curve, Err(StoreError::CurveKeyTaken)), "{curve:?}");
    assert_eq!(store.join_key("jk_2").await.unwrap().unwrap().state(13), "active");
    assert_eq!(store.join_key("jk_3").await.unwrap().unwrap().state(13), "active");
    store.enroll_agent(&agent("agt_2", "xem-2", "jk_2", "c2"), 14, &audit("e4")).await.unwrap();
});

per_backend!(
    revoked_agent_leaves_the_allow_list_and_frees_its_name_not_its_key,
    open,
    |db, store| {
        for id in ["jk_1", "jk_2", "jk_3"] {
            store.create_join_key(&join_key(id, 1_000), &audit(&format!("a{id}"))).await.unwrap();
        }
        store.enroll_agent(&agent("agt_1", "xem-1", "jk_1", "c1"), 10, &audit("e1")).await.unwrap();
        assert_eq!(
            store.live_agent_keys().await.unwrap(),
            [("agt_1".to_string(), "c1".to_string())]
        );
        let revoked = store
            .revoke_agent("agt_1", 20, Some("key_admin"), Some("incident"), &audit("r1"))
            .await
            .unwrap();
        assert_eq!(revoked.revoked_at, Some(20), "{}", db.backend);
        assert!(store.live_agent_keys().await.unwrap().is_empty());
        let twice = store.revoke_agent("agt_1", 21, None, None, &audit("r2")).await;
        assert!(matches!(twice, Err(StoreError::AlreadyRevoked(_))));
        let reuse_key =
            store.enroll_agent(&agent("agt_2", "xem-1", "jk_2", "c1"), 22, &audit("e2")).await;
        assert!(matches!(reuse_key, Err(StoreError::CurveKeyTaken)));
        store.enroll_agent(&agent("agt_3", "xem-1", "jk_3", "c3"), 23, &audit("e3")).await.unwrap();
    }
);

per_backend!(heartbeats_move_forward_and_skip_revoked_agents, open, |db, store| {
    store.create_join_key(&join_key("jk_1", 1_000), &audit("a1")).await.unwrap();
    store.create_join_key(&join_key("jk_2", 1_000), &audit("a2")).await.unwrap();
    store.enroll_agent(&agent("agt_1", "xem-1", "jk_1", "c1"), 10, &audit("e1")).await.unwrap();
    store.enroll_agent(&agent("agt_2", "xem-2", "jk_2", "c2"), 10, &audit("e2")).await.unwrap();
    store.revoke_agent("agt_2", 15, None, None, &audit("r2")).await.unwrap();
    let beat = |id: &str, at: i64, v: i64| Heartbeat {
        agent_id: id.into(),
        at,
        manifest_hash: format!("h{v}"),
        manifest_version: v,
        replica_id: "rtr_a".into(),
    };
    store.record_heartbeats(&[beat("agt_1", 100, 2), beat("agt_2", 100, 2)]).await.unwrap();
    store.record_heartbeats(&[beat("agt_1", 90, 1)]).await.unwrap();
    let a1 = store.agent("agt_1").await.unwrap().unwrap();
    assert_eq!((a1.last_heartbeat_at, a1.manifest_version), (Some(100), 2), "{}", db.backend);
    assert_eq!(store.agent("agt_2").await.unwrap().unwrap().last_heartbeat_at, None);
});

per_backend!(agents_are_read_by_ids_in_batches_whatever_the_ids_say, open, |db, store| {
    store.create_join_key(&join_key("jk_1", 1_000), &audit("a1")).await.unwrap();
    store.create_join_key(&join_key("jk_2", 1_000), &audit("a2")).await.unwrap();
    store.create_join_key(&join_key("jk_3", 1_000), &audit("a3")).await.unwrap();
    for (id, jk) in [("agt_1", "jk_1"), ("agt_2", "jk_2"), ("agt_3", "jk_3")] {
        let a = agent(id, &format!("xem-{id}"), jk, &format!("c{id}"));
        store.enroll_agent(&a, 10, &audit(&format!("e{id}"))).await.unwrap();
    }
    store.revoke_agent("agt_2", 15, None, None, &audit("r2")).await.unwrap();
    assert!(store.agents_by_ids(&[]).await.unwrap().is_empty(), "{}", db.backend);
    // Unknown and hostile ids find nothing; the three known ones sit in the first, second
    // and third query of the batch (500 ids each).
    let fillers: Vec<String> = (0..1_200).map(|i| format!("agt_none_{i}")).collect();
    let mut ids: Vec<&str> = fillers.iter().map(String::as_str).collect();
    ids[7] = "agt_2";
    ids[650] = "x' OR '1'='1";
    ids[700] = "agt_3";
    ids[1_100] = "agt_1";
    ids.push("agt_1");
    let found = store.agents_by_ids(&ids).await.unwrap();
    let mut seen: Vec<(&str, bool)> =
        found.iter().map(|a| (a.id.as_str(), a.revoked_at.is_some())).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, [("agt_1", false), ("agt_2", true), ("agt_3", false)], "{}", db.backend);
    assert_eq!(
        found.iter().find(|a| a.id == "agt_3"),
        store.agent("agt_3").await.unwrap().as_ref()
    );
});

per_backend!(
    credential_reports_replace_the_agents_previous_one_and_late_reports_are_ignored,
    open,
    |db, store| {
        use xerotier_store::CredentialState;
        let state = |file: &str, generation: i64, ok: bool| CredentialState {
            agent_id: "agt_c".into(),
            credentials_ref: file.into(),
            sha256: Some(format!("hash-{generation}")),
            generation,
            mtime_ms: Some(1_000 * generation),
            ok,
            error: (!ok).then(|| "mode 644".to_string()),
            reported_at: 0,
            expires_at: (generation == 2).then_some(9_000),
        };
        store.create_join_key(&join_key("jk_c", 10_000), &audit("a1")).await.unwrap();
        store
            .enroll_agent(&agent("agt_c", "xem-c", "jk_c", "curve-c"), 1, &audit("a2"))
            .await
            .unwrap();
        store
            .record_credential_report(
                "agt_c",
                &[state("a.yaml", 1, true), state("b.yaml", 1, true)],
                100,
            )
            .await
            .unwrap();
        store.record_credential_report("agt_c", &[state("a.yaml", 2, false)], 200).await.unwrap();
        let states = store.credential_states(None).await.unwrap();
        assert_eq!(states.len(), 1, "[{}] the latest report replaces the whole set", db.backend);
        assert_eq!((states[0].generation, states[0].ok, states[0].reported_at), (2, false, 200));
        assert_eq!(states[0].error.as_deref(), Some("mode 644"));
        assert_eq!(states[0].expires_at, Some(9_000), "[{}] the file's own expiry", db.backend);

        store.record_credential_report("agt_c", &[state("z.yaml", 9, true)], 150).await.unwrap();
        let states = store.credential_states(Some("agt_c")).await.unwrap();
        assert_eq!(
            states[0].credentials_ref, "a.yaml",
            "[{}] a late report changes nothing",
            db.backend
        );

        store.revoke_agent("agt_c", 300, None, None, &audit("a3")).await.unwrap();
        assert!(
            store.credential_states(None).await.unwrap().is_empty(),
            "revoked agents are not listed"
        );
    }
);

fn declared(workspace: &str, hash: &str) -> DeclaredWorkspace {
    DeclaredWorkspace {
        workspace: workspace.into(),
        definitions_hash: hash.into(),
        tools: format!("[{{\"hash\":\"{hash}\"}}]"),
    }
}

async fn states(store: &Store, agent: &str) -> Vec<(String, String, String)> {
    let rows = store.agent_workspaces(agent).await.unwrap();
    rows.into_iter().map(|d| (d.workspace, d.state, d.source)).collect()
}

per_backend!(a_grant_serves_at_once_and_the_rest_waits_as_candidates, open, |db, store| {
    let mut key = join_key("jk_1", 1_000);
    key.grant_workspaces = Some(r#"["prod"]"#.into());
    store.create_join_key(&key, &audit("a1")).await.unwrap();
    store.enroll_agent(&agent("agt_1", "xem-1", "jk_1", "c1"), 10, &audit("e1")).await.unwrap();
    assert_eq!(store.agent("agt_1").await.unwrap().unwrap().approval, "approved");
    let grant = vec!["prod".to_string()];
    let changed = store
        .declare_workspaces(
            "agt_1",
            &[declared("prod", "h1"), declared("staging", "h1")],
            Some(("jk_1", &grant)),
            20,
        )
        .await
        .unwrap();
    assert_eq!(changed.len(), 2, "{}", db.backend);
    assert_eq!(
        states(&store, "agt_1").await,
        [
            ("prod".into(), GRANTED.into(), "join_key".into()),
            ("staging".into(), CANDIDATE.into(), "manifest".into())
        ]
    );
    // Declaring the same again changes nothing; a grant is never taken from a later manifest.
    let again = store
        .declare_workspaces("agt_1", &[declared("prod", "h1"), declared("qa", "h1")], None, 21)
        .await
        .unwrap();
    assert_eq!(again, [("qa".to_string(), CANDIDATE.to_string())]);
    // New tool definitions make even a granted workspace a candidate again.
    store.declare_workspaces("agt_1", &[declared("prod", "h2")], None, 22).await.unwrap();
    let prod = store.agent_workspaces("agt_1").await.unwrap().remove(0);
    assert_eq!((prod.state.as_str(), prod.definitions_hash.as_str()), (CANDIDATE, "h2"));
    // Approve one, reject the rest; each decision is audited; a decision with nothing to decide
    // writes nothing.
    let before = audit_count(&store).await;
    let approved = store
        .decide_workspaces(
            "agt_1",
            Some("prod"),
            Decision::Approve,
            Some("key_op"),
            30,
            &audit("d1"),
        )
        .await
        .unwrap();
    assert_eq!(approved.len(), 1);
    assert_eq!(
        (approved[0].state.as_str(), approved[0].decided_by.as_deref()),
        (GRANTED, Some("key_op"))
    );
    let rejected = store
        .decide_workspaces("agt_1", None, Decision::Reject, Some("key_op"), 31, &audit("d2"))
        .await
        .unwrap();
    assert_eq!(rejected.len(), 2, "qa and staging");
    let nothing =
        store.decide_workspaces("agt_1", None, Decision::Reject, None, 32, &audit("d3")).await;
    assert!(matches!(nothing, Err(StoreError::NotFound(_))), "{nothing:?}");
    assert_eq!(audit_count(&store).await, before + 2);
    // Withdraw a grant; approve brings it back.
    store
        .decide_workspaces("agt_1", Some("prod"), Decision::Withdraw, None, 33, &audit("d4"))
        .await
        .unwrap();
    assert_eq!(store.workspaces_in_state(WITHDRAWN).await.unwrap().len(), 1);
    let not_granted = store
        .decide_workspaces("agt_1", Some("prod"), Decision::Withdraw, None, 34, &audit("d5"))
        .await;
    assert!(matches!(not_granted, Err(StoreError::NotFound(_))));
    assert_eq!(store.workspaces_in_state(CANDIDATE).await.unwrap().len(), 0);
    assert_eq!(store.workspaces_in_state(REJECTED).await.unwrap().len(), 2);
});

per_backend!(a_key_that_requires_approval_enrolls_a_pending_agent, open, |db, store| {
    let mut key = join_key("jk_1", 1_000);
    key.require_approval = true;
    store.create_join_key(&key, &audit("a1")).await.unwrap();
    let listed = store.join_key("jk_1").await.unwrap().unwrap();
    assert!(listed.require_approval && listed.grant_workspaces.is_none(), "{}", db.backend);
    // Whatever the enrolling side claims, the join key decides.
    store.enroll_agent(&agent("agt_1", "xem-1", "jk_1", "c1"), 10, &audit("e1")).await.unwrap();
    assert_eq!(store.agent("agt_1").await.unwrap().unwrap().approval, "pending");
    store.declare_workspaces("agt_1", &[declared("prod", "h1")], None, 11).await.unwrap();
    store
        .decide_workspaces(
            "agt_1",
            Some("prod"),
            Decision::Approve,
            Some("key_op"),
            12,
            &audit("d1"),
        )
        .await
        .unwrap();
    assert_eq!(store.agent("agt_1").await.unwrap().unwrap().approval, "approved");
    // A revoked agent's workspaces are not candidates and cannot be decided.
    store.create_join_key(&join_key("jk_2", 1_000), &audit("a2")).await.unwrap();
    store.enroll_agent(&agent("agt_2", "xem-2", "jk_2", "c2"), 10, &audit("e2")).await.unwrap();
    store.declare_workspaces("agt_2", &[declared("prod", "h1")], None, 11).await.unwrap();
    store.revoke_agent("agt_2", 13, None, None, &audit("r2")).await.unwrap();
    assert!(store.workspaces_in_state(CANDIDATE).await.unwrap().is_empty());
    let refused =
        store.decide_workspaces("agt_2", None, Decision::Approve, None, 14, &audit("d2")).await;
    assert!(matches!(refused, Err(StoreError::NotFound(_))));
});

fn event(id: &str, agent: &str) -> AgentEvent {
    AgentEvent {
        id: id.into(),
        agent_id: agent.into(),
        at: 1,
        event_type: "quarantined".into(),
        request_id: None,
        details: None,
    }
}

per_backend!(a_quarantine_is_recorded_once_and_lifted_once, open, |db, store| {
    store.create_join_key(&join_key("jk_1", 1_000), &audit("a1")).await.unwrap();
    store.enroll_agent(&agent("agt_1", "xem-1", "jk_1", "c1"), 10, &audit("e1")).await.unwrap();
    let before = audit_count(&store).await;
    let quarantined = store
        .quarantine_agent("agt_1", 20, "two live sessions", &event("ev1", "agt_1"), &audit("q1"))
        .await
        .unwrap()
        .expect("quarantined");
    assert_eq!(quarantined.quarantined_at, Some(20), "{}", db.backend);
    let again = store
        .quarantine_agent("agt_1", 21, "again", &event("ev2", "agt_1"), &audit("q2"))
        .await
        .unwrap();
    assert!(again.is_none(), "already quarantined: nothing written");
    assert_eq!(audit_count(&store).await, before + 1);
    let page = PageRequest { limit: 10, after: None };
    assert_eq!(store.list_events("agt_1", &page).await.unwrap().items.len(), 1);
    let released = store.release_quarantine("agt_1", &audit("r1")).await.unwrap();
    assert_eq!((released.quarantined_at, released.quarantine_reason), (None, None));
    let twice = store.release_quarantine("agt_1", &audit("r2")).await;
    assert!(matches!(twice, Err(StoreError::NotFound(_))), "{twice:?}");
    assert_eq!(audit_count(&store).await, before + 2);
    // A revoked agent is neither quarantined nor released.
    store.revoke_agent("agt_1", 30, None, None, &audit("v1")).await.unwrap();
    let revoked = store
        .quarantine_agent("agt_1", 31, "late", &event("ev3", "agt_1"), &audit("q3"))
        .await
        .unwrap();
    assert!(revoked.is_none());
});
