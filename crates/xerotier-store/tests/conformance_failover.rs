//! Failover: which replica holds each agent, and what the sweep releases when that replica
//! dies. On both backends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::BTreeSet;

use xerotier_store::{AgentRecord, Heartbeat, JoinKeyRecord, NewInvocation, NewReplica, Store};
use xerotier_testkit::{TestDb, per_backend};

mod builders;
use builders::audit;

async fn open(db: &TestDb) -> Store {
    Store::connect(db.url()).await.unwrap()
}

/// An enrolled agent `agt_<n>`, renewing its lease every second.
async fn enroll(store: &Store, n: u32) -> String {
    enroll_renewing_every(store, n, 1_000).await
}

async fn enroll_renewing_every(store: &Store, n: u32, lease_interval_ms: i64) -> String {
    let id = format!("agt_{n}");
    let jk = format!("jk_{n}");
    let key = JoinKeyRecord {
        id: jk.clone(),
        name: format!("xem-{n}"),
        region: None,
        role: "execution".into(),
        router_addr: "tcp://router:5555".into(),
        created_at: 0,
        created_by: None,
        expires_at: i64::MAX / 2,
        consumed_at: None,
        consumed_by_agent: None,
        revoked_at: None,
        revoked_by: None,
        revoked_reason: None,
        grant_workspaces: None,
        require_approval: false,
        signing_kid: None,
    };
    store.create_join_key(&key, &audit(&format!("aud_jk_{n}"))).await.unwrap();
    let agent = AgentRecord {
        id: id.clone(),
        name: format!("xem-{n}"),
        role: "execution".into(),
        region: None,
        join_key_id: jk,
        enrolled_at: 10,
        curve_public_key: format!("curve-{n}"),
        signing_public_key: "ab".repeat(32),
        manifest: "{}".into(),
        manifest_hash: "h".into(),
        manifest_version: 1,
        lease_interval_ms,
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
    };
    store.enroll_agent(&agent, 10, &audit(&format!("aud_enroll_{n}"))).await.unwrap();
    id
}

fn beat(agent_id: &str, at: i64, replica: &str) -> Heartbeat {
    Heartbeat {
        agent_id: agent_id.into(),
        at,
        manifest_hash: "h".into(),
        manifest_version: 1,
        replica_id: replica.into(),
    }
}

/// A replica whose lease ends `lease_ms` from now by the database's clock (negative: ended).
async fn replica(store: &Store, id: &str, lease_ms: i64) {
    let new = NewReplica {
        id: id.into(),
        https_url: format!("https://{id}:8443"),
        mesh_addr: format!("tcp://{id}:5555"),
        started_at: 1,
    };
    store.register_replica(&new, 0, lease_ms).await.unwrap();
}

/// An invocation claimed by `agent`, started when `running`.
async fn invocation(store: &Store, id: &str, agent: &str, running: bool) {
    let new = NewInvocation {
        id: id.into(),
        tool: "noop".into(),
        workspace: "prod".into(),
        args: "{}".into(),
        created_at: 20,
        created_by: None,
        claimed_by: Some(agent.into()),
    };
    store.create_invocation(&new, &audit(&format!("aud_{id}"))).await.unwrap();
    if running {
        store.start_invocation(id, agent, 21, 1).await.unwrap().unwrap();
    }
}

per_backend!(lease_renewals_say_which_replica_holds_the_agent, open, |db, store| {
    let agent = enroll(&store, 1).await;
    store.record_heartbeats(&[beat(&agent, 100, "rtr_a")]).await.unwrap();
    let record = store.agent(&agent).await.unwrap().unwrap();
    assert_eq!(record.replica_id.as_deref(), Some("rtr_a"), "[{}]", db.backend);
    assert_eq!(record.replica_since, Some(100));
    // Later renewals through the same replica keep the time it arrived there.
    store.record_heartbeats(&[beat(&agent, 200, "rtr_a")]).await.unwrap();
    assert_eq!(store.agent(&agent).await.unwrap().unwrap().replica_since, Some(100));
    // It moved: the newer renewal names the new replica.
    store.record_heartbeats(&[beat(&agent, 300, "rtr_b")]).await.unwrap();
    let record = store.agent(&agent).await.unwrap().unwrap();
    assert_eq!((record.replica_id.as_deref(), record.replica_since), (Some("rtr_b"), Some(300)));
    // A stale renewal flushed late by the old replica does not move it back.
    store.record_heartbeats(&[beat(&agent, 250, "rtr_a")]).await.unwrap();
    assert_eq!(store.agent(&agent).await.unwrap().unwrap().replica_id.as_deref(), Some("rtr_b"));
});

per_backend!(
    a_dead_replicas_agents_have_unstarted_work_requeued_and_running_work_failed_once,
    open,
    |db, store| {
        replica(&store, "rtr_dead", -60_000).await;
        replica(&store, "rtr_live", 60_000).await;
        let stranded = enroll(&store, 1).await;
        let healthy = enroll(&store, 2).await;
        let moved = enroll(&store, 3).await;
        store.record_heartbeats(&[beat(&stranded, 100, "rtr_dead")]).await.unwrap();
        store.record_heartbeats(&[beat(&healthy, 100, "rtr_live")]).await.unwrap();
        // `moved` was on the dead replica and renewed its lease through the live one since.
        store.record_heartbeats(&[beat(&moved, 100, "rtr_dead")]).await.unwrap();
        store.record_heartbeats(&[beat(&moved, 200, "rtr_live")]).await.unwrap();
        invocation(&store, "inv_claimed", &stranded, false).await;
        invocation(&store, "inv_running", &stranded, true).await;
        invocation(&store, "inv_healthy", &healthy, true).await;
        invocation(&store, "inv_moved", &moved, true).await;

        let released = store.release_work_of_dead_replicas(10_000, 500).await.unwrap();
        assert_eq!(released.agents, std::slice::from_ref(&stranded), "[{}]", db.backend);
        assert_eq!(released.requeued, ["inv_claimed"]);
        assert_eq!(released.failed.len(), 1);
        assert_eq!(released.failed[0].id, "inv_running");

        let claimed = store.invocation("inv_claimed").await.unwrap().unwrap();
        assert_eq!((claimed.status.as_str(), claimed.agent_id), ("queued", None));
        assert_eq!(claimed.dispatched_at, None);
        assert!(store.unclaimed_invocations(10).await.unwrap().iter().any(|i| i.id == claimed.id));
        let running = store.invocation("inv_running").await.unwrap().unwrap();
        assert_eq!(running.status, "failed");
        assert_eq!(running.finished_at, Some(500));
        assert!(running.error.as_deref().unwrap_or("").contains("rtr_dead"), "{running:?}");
        for untouched in ["inv_healthy", "inv_moved"] {
            let record = store.invocation(untouched).await.unwrap().unwrap();
            assert_eq!(record.status, "running", "{untouched}");
        }
        assert_eq!(store.agent(&stranded).await.unwrap().unwrap().replica_id, None);
        assert_eq!(
            store.agent(&moved).await.unwrap().unwrap().replica_id.as_deref(),
            Some("rtr_live")
        );

        // Idempotent: the next sweep finds nothing, and nothing changes.
        assert!(store.release_work_of_dead_replicas(10_000, 600).await.unwrap().is_empty());
        let running = store.invocation("inv_running").await.unwrap().unwrap();
        assert_eq!(running.finished_at, Some(500));
    }
);

per_backend!(a_replica_dead_for_less_than_the_grace_keeps_its_agents, open, |db, store| {
    // Its lease ended 1 s ago; agents get 60 s to renew through another replica.
    replica(&store, "rtr_recent", -1_000).await;
    let agent = enroll(&store, 1).await;
    store.record_heartbeats(&[beat(&agent, 100, "rtr_recent")]).await.unwrap();
    invocation(&store, "inv_1", &agent, false).await;
    let released = store.release_work_of_dead_replicas(60_000, 500).await.unwrap();
    assert!(released.is_empty(), "[{}] {released:?}", db.backend);
    let record = store.invocation("inv_1").await.unwrap().unwrap();
    assert_eq!(record.agent_id.as_deref(), Some(agent.as_str()));
    // An agent naming a replica that never registered is not judged either (nothing is
    // known about it).
    let other = enroll(&store, 2).await;
    store.record_heartbeats(&[beat(&other, 100, "rtr_unknown")]).await.unwrap();
    invocation(&store, "inv_2", &other, true).await;
    let released = store.release_work_of_dead_replicas(0, 500).await.unwrap();
    assert!(!released.agents.contains(&other), "{released:?}");
    // Nor is an agent before four of its lease intervals (1 s each here) have passed since
    // its replica's lease ended (1 s ago): it may be failing over right now.
    assert!(!released.agents.contains(&agent), "{released:?}");
    assert_eq!(store.invocation("inv_2").await.unwrap().unwrap().status, "running");
    // An agent renewing every 30 s fails over only after 90 s of silence: a replica dead for
    // 60 s (beyond a 10 s grace) does not release it yet.
    replica(&store, "rtr_old", -60_000).await;
    let slow = enroll_renewing_every(&store, 3, 30_000).await;
    store.record_heartbeats(&[beat(&slow, 100, "rtr_old")]).await.unwrap();
    invocation(&store, "inv_3", &slow, false).await;
    let released = store.release_work_of_dead_replicas(10_000, 500).await.unwrap();
    assert!(!released.agents.contains(&slow), "{released:?}");
    assert_eq!(store.invocation("inv_3").await.unwrap().unwrap().agent_id, Some(slow));
});

per_backend!(concurrent_sweeps_release_each_invocation_once, open, |db, store| {
    replica(&store, "rtr_dead", -60_000).await;
    let mut expected_requeued = BTreeSet::new();
    let mut expected_failed = BTreeSet::new();
    for n in 0..4 {
        let agent = enroll(&store, n).await;
        store.record_heartbeats(&[beat(&agent, 100, "rtr_dead")]).await.unwrap();
        for k in 0..3 {
            let id = format!("inv_{n}_{k}");
            let running = k % 2 == 0;
            invocation(&store, &id, &agent, running).await;
            if running {
                expected_failed.insert(id);
            } else {
                expected_requeued.insert(id);
            }
        }
    }
    // Four sweepers at once, each its own connection pool: as several replicas would.
    let sweepers: Vec<Store> = {
        let mut stores = Vec::new();
        for _ in 0..4 {
            stores.push(open(&db).await);
        }
        stores
    };
    let results = futures::future::join_all(
        sweepers.iter().map(|s| s.release_work_of_dead_replicas(10_000, 500)),
    )
    .await;
    let mut requeued = Vec::new();
    let mut failed = Vec::new();
    for result in results {
        let released = result.unwrap();
        requeued.extend(released.requeued);
        failed.extend(released.failed.into_iter().map(|r| r.id));
    }
    requeued.sort();
    failed.sort();
    assert_eq!(requeued, expected_requeued.into_iter().collect::<Vec<_>>(), "[{}]", db.backend);
    assert_eq!(failed, expected_failed.into_iter().collect::<Vec<_>>());
});
