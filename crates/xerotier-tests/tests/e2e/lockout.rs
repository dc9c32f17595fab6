//! The lockout guard (issue 10, item 5): revoking the API key a request is authenticated with,
//! or the last active key with the `management` scope, is refused (409 `self_revoke` /
//! `last_management_key`) unless the operator says `allow_lockout`, and audited either way.
//! Two management keys revoking each other at once cannot both succeed.

use serde_json::{Value, json};

use crate::harness::{Issued, Resp, Router, backends, xeroctl_with_key};

const KEYS: &str = "/v1/management/api-keys";

async fn revoke_with(router: &Router, key: &str, target: &str, body: Value) -> Resp {
    router.api().post(&format!("{KEYS}/{target}/revoke"), Some(key), &body).await
}

/// The one `api_key.revoke` record of the request that got `resp`, read with `key`.
async fn revoke_record(router: &Router, key: &str, resp: &Resp) -> Value {
    let path =
        format!("/v1/management/audit?request_id={}&action=api_key.revoke", resp.request_id());
    let page = router.api().get(&path, Some(key)).await;
    page.assert_status(200);
    let records = page.json()["data"].as_array().unwrap().clone();
    assert_eq!(records.len(), 1, "[{}] {records:?}", router.backend);
    records[0].clone()
}

/// The active keys, as the one of `keys` that still authenticates lists them.
async fn active_keys(router: &Router, keys: &[&str]) -> Vec<Value> {
    for key in keys {
        let resp = router.api().get(&format!("{KEYS}?limit=500"), Some(key)).await;
        if resp.status == 200 {
            return resp.json()["data"].as_array().unwrap().clone();
        }
    }
    panic!("[{}] none of the keys works any more: locked out", router.backend);
}

#[tokio::test]
async fn revoking_the_calling_key_is_refused_unless_lockout_is_allowed() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let admin = router.admin_key().to_string();
        let admin_id = router.admin_key_id().await;

        // Over HTTP: 409 self_revoke, with what to do next; audited; nothing changed.
        let refused = revoke_with(&router, &admin, &admin_id, json!({ "reason": "oops" })).await;
        refused.assert_error(409, "self_revoke");
        let message = refused.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains("another management key"), "{message}");
        assert!(message.contains("--allow-lockout"), "{message}");
        let record = revoke_record(&router, &admin, &refused).await;
        assert_eq!(record["outcome"], "failed", "{record}");
        assert_eq!(record["details"]["error"], "self_revoke", "{record}");
        assert_eq!(record["target_id"], admin_id.as_str(), "{record}");
        assert_eq!(record["actor_key_id"], admin_id.as_str(), "{record}");
        assert_eq!(router.show_key(&admin_id).await["status"], "active");

        // `allow_lockout` must be a boolean; a string is a bad request, not a yes.
        revoke_with(&router, &admin, &admin_id, json!({ "allow_lockout": "yes" }))
            .await
            .assert_error(400, "invalid_request");

        // With the CLI, even with --force (which only skips the confirmation): refused the
        // same way, with the hint.
        let ops = router.create_key("ops", &["management"]).await;
        let out =
            xeroctl_with_key(&router, &ops.value, &["keys", "revoke", "--name", "ops", "--force"])
                .failure();
        assert!(out.stderr.contains("self_revoke") && out.stderr.contains("409"), "{}", out.stderr);
        assert!(out.stderr.contains("--allow-lockout"), "{}", out.stderr);
        assert!(active_keys(&router, &[&admin]).await.iter().any(|k| k["id"] == ops.id.as_str()));

        // Another management key may revoke it (it is not the last one).
        let other = revoke_with(&router, &ops.value, &admin_id, json!({})).await;
        other.assert_status(200);
        assert_eq!(revoke_record(&router, &ops.value, &other).await["outcome"], "success");

        // Said explicitly: the key revokes itself, the record says so, and it is refused from
        // then on. (It was the last management key: the router is now locked, as asked.)
        let out = xeroctl_with_key(
            &router,
            &ops.value,
            &["keys", "revoke", "--name", "ops", "--allow-lockout", "--yes", "--reason", "leaving"],
        )
        .success();
        assert!(out.stdout.contains("Revoked"), "{}", out.stdout);
        router.api().get(KEYS, Some(&ops.value)).await.assert_error(401, "invalid_api_key");
    }
}

#[tokio::test]
async fn two_management_keys_revoking_each_other_at_once_never_both_succeed() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let admin_id = router.admin_key_id().await;
        // Only two management keys: the bootstrap key is revoked first.
        let mut a = router.create_key("mgmt-0", &["management"]).await;
        revoke_with(&router, &a.value, &admin_id, json!({})).await.assert_status(200);
        let mut guarded = 0;
        for round in 1..=10 {
            let body = json!({ "name": format!("mgmt-{round}"), "scopes": ["management"] });
            let created = router.api().post(KEYS, Some(&a.value), &body).await;
            created.assert_status(201);
            let b = Issued::from_json(&created.json());
            let (a_revokes_b, b_revokes_a) = tokio::join!(
                revoke_with(&router, &a.value, &b.id, json!({ "reason": "race" })),
                revoke_with(&router, &b.value, &a.id, json!({ "reason": "race" })),
            );
            let wins = [&a_revokes_b, &b_revokes_a].iter().filter(|r| r.status == 200).count();
            let survivor = if a_revokes_b.status == 200 { &a.value } else { &b.value };
            assert_eq!(
                wins,
                1,
                "[{}] round {round}: {} {} / {} {}",
                backend.name,
                a_revokes_b.status,
                a_revokes_b.text,
                b_revokes_a.status,
                b_revokes_a.text
            );
            for loser in [&a_revokes_b, &b_revokes_a].into_iter().filter(|r| r.status != 200) {
                // Refused by the guard, or already unable to authenticate: never a lockout.
                match loser.status {
                    409 => {
                        loser.assert_error(409, "last_management_key");
                        let message = loser.json()["error"]["message"].to_string();
                        assert!(message.contains("xeroctl keys create"), "{message}");
                        let record = revoke_record(&router, survivor, loser).await;
                        assert_eq!(record["details"]["error"], "last_management_key", "{record}");
                        guarded += 1;
                    }
                    _ => loser.assert_error(401, "invalid_api_key"),
                }
            }
            let active = active_keys(&router, &[&a.value, &b.value]).await;
            assert_eq!(active.len(), 1, "[{}] round {round}: {active:?}", backend.name);
            if active[0]["id"] == b.id.as_str() {
                a = b;
            }
        }
        eprintln!("[{}] {guarded} of 10 races were decided by the guard", backend.name);
    }
}
