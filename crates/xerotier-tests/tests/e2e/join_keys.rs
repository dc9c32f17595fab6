//! Join keys from the operator's side: what `xeroctl agents join-keys` refuses, and the router's
//! TTL cap. (The seed's four commands are in `seed.rs`.)

use serde_json::json;

use crate::harness::{Router, RouterOptions, backends, xeroctl};

/// The join keys (every state) and the count of successful creates: what "nothing was
/// created" compares.
async fn snapshot(router: &Router) -> (Vec<serde_json::Value>, usize) {
    let keys = router.all_join_keys().await;
    let creates = router.audit("action=join_key.create&outcome=success").await.len();
    (keys, creates)
}

#[tokio::test]
async fn join_key_commands_refuse_what_they_must() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let kept = router.mint_join_key("kept").await;
        let before = snapshot(&router).await;

        // Only inference or execution: a clear error, nothing created.
        let admin = xeroctl(
            &router,
            &["agents", "join-keys", "--create", "--name", "bad-role", "--agent-role", "admin"],
        )
        .failure();
        assert!(
            admin.stderr.contains("admin")
                && admin.stderr.contains("inference")
                && admin.stderr.contains("execution"),
            "the error names the bad role and the valid ones: {}",
            admin.stderr
        );
        assert!(admin.stdout.is_empty(), "{}", admin.stdout);
        // The router refuses it too, for clients other than xeroctl.
        let resp =
            router.post_join_key(&json!({ "name": "bad-role", "agent_role": "admin" })).await;
        resp.assert_error(400, "invalid_request");
        assert_eq!(resp.json()["error"]["param"], "agent_role", "{}", resp.text);
        // Both valid roles are accepted, and the default is the router's (execution).
        for role in ["inference", "execution"] {
            let name = format!("role-{role}");
            let out = xeroctl(
                &router,
                &["agents", "join-keys", "--create", "--name", &name, "--agent-role", role],
            )
            .success();
            assert_eq!(out.field("role"), role);
            let id = out.field("join_key_id");
            router.revoke_join_key(&id).await.assert_status(200);
        }
        let after_roles = snapshot(&router).await;
        assert_eq!(after_roles.1, before.1 + 2, "only the two valid roles created keys");

        // One action flag per call.
        for args in [
            &["agents", "join-keys", "--create", "--revoke", "--name", "two-actions"][..],
            &["agents", "join-keys", kept.id.as_str(), "--revoke", "--include-terminal", "--force"],
            &["agents", "join-keys", "--create", "--include-terminal", "--name", "two-actions"],
        ] {
            let out = xeroctl(&router, args).failure();
            assert!(
                out.stderr.contains("cannot be used with"),
                "{args:?}: a clear usage error: {}",
                out.stderr
            );
        }

        // Without --force and without a terminal to ask on, --revoke refuses.
        let out = xeroctl(&router, &["agents", "join-keys", &kept.id, "--revoke"]).failure();
        assert!(out.stderr.contains("--force"), "{}", out.stderr);
        assert_eq!(router.join_key(&kept.id).await["state"], "active", "nothing was revoked");

        // The router's maximum TTL (86400 s by default) is enforced.
        let out = xeroctl(
            &router,
            &["agents", "join-keys", "--create", "--name", "too-long", "--ttl-seconds", "86401"],
        )
        .failure();
        assert!(out.stderr.contains("86400"), "the error names the maximum: {}", out.stderr);
        for ttl in [json!(0), json!(86_401), json!(u64::MAX)] {
            let resp =
                router.post_join_key(&json!({ "name": "bad-ttl", "ttl_seconds": ttl })).await;
            resp.assert_error(400, "invalid_request");
            assert_eq!(resp.json()["error"]["param"], "ttl_seconds", "{}", resp.text);
        }
        assert_eq!(snapshot(&router).await, after_roles, "[{}] nothing created", backend.name);
        let out = xeroctl(
            &router,
            &["agents", "join-keys", "--create", "--name", "longest", "--ttl-seconds", "86400"],
        )
        .success();
        assert!(out.field("join_key_id").starts_with("jk_"));
        assert_eq!(router.join_key(&kept.id).await["state"], "active");
    }
}

#[tokio::test]
async fn the_maximum_ttl_is_configurable() {
    for backend in backends().await {
        let options = RouterOptions {
            extra_args: vec![
                "--join-key-max-ttl-seconds".into(),
                "60".into(),
                "--join-key-default-ttl-seconds".into(),
                "30".into(),
            ],
            ..RouterOptions::default()
        };
        let router = Router::start_with(&backend, options).await;
        let out = xeroctl(
            &router,
            &["agents", "join-keys", "--create", "--name", "over", "--ttl-seconds", "61"],
        )
        .failure();
        assert!(out.stderr.contains("60"), "{}", out.stderr);
        assert!(router.all_join_keys().await.is_empty());
        let at_max =
            router.mint_join_key_with(json!({ "name": "at-max", "ttl_seconds": 60 })).await;
        let default = router.mint_join_key("default-ttl").await;
        let lifetime = |view: &serde_json::Value| {
            let at = |f: &str| humantime::parse_rfc3339(view[f].as_str().unwrap()).unwrap();
            at("expires_at").duration_since(at("created_at")).unwrap().as_secs()
        };
        assert_eq!(lifetime(&at_max.view), 60);
        assert_eq!(lifetime(&default.view), 30, "the configured default applies");
    }
}
