//! Fleet operations on both backends: the counts follow every target's move (counted one by
//! one on the runner's steps, recounted where the old status was itself counted), a target is
//! claimed from pending only once, and a wave in flight is read with its rotations' states.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use xerotier_store::{OperationRecord, OperationTargetRecord, Store};
use xerotier_testkit::{TestDb, per_backend};

mod builders;
use builders::audit;

/// A store with agents `agt_1`..`agt_4` enrolled and operation `op_1` over them, one wave.
async fn store_with_operation(db: &TestDb) -> Store {
    let store = Store::connect(db.url()).await.unwrap();
    for i in 1..=4 {
        let jk = format!("jk_{i}");
        store.create_join_key(&builders::join_key(&jk), &audit(&format!("a_jk{i}"))).await.unwrap();
        let agent =
            builders::agent(&format!("agt_{i}"), &format!("xem-{i}"), &jk, &format!("curve-{i}"));
        store.enroll_agent(&agent, 1, &audit(&format!("a_en{i}"))).await.unwrap();
    }
    let targets: Vec<OperationTargetRecord> = (1..=4)
        .map(|i| OperationTargetRecord {
            operation_id: "op_1".into(),
            target_id: format!("agt_{i}"),
            target_name: None,
            position: i - 1,
            wave: 1,
            status: "pending".into(),
            result_reason: None,
            rotation_request_id: None,
            finished_at: None,
        })
        .collect();
    store.create_operation(&operation(), &targets, &audit("a_op")).await.unwrap();
    store
}

fn operation() -> OperationRecord {
    OperationRecord {
        id: "op_1".into(),
        kind: "curve_rotate".into(),
        selector: "{\"all\":true}".into(),
        reason: "suspected leak".into(),
        requested_by: None,
        requested_by_name: None,
        request_id: None,
        status: "running".into(),
        wave_size: 4,
        max_failures: 0,
        wave_count: 1,
        target_count: 4,
        succeeded_count: 0,
        failed_count: 0,
        skipped_count: 0,
        cancelled_count: 0,
        failure_baseline: 0,
        current_wave: 0,
        created_at: 1,
        updated_at: 1,
        finished_at: None,
        lease_owner: None,
        lease_expires_at: None,
    }
}

/// A target in flight as compared: id, rotation id, rotation status, failure reason.
type InFlightRow<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);

/// Moves `agt_{i}` as the runner does.
async fn set(store: &Store, i: u32, from: &[&str], to: &str, rotation: Option<&str>) -> bool {
    let finished = (to != "running").then_some(50);
    store
        .set_operation_target("op_1", &format!("agt_{i}"), from, to, None, rotation, finished, 50)
        .await
        .unwrap()
}

async fn counts(store: &Store) -> (i64, i64, i64, i64) {
    let op = store.operation("op_1").await.unwrap().unwrap();
    (op.succeeded_count, op.failed_count, op.skipped_count, op.cancelled_count)
}

per_backend!(
    counts_follow_each_target_and_a_start_claims_once,
    store_with_operation,
    |db, store| {
        let runner = ["pending", "running"];
        assert!(set(&store, 1, &runner, "running", None).await, "{}", db.backend);
        assert_eq!(counts(&store).await, (0, 0, 0, 0), "{}: running is not counted", db.backend);
        assert!(set(&store, 1, &["running"], "running", Some("rot_1")).await);
        assert!(set(&store, 1, &runner, "succeeded", None).await);
        assert!(set(&store, 2, &runner, "failed", None).await);
        assert!(set(&store, 3, &runner, "skipped", None).await);
        assert_eq!(counts(&store).await, (1, 1, 1, 0), "{}", db.backend);
        // A second report of an end, or a start of an ended target, changes nothing and counts
        // nothing twice.
        assert!(!set(&store, 1, &runner, "succeeded", None).await, "{}", db.backend);
        assert!(!set(&store, 2, &runner, "running", None).await, "{}", db.backend);
        assert_eq!(counts(&store).await, (1, 1, 1, 0), "{}", db.backend);
        // From a counted status (an operator's correction): recounted, the old count goes down.
        assert!(set(&store, 2, &["failed"], "succeeded", None).await);
        assert_eq!(counts(&store).await, (2, 0, 1, 0), "{}", db.backend);
        // The counts always equal a recount of the targets.
        let targets = store.operation_targets("op_1").await.unwrap();
        let n = |s: &str| targets.iter().filter(|t| t.status == s).count() as i64;
        assert_eq!(
            counts(&store).await,
            (n("succeeded"), n("failed"), n("skipped"), n("cancelled"))
        );
    }
);

per_backend!(concurrent_starts_claim_each_target_once, store_with_operation, |db, store| {
    let runner = ["pending", "running"];
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut won = 0;
            for i in 1..=4 {
                if set(&store, i, &["pending"], "running", None).await {
                    won += 1;
                }
            }
            won
        }));
    }
    let mut won = 0;
    for task in tasks {
        won += task.await.unwrap();
    }
    assert_eq!(won, 4, "{}: each target claimed from pending exactly once", db.backend);
    for i in 1..=4 {
        assert!(set(&store, i, &runner, "cancelled", None).await);
    }
    assert_eq!(counts(&store).await, (0, 0, 0, 4), "{}", db.backend);
});

per_backend!(a_wave_in_flight_is_read_with_its_rotations, store_with_operation, |db, store| {
    let runner = ["pending", "running"];
    for i in 1..=3 {
        assert!(set(&store, i, &runner, "running", None).await);
    }
    // agt_1: a rotation in flight; agt_2: a rotation that failed; agt_3: none recorded yet;
    // agt_4: not started (not in flight).
    let mut r1 = builders::rotation("rot_1", "agt_1");
    r1.deadline_at = 100_000;
    store.create_rotation(&r1, &builders::event("ev_1", "agt_1"), &audit("a_r1")).await.unwrap();
    let r2 = builders::rotation("rot_2", "agt_2");
    store.create_rotation(&r2, &builders::event("ev_2", "agt_2"), &audit("a_r2")).await.unwrap();
    store
        .fail_rotation(
            "rot_2",
            "acknowledgement timeout",
            60,
            &builders::event("ev_3", "agt_2"),
            &audit("a_r3"),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(set(&store, 1, &["running"], "running", Some("rot_1")).await);
    assert!(set(&store, 2, &["running"], "running", Some("rot_2")).await);
    let in_flight = store.operation_targets_in_flight("op_1").await.unwrap();
    let seen: Vec<InFlightRow> = in_flight
        .iter()
        .map(|t| {
            (
                t.target.target_id.as_str(),
                t.target.rotation_request_id.as_deref(),
                t.rotation_status.as_deref(),
                t.rotation_failure_reason.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("agt_1", Some("rot_1"), Some("pending"), None),
            ("agt_2", Some("rot_2"), Some("failed"), Some("acknowledgement timeout")),
            ("agt_3", None, None, None),
        ],
        "{}",
        db.backend
    );
    // A target pointing at a rotation that does not exist reads as no rotation status.
    assert!(set(&store, 3, &["running"], "running", Some("rot_missing")).await);
    let in_flight = store.operation_targets_in_flight("op_1").await.unwrap();
    let third = in_flight.iter().find(|t| t.target.target_id == "agt_3").unwrap();
    assert_eq!(third.rotation_status, None, "{}", db.backend);
    assert!(set(&store, 1, &runner, "succeeded", None).await);
    let ids: Vec<String> = store
        .operation_targets_in_flight("op_1")
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.target.target_id)
        .collect();
    assert_eq!(ids, vec!["agt_2", "agt_3"], "{}: an ended target is not in flight", db.backend);
});
