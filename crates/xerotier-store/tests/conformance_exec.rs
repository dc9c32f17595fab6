//! Invocations and containment pauses, on both backends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::sync::Arc;

use xerotier_store::{
    AuditEntry, AuditFilter, CancelOutcome, InvocationEnd, InvocationFilter, NewInvocation,
    PageRequest, PauseRecord, Store, StoreError,
};
use xerotier_testkit::{TestDb, per_backend};

/// A store on `db`, migrated.
async fn open(db: &TestDb) -> Store {
    Store::connect(db.url()).await.unwrap()
}

fn new_invocation(id: &str) -> NewInvocation {
    NewInvocation {
        id: id.into(),
        tool: "noop".into(),
        workspace: "prod".into(),
        args: "{}".into(),
        created_at: 10,
        created_by: Some("key_op".into()),
        claimed_by: None,
    }
}

fn end(status: &str) -> InvocationEnd {
    InvocationEnd {
        status: status.into(),
        exit_code: Some(0),
        stdout: "ok\n".into(),
        stderr: String::new(),
        stdout_truncated: false,
        stderr_truncated: true,
        error: None,
        started_at: Some(20),
        finished_at: 30,
        credential_generation: Some(2),
    }
}

fn audit(id: &str, action: &str) -> AuditEntry {
    AuditEntry {
        id: id.into(),
        at: 1,
        actor_key_id: Some("key_op".into()),
        actor_name: Some("op".into()),
        action: action.into(),
        target_type: Some("agent".into()),
        target_id: Some("agt_1".into()),
        target_name: None,
        reason: None,
        request_id: None,
        correlation_id: None,
        outcome: "success".into(),
        client_addr: None,
        details: None,
    }
}

/// The record of creating invocation `id`.
fn created(id: &str) -> AuditEntry {
    let mut entry = audit(&format!("aud_create_{id}"), "invocation.create");
    entry.target_type = Some("invocation".into());
    entry.target_id = Some(id.into());
    entry
}

/// The record of cancelling invocation `id` (one per test: its id is the record's).
fn cancel_audit(id: &str) -> AuditEntry {
    let mut entry = audit(&format!("aud_cancel_{id}"), "invocation.cancel");
    entry.target_type = Some("invocation".into());
    entry.target_id = Some(id.into());
    entry
}

per_backend!(an_invocation_goes_queued_claimed_running_finished_once, open, |db, store| {
    let queued =
        store.create_invocation(&new_invocation("inv_1"), &created("inv_1")).await.unwrap();
    assert_eq!(queued.status, "queued", "[{}]", db.backend);
    assert_eq!(store.unclaimed_invocations(10).await.unwrap().len(), 1);

    assert!(store.claim_invocation("inv_1", "agt_1", 11).await.unwrap());
    assert!(
        !store.claim_invocation("inv_1", "agt_2", 11).await.unwrap(),
        "[{}] claimed twice",
        db.backend
    );
    assert!(store.unclaimed_invocations(10).await.unwrap().is_empty());
    assert!(
        store.start_invocation("inv_1", "agt_2", 12, 1).await.unwrap().is_none(),
        "another agent cannot start it"
    );
    let running = store.start_invocation("inv_1", "agt_1", 12, 1).await.unwrap().unwrap();
    assert_eq!(
        (running.status.as_str(), running.started_at),
        ("running", Some(12)),
        "as committed"
    );
    assert_eq!(store.invocations_held_by("agt_1").await.unwrap().len(), 1);

    assert!(
        store.finish_invocation("inv_1", Some("agt_2"), &end("succeeded")).await.unwrap().is_none()
    );
    let ended = store.finish_invocation("inv_1", Some("agt_1"), &end("succeeded")).await.unwrap();
    assert_eq!(ended.as_ref().map(|r| r.status.as_str()), Some("succeeded"), "as committed");
    assert!(
        store.finish_invocation("inv_1", Some("agt_1"), &end("failed")).await.unwrap().is_none(),
        "[{}] a re-sent result changes nothing",
        db.backend
    );
    let done = store.invocation("inv_1").await.unwrap().unwrap();
    assert_eq!(done.status, "succeeded");
    assert_eq!(done.stdout, "ok\n");
    assert!(done.stderr_truncated && !done.stdout_truncated);
    assert_eq!(done.started_at, Some(12), "the router's start time is kept");
    assert_eq!(done.credential_generation, Some(2));
    assert!(store.invocations_held_by("agt_1").await.unwrap().is_empty());
});

per_backend!(an_invocation_claimed_as_it_is_created_is_never_claimed_again, open, |db, store| {
    let mut new = new_invocation("inv_claimed");
    new.claimed_by = Some("agt_1".into());
    let created = store.create_invocation(&new, &created("inv_claimed")).await.unwrap();
    assert_eq!(created.status, "queued", "[{}]", db.backend);
    assert_eq!(created.agent_id.as_deref(), Some("agt_1"));
    assert_eq!(created.dispatched_at, Some(10), "dispatched as it was created");
    assert!(store.unclaimed_invocations(10).await.unwrap().is_empty(), "not in the queue");
    assert!(!store.claim_invocation("inv_claimed", "agt_2", 11).await.unwrap());
    assert_eq!(store.invocations_held_by("agt_1").await.unwrap().len(), 1);
    // Its agent may give it back (refused, or gone before starting it): then it is queued.
    assert!(store.requeue_invocation("inv_claimed", "agt_1").await.unwrap());
    assert_eq!(store.unclaimed_invocations(10).await.unwrap().len(), 1);
    // And the audit record committed with it.
    assert_eq!(audit_ids(&store).await, vec!["aud_create_inv_claimed".to_string()]);
});

per_backend!(
    an_invocation_and_its_audit_record_commit_together_or_not_at_all,
    open,
    |db, store| {
        store.create_invocation(&new_invocation("inv_1"), &created("inv_1")).await.unwrap();
        // The audit record cannot be written (its id is taken): no invocation either.
        let mut taken = created("inv_2");
        taken.id = "aud_create_inv_1".into();
        assert!(store.create_invocation(&new_invocation("inv_2"), &taken).await.is_err());
        assert!(
            store.invocation("inv_2").await.unwrap().is_none(),
            "[{}] created without its record",
            db.backend
        );
        // The invocation cannot be written (its id is taken): no audit record either.
        assert!(
            store.create_invocation(&new_invocation("inv_1"), &created("inv_3")).await.is_err()
        );
        assert_eq!(
            audit_ids(&store).await,
            vec!["aud_create_inv_1".to_string()],
            "[{}]",
            db.backend
        );
    }
);

per_backend!(a_paused_agent_is_not_claimed_as_the_invocation_is_created, open, |db, store| {
    let pause = |agent: &str, workspace: Option<&str>| PauseRecord {
        agent_id: agent.into(),
        workspace: workspace.map(str::to_string),
        paused_at: 5,
        paused_by: Some("key_op".into()),
        reason: None,
    };
    store.pause_exec(&pause("agt_1", None), &audit("aud_p1", "agent.pause_exec")).await.unwrap();
    let ws = pause("agt_2", Some("prod"));
    store.pause_exec(&ws, &audit("aud_p2", "agent.pause_exec")).await.unwrap();
    let elsewhere = pause("agt_3", Some("staging"));
    store.pause_exec(&elsewhere, &audit("aud_p3", "agent.pause_exec")).await.unwrap();
    for (n, agent, claimed) in
        [(1, "agt_1", false), (2, "agt_2", false), (3, "agt_3", true), (4, "agt_4", true)]
    {
        let id = format!("inv_{n}");
        let mut new = new_invocation(&id);
        new.claimed_by = Some(agent.into());
        let record = store.create_invocation(&new, &created(&id)).await.unwrap();
        assert_eq!(
            (record.agent_id.is_some(), record.dispatched_at.is_some()),
            (claimed, claimed),
            "[{}] {agent} (workspace prod): {record:?}",
            db.backend
        );
        assert_eq!(record.status, "queued");
    }
    let unclaimed = store.unclaimed_invocations(10).await.unwrap();
    let ids: Vec<&str> = unclaimed.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, vec!["inv_1", "inv_2"], "[{}] the paused ones wait in the queue", db.backend);
});

per_backend!(concurrent_claims_have_exactly_one_winner, open, |db, store| {
    store.create_invocation(&new_invocation("inv_race"), &created("inv_race")).await.unwrap();
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for n in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.claim_invocation("inv_race", &format!("agt_{n}"), 5).await.unwrap()
        }));
    }
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await.unwrap());
    }
    assert_eq!(winners, 1, "[{}]", db.backend);
});

per_backend!(requeue_returns_an_unstarted_invocation_but_not_a_running_one, open, |db, store| {
    store.create_invocation(&new_invocation("inv_a"), &created("inv_a")).await.unwrap();
    store.create_invocation(&new_invocation("inv_b"), &created("inv_b")).await.unwrap();
    store.claim_invocation("inv_a", "agt_1", 1).await.unwrap();
    store.claim_invocation("inv_b", "agt_1", 1).await.unwrap();
    store.start_invocation("inv_b", "agt_1", 2, 1).await.unwrap();
    assert!(store.requeue_invocation("inv_a", "agt_1").await.unwrap(), "[{}]", db.backend);
    assert!(!store.requeue_invocation("inv_b", "agt_1").await.unwrap(), "[{}]", db.backend);
    let queued = store.unclaimed_invocations(10).await.unwrap();
    assert_eq!(queued.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), vec!["inv_a"]);
    assert_eq!(queued[0].dispatched_at, None);
});

per_backend!(
    cancel_is_immediate_before_dispatch_requested_after_and_refused_when_done,
    open,
    |db, store| {
        for id in ["inv_q", "inv_r", "inv_d"] {
            store.create_invocation(&new_invocation(id), &created(id)).await.unwrap();
        }
        match store.cancel_invocation("inv_q", 50, None, &cancel_audit("inv_q")).await.unwrap() {
            CancelOutcome::Cancelled(r) => assert_eq!(r.status, "cancelled", "[{}]", db.backend),
            other => panic!("[{}] {other:?}", db.backend),
        }
        assert!(
            !store.claim_invocation("inv_q", "agt_1", 51).await.unwrap(),
            "cancelled is never dispatched"
        );

        store.claim_invocation("inv_r", "agt_1", 1).await.unwrap();
        store.start_invocation("inv_r", "agt_1", 2, 1).await.unwrap();
        match store.cancel_invocation("inv_r", 60, None, &cancel_audit("inv_r")).await.unwrap() {
            CancelOutcome::Requested(r) => {
                assert_eq!(r.status, "running");
                assert_eq!(r.cancel_requested_at, Some(60));
            }
            other => panic!("[{}] {other:?}", db.backend),
        }

        store.claim_invocation("inv_d", "agt_1", 1).await.unwrap();
        store.finish_invocation("inv_d", Some("agt_1"), &end("succeeded")).await.unwrap();
        assert!(matches!(
            store.cancel_invocation("inv_d", 70, None, &cancel_audit("inv_d")).await.unwrap(),
            CancelOutcome::AlreadyFinished(_)
        ));
        assert!(matches!(
            store.cancel_invocation("inv_missing", 70, None, &cancel_audit("inv_missing")).await,
            Err(StoreError::NotFound(_))
        ));
    }
);

/// The ids of every audit record, in the order they committed.
async fn audit_ids(store: &Store) -> Vec<String> {
    let page = PageRequest { limit: 500, after: None };
    let records = store.list_audit(&AuditFilter::default(), &page).await.unwrap();
    records.items.into_iter().map(|e| e.id).collect()
}

per_backend!(creating_and_cancelling_commit_their_audit_records, open, |db, store| {
    store.create_invocation(&new_invocation("inv_a"), &created("inv_a")).await.unwrap();
    store.create_invocation(&new_invocation("inv_b"), &created("inv_b")).await.unwrap();
    store.claim_invocation("inv_b", "agt_1", 1).await.unwrap();
    store.finish_invocation("inv_b", Some("agt_1"), &end("succeeded")).await.unwrap();
    store.cancel_invocation("inv_a", 5, None, &cancel_audit("inv_a")).await.unwrap();
    // Refusals write nothing here (the router records them as `failed` on their own).
    store.cancel_invocation("inv_b", 6, None, &cancel_audit("inv_b")).await.unwrap();
    store.cancel_invocation("inv_none", 6, None, &cancel_audit("inv_none")).await.unwrap_err();
    assert_eq!(
        audit_ids(&store).await,
        ["aud_create_inv_a", "aud_create_inv_b", "aud_cancel_inv_a"],
        "[{}] one record per change, none for a refusal, in the order they committed",
        db.backend
    );
    // A record that cannot be written (its id is taken) takes the change down with it.
    let mut twin = new_invocation("inv_c");
    twin.created_by = Some("key_op".into());
    let refused = store.create_invocation(&twin, &created("inv_a")).await;
    assert!(refused.is_err(), "[{}] {refused:?}", db.backend);
    assert!(store.invocation("inv_c").await.unwrap().is_none(), "no record, no invocation");
});

per_backend!(a_key_cancels_and_lists_only_the_invocations_it_created, open, |db, store| {
    let mine = new_invocation("inv_mine");
    let mut theirs = new_invocation("inv_theirs");
    theirs.created_by = Some("key_other".into());
    let mut done = new_invocation("inv_done");
    done.created_by = Some("key_other".into());
    for new in [&mine, &theirs, &done] {
        store.create_invocation(new, &created(&new.id)).await.unwrap();
    }
    store.claim_invocation("inv_done", "agt_1", 1).await.unwrap();
    store.finish_invocation("inv_done", Some("agt_1"), &end("succeeded")).await.unwrap();

    // Another key's invocation, queued or finished, is not found: nothing changes, nothing
    // is confirmed about it.
    for id in ["inv_theirs", "inv_done", "inv_nowhere"] {
        let refused = store.cancel_invocation(id, 9, Some("key_op"), &cancel_audit(id)).await;
        assert!(
            matches!(refused, Err(StoreError::NotFound(_))),
            "[{}] {id}: {refused:?}",
            db.backend
        );
    }
    assert_eq!(store.invocation("inv_theirs").await.unwrap().unwrap().status, "queued");
    assert!(store.invocation("inv_theirs").await.unwrap().unwrap().cancel_requested_at.is_none());
    // Its own: cancelled.
    let cancelled =
        store.cancel_invocation("inv_mine", 9, Some("key_op"), &cancel_audit("inv_mine")).await;
    assert!(matches!(cancelled, Ok(CancelOutcome::Cancelled(_))), "{cancelled:?}");
    // Its creator, or anyone without an owner (a management key), sees the finished one.
    let finished =
        store.cancel_invocation("inv_done", 9, Some("key_other"), &cancel_audit("x1")).await;
    assert!(matches!(finished, Ok(CancelOutcome::AlreadyFinished(_))), "{finished:?}");
    let finished = store.cancel_invocation("inv_done", 9, None, &cancel_audit("x2")).await;
    assert!(matches!(finished, Ok(CancelOutcome::AlreadyFinished(_))), "{finished:?}");

    let page = PageRequest { limit: 50, after: None };
    let listed = |owner: Option<&str>| {
        let store = store.clone();
        let page = page.clone();
        let filter =
            InvocationFilter { created_by: owner.map(str::to_string), ..Default::default() };
        async move {
            let items = store.list_invocations(&filter, &page).await.unwrap().items;
            items.into_iter().map(|r| r.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(Some("key_op")).await, ["inv_mine"], "[{}]", db.backend);
    assert_eq!(listed(Some("key_other")).await, ["inv_done", "inv_theirs"]);
    assert_eq!(listed(None).await.len(), 3);
});

per_backend!(listing_filters_and_pages, open, |db, store| {
    for n in 0..5 {
        let mut new = new_invocation(&format!("inv_{n}"));
        if n % 2 == 0 {
            new.tool = "other".into();
        }
        store.create_invocation(&new, &created(&new.id)).await.unwrap();
    }
    let filter = InvocationFilter { tool: Some("other".into()), ..Default::default() };
    let page =
        store.list_invocations(&filter, &PageRequest { limit: 2, after: None }).await.unwrap();
    assert_eq!(page.items.len(), 2, "[{}]", db.backend);
    assert!(page.has_more);
    let rest = store
        .list_invocations(&filter, &PageRequest { limit: 2, after: Some("inv_2".into()) })
        .await
        .unwrap();
    assert_eq!(rest.items.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), vec!["inv_4"]);
    assert!(!rest.has_more);
});

per_backend!(
    pauses_are_idempotent_audited_once_and_resume_refuses_what_is_not_paused,
    open,
    |db, store| {
        let pause = |workspace: Option<&str>, at: i64| PauseRecord {
            agent_id: "agt_1".into(),
            workspace: workspace.map(str::to_string),
            paused_at: at,
            paused_by: Some("key_op".into()),
            reason: Some("incident".into()),
        };
        let (first, created) =
            store.pause_exec(&pause(None, 5), &audit("aud_p1", "agent.pause_exec")).await.unwrap();
        assert!(created, "[{}]", db.backend);
        let (again, created) =
            store.pause_exec(&pause(None, 9), &audit("aud_p2", "agent.pause_exec")).await.unwrap();
        assert!(!created);
        assert_eq!(again, first, "the first pause stays in force");
        store
            .pause_exec(&pause(Some("prod"), 6), &audit("aud_p3", "agent.pause_exec"))
            .await
            .unwrap();
        let pauses = store.exec_pauses(Some("agt_1")).await.unwrap();
        assert_eq!(pauses.len(), 2);
        assert_eq!(pauses[0].workspace, None, "the agent-wide pause sorts first");

        store.resume_exec("agt_1", None, &audit("aud_r1", "agent.resume_exec")).await.unwrap();
        let refused = store.resume_exec("agt_1", None, &audit("aud_r2", "agent.resume_exec")).await;
        assert!(matches!(refused, Err(StoreError::NotPaused(_))), "[{}] {refused:?}", db.backend);
        assert_eq!(store.exec_pauses(None).await.unwrap().len(), 1);

        let page = PageRequest { limit: 50, after: None };
        let records = store.list_audit(&AuditFilter::default(), &page).await.unwrap();
        let ids: Vec<&str> = records.items.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            ids,
            vec!["aud_p1", "aud_p3", "aud_r1"],
            "[{}] no record for no change",
            db.backend
        );
    }
);
