//! API-key rotation with evidence: every use of the previous value during its grace window is
//! counted (how many, when last, from where) and shown by `xeroctl keys show`; `keys end-grace`
//! ends the window now (in force on every replica when it returns) or once the old value has
//! been quiet for a while; an execution key can do neither nor see the evidence.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Router, backends, eventually, xeroctl, xeroctl_with_key};

const KEYS: &str = "/v1/management/api-keys";

/// Creates key `name` (execution) and rotates it with a one-hour grace: (id, old, new value).
async fn rotated_key(router: &Router, name: &str) -> (String, String, String) {
    let old = router.create_key(name, &["execution"]).await;
    let resp = router
        .post_json(&format!("{KEYS}/{}/rotate", old.id), &json!({ "grace_seconds": 3600 }))
        .await;
    resp.assert_status(200);
    let new = resp.json()["value"].as_str().expect("new value").to_string();
    (old.id, old.value, new)
}

fn show(router: &Router, name: &str) -> Value {
    xeroctl(router, &["keys", "show", "--name", name, "-o", "json"]).success().json()
}

async fn audit_of(router: &Router, action: &str, id: &str) -> Vec<Value> {
    router.audit(&format!("action={action}&target_id={id}")).await
}

#[tokio::test]
async fn grace_uses_are_counted_and_end_grace_now_refuses_the_old_value_at_once() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let (id, old, new) = rotated_key(&router, "evidence").await;
        const USES: u64 = 7;
        for _ in 0..USES {
            assert_eq!(
                router.exec_status(&old).await,
                200,
                "[{}] old value in grace",
                backend.name
            );
        }
        // Uses of the new value are not grace uses.
        assert_eq!(router.exec_status(&new).await, 200);
        let shown = eventually("the grace uses flushed", Duration::from_secs(10), || async {
            let key = show(&router, "evidence");
            (key["grace_uses"] == json!(USES)).then_some(key)
        })
        .await;
        assert!(shown["grace_last_used_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{shown}");
        assert_eq!(shown["grace_last_used_from"], json!("127.0.0.1"), "{shown}");
        assert!(shown["previous_value_valid_until"].is_string(), "{shown}");
        let table = xeroctl(&router, &["keys", "show", "--name", "evidence"]).success();
        assert_eq!(table.field("grace uses"), USES.to_string());
        assert_eq!(table.field("grace last used from"), "127.0.0.1");

        // A dry run changes nothing: the key and the audit log are as before.
        let audit_before = router.audit("").await;
        let plan = xeroctl(
            &router,
            &["keys", "end-grace", "--name", "evidence", "--dry-run", "-o", "json"],
        )
        .success()
        .json();
        assert_eq!(
            (plan["state"].as_str(), plan["dry_run"].as_bool()),
            (Some("ended"), Some(true))
        );
        assert_eq!(show(&router, "evidence"), shown, "[{}] dry run changed the key", backend.name);
        assert_eq!(router.audit("").await, audit_before, "[{}] dry run audited", backend.name);
        assert_eq!(
            router.exec_status(&old).await,
            200,
            "[{}] dry run ended the grace",
            backend.name
        );

        // Without a terminal and without --yes: refused, nothing sent.
        let unconfirmed = xeroctl(&router, &["keys", "end-grace", "--name", "evidence"]);
        assert_eq!(unconfirmed.status.code(), Some(7), "{}", unconfirmed.all());
        assert_eq!(router.exec_status(&old).await, 200);

        let ended = xeroctl(
            &router,
            &["keys", "end-grace", "--name", "evidence", "--yes", "--reason", "leak drill"],
        )
        .success();
        assert!(ended.stdout.contains("refused from now on"), "{}", ended.stdout);
        // The very next request with the old value is refused; the new one still works.
        assert_eq!(
            router.exec_status(&old).await,
            401,
            "[{}] old value after end-grace",
            backend.name
        );
        assert_eq!(
            router.exec_status(&new).await,
            200,
            "[{}] new value after end-grace",
            backend.name
        );
        let after = show(&router, "evidence");
        assert_eq!(after["previous_value_valid_until"], Value::Null);
        // The two checks above used the old value too; end-grace flushed them before ending.
        assert_eq!(after["grace_uses"], json!(USES + 2), "the evidence stays after the end");
        let records = audit_of(&router, "api_key.end_grace", &id).await;
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0]["target_type"], json!("api_key"));
        assert_eq!(records[0]["outcome"], json!("success"));
        assert_eq!(records[0]["reason"], json!("leak drill"));

        // Nothing left to end: a clear 409, exit 3 with the router's message.
        router
            .post_json(&format!("{KEYS}/{id}/end-grace"), &json!({}))
            .await
            .assert_error(409, "no_grace_window");
        let again = xeroctl(&router, &["keys", "end-grace", "--name", "evidence", "--yes"]);
        assert_eq!(again.status.code(), Some(3), "{}", again.all());
        assert!(again.stderr.contains("no open grace window"), "{}", again.stderr);

        // The next rotation starts a fresh count.
        router
            .post_json(&format!("{KEYS}/{id}/rotate"), &json!({ "grace_seconds": 60 }))
            .await
            .assert_status(200);
        let fresh = show(&router, "evidence");
        assert_eq!(
            (fresh["grace_uses"].clone(), fresh["grace_last_used_at"].clone()),
            (json!(0), Value::Null)
        );
    }
}

#[tokio::test]
async fn end_grace_when_quiet_waits_until_the_old_value_falls_silent() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let (id, old, new) = rotated_key(&router, "quiet").await;
        assert_eq!(router.exec_status(&old).await, 200);
        let waiting = xeroctl(
            &router,
            &["keys", "end-grace", "--name", "quiet", "--when-quiet", "2s", "-o", "json"],
        )
        .success()
        .json();
        assert_eq!(waiting["state"], json!("waiting"), "{waiting}");
        assert_eq!(waiting["key"]["grace_end_when_quiet_seconds"], json!(2));
        assert!(waiting["key"]["grace_end_requested_at"].is_string(), "{waiting}");
        let table = xeroctl(&router, &["keys", "show", "--name", "quiet"]).success();
        assert!(
            table.field("grace end").starts_with("when quiet for 2s (waiting since "),
            "{}",
            table.stdout
        );

        // In use: it keeps working, well past the quiet period.
        let in_use_until = Instant::now() + Duration::from_secs(4);
        let mut last_use = Instant::now();
        while Instant::now() < in_use_until {
            assert_eq!(
                router.exec_status(&old).await,
                200,
                "[{}] old value while in use",
                backend.name
            );
            last_use = Instant::now();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // Quiet now: it ends about two seconds after the last use.
        let ended_after = eventually("the quiet grace to end", Duration::from_secs(15), || async {
            let key = router.show_key(&id).await;
            key["previous_value_valid_until"].is_null().then(|| last_use.elapsed())
        })
        .await;
        eprintln!(
            "[{}] grace ended {ended_after:?} after the old value's last use (--when-quiet 2s)",
            backend.name
        );
        // Never before the quiet period (the router stamps the use a little before the test
        // sees its answer, hence 1.9 s); at most a flush, a check and a slow disk later.
        assert!(
            ended_after >= Duration::from_millis(1_900),
            "[{}] ended after {ended_after:?}",
            backend.name
        );
        assert!(
            ended_after <= Duration::from_secs(8),
            "[{}] ended after {ended_after:?}",
            backend.name
        );
        assert_eq!(router.exec_status(&old).await, 401);
        assert_eq!(router.exec_status(&new).await, 200);
        let records = audit_of(&router, "api_key.end_grace", &id).await;
        assert_eq!(records.len(), 1, "{records:?}");
        let details: Value = match &records[0]["details"] {
            Value::String(text) => serde_json::from_str(text).unwrap(),
            other => other.clone(),
        };
        assert_eq!(details["trigger"], json!("when_quiet"), "{details}");
        assert_eq!(audit_of(&router, "api_key.end_grace_scheduled", &id).await.len(), 1);

        // Already quiet (never used since the rotation, longer ago than asked): ends at once,
        // and --follow returns.
        let (_, old2, _) = rotated_key(&router, "quiet-already").await;
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let followed = xeroctl(
            &router,
            &["keys", "end-grace", "--name", "quiet-already", "--when-quiet", "1s", "--follow"],
        )
        .success();
        assert!(followed.stdout.contains("ended"), "{}", followed.stdout);
        assert_eq!(
            router.exec_status(&old2).await,
            401,
            "[{}] after --follow returned",
            backend.name
        );
    }
}

#[tokio::test]
async fn end_grace_refuses_callers_without_management_and_hostile_durations() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let (id, old, _) = rotated_key(&router, "target").await;
        let attacker = router.create_key("attacker", &["execution"]).await;
        // The attacker's side: no end-grace, no look at another key's evidence.
        let resp = router
            .api()
            .post(&format!("{KEYS}/{id}/end-grace"), Some(&attacker.value), &json!({}))
            .await;
        resp.assert_error(403, "scope_insufficient");
        router
            .api()
            .get(&format!("{KEYS}/{id}"), Some(&attacker.value))
            .await
            .assert_error(403, "scope_insufficient");
        let cli = xeroctl_with_key(&router, &attacker.value, &["keys", "end-grace", &id, "--yes"]);
        assert_eq!(cli.status.code(), Some(5), "{}", cli.all());
        assert_eq!(
            router.exec_status(&old).await,
            200,
            "[{}] the attacker ended the grace",
            backend.name
        );

        // Hostile durations: 400 from the API, a usage error (2) from the CLI.
        for hostile in [
            json!(-5),
            json!(1_000_000_000_000u64),
            json!("5x"),
            json!(0),
            json!(2_592_001),
            json!(1.5),
        ] {
            router
                .post_json(
                    &format!("{KEYS}/{id}/end-grace"),
                    &json!({ "when_quiet_seconds": hostile }),
                )
                .await
                .assert_status(400);
        }
        for hostile in ["5x", "-5s", "1000000000000s", "0s", "1h30m"] {
            let cli = xeroctl(&router, &["keys", "end-grace", &id, "--when-quiet", hostile]);
            assert_eq!(cli.status.code(), Some(2), "{hostile}: {}", cli.all());
        }
        router
            .post_json(&format!("{KEYS}/{id}/end-grace"), &json!({ "unknown": true }))
            .await
            .assert_status(400);
        assert_eq!(
            router.exec_status(&old).await,
            200,
            "[{}] a refused request ended the grace",
            backend.name
        );
        let shown = router.show_key(&id).await;
        assert!(shown["grace_end_when_quiet_seconds"].is_null(), "{shown}");

        // A key never rotated has no grace window.
        router
            .post_json(&format!("{KEYS}/{}/end-grace", attacker.id), &json!({ "dry_run": true }))
            .await
            .assert_error(409, "no_grace_window");
    }
}

/// Two replicas on one PostgreSQL: uses of the old value through each add up, and an end made
/// through one is in force on the other when it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_uses_add_up_across_replicas_and_end_grace_holds_on_every_replica() {
    let Some(backend) = backends().await.into_iter().find(|b| !b.is_sqlite()) else { return };
    let a = Router::start(&backend).await;
    let b = a.replica().await;
    let (id, old, new) = rotated_key(&a, "replicated").await;
    for _ in 0..3 {
        assert_eq!(a.exec_status(&old).await, 200);
    }
    for _ in 0..4 {
        // B caches the key: the end must reach its cache.
        assert_eq!(b.exec_status(&old).await, 200);
    }
    eventually("both replicas' uses", Duration::from_secs(10), || async {
        (a.show_key(&id).await["grace_uses"] == json!(7)).then_some(())
    })
    .await;
    a.post_json(&format!("{KEYS}/{id}/end-grace"), &json!({})).await.assert_status(200);
    assert_eq!(b.exec_status(&old).await, 401, "replica B accepted the old value after end-grace");
    assert_eq!(a.exec_status(&old).await, 401);
    assert_eq!(b.exec_status(&new).await, 200);
}
