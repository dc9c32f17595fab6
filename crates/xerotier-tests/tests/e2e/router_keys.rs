//! The router's own join-key signing key rotated in phases (SPEC §9), end to end through
//! `xeroctl router rotate-keys`: join keys minted before keep enrolling until their TTL, new
//! ones carry the new kid, the old key is dropped once none of its join keys can enroll, and
//! a token under a dropped or forged kid is refused. Crashes in each phase, rollback, order
//! violations, dry runs, scopes, and two replicas on PostgreSQL.

use std::time::Duration;

use serde_json::{Value, json};
use xerotier_core::OsEntropy;
use xerotier_credentials::SigningKeyPair;

use crate::fleet_harness::{eddsa_token, enroll, jwt_parts};
use crate::harness::{Router, backends, eventually, xeroctl, xeroctl_with_key};

const KEYS: &str = "/v1/management/router/keys";
const SETTLE: Duration = Duration::from_secs(20);

/// One kind (`mesh`, `join_signing`) as `GET …/router/keys` shows it.
pub(crate) async fn key_kind(router: &Router, kind: &str) -> Value {
    let view = router.get_json(KEYS).await;
    view["kinds"]
        .as_array()
        .expect("kinds")
        .iter()
        .find(|k| k["kind"] == kind)
        .cloned()
        .unwrap_or_else(|| panic!("a {kind} kind in {view}"))
}

/// The join-signing kind as `GET …/router/keys` shows it.
async fn join_signing(router: &Router) -> Value {
    key_kind(router, "join_signing").await
}

/// The kid of the key in `state` (`current`, `next`, `verify_only`), if any.
pub(crate) fn kid_in(kind: &Value, state: &str) -> Option<String> {
    kind["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["state"] == state)
        .map(|k| k["kid"].as_str().expect("kid").to_string())
}

/// The `kid` in a join token's header.
fn token_kid(token: &str) -> String {
    jwt_parts(token).0["kid"].as_str().expect("a kid header").to_string()
}

fn rotate(router: &Router, phase: &str) -> crate::harness::CliOutput {
    xeroctl(router, &["router", "rotate-keys", "--kind", "join-signing", "--phase", phase, "--yes"])
}

/// `xeroctl router rotate-keys --kind join-signing --auto`, confirmed, within 30 s.
fn auto_rotate(router: &Router) -> crate::harness::CliOutput {
    let args = ["--kind", "join-signing", "--auto", "--yes", "--timeout", "30s"];
    xeroctl(router, &[&["router", "rotate-keys"][..], &args[..]].concat())
}

async fn assert_enrolls(router: &Router, token: &str, name: &str) {
    let (resp, _) = enroll(router, token, name).await;
    resp.assert_status(200);
}

#[tokio::test]
async fn join_signing_key_rotates_step_by_step_and_the_old_key_is_dropped_after_its_join_keys() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let before = join_signing(&router).await;
        assert_eq!(before["phase"], "standby", "{before}");
        let old_kid = kid_in(&before, "current").expect("a current join signing key");
        assert!(old_kid.starts_with("jks-") && old_kid.len() == 20, "{old_kid}");
        let early = router.mint_join_key("early").await;
        assert_eq!(token_kid(&early.token), old_kid, "join keys carry the signing kid");
        let short = router
            .mint_join_key_with(json!({ "name": "short", "ttl_seconds": 3, "workspaces": [] }))
            .await;
        let victim = router.mint_join_key("victim").await;

        // Order violations are refused (409, exit 3) and name the allowed next phases.
        let wrong = rotate(&router, "update_servers").failure();
        assert_eq!(wrong.status.code(), Some(3), "{}", wrong.stderr);
        assert!(wrong.stderr.contains("init"), "names the allowed phase: {}", wrong.stderr);
        // Without --yes and without a terminal, init is not sent (exit 7).
        let unconfirmed = xeroctl(
            &router,
            &["router", "rotate-keys", "--kind", "join-signing", "--phase", "init"],
        )
        .failure();
        assert_eq!(unconfirmed.status.code(), Some(7), "{}", unconfirmed.stderr);
        // --dry-run says what would happen and changes nothing.
        let dry = xeroctl(
            &router,
            &["--dry-run", "router", "rotate-keys", "--kind", "join-signing", "--phase", "init"],
        )
        .success();
        assert!(dry.stderr.contains("would move"), "{}", dry.stderr);
        assert_eq!(join_signing(&router).await["keys"], before["keys"], "dry run wrote nothing");
        assert!(router.audit("action=router_key.init").await.is_empty());
        // A key without the management scope cannot rotate.
        let exec_key = router.create_key("exec-only", &["execution"]).await;
        let denied = xeroctl_with_key(
            &router,
            &exec_key.value,
            &["router", "rotate-keys", "--kind", "join-signing", "--phase", "init", "--yes"],
        )
        .failure();
        assert_eq!(denied.status.code(), Some(5), "{}", denied.stderr);
        router
            .api()
            .post(
                &format!("{KEYS}/join_signing/rotation"),
                Some(&exec_key.value),
                &json!({ "phase": "init" }),
            )
            .await
            .assert_status(403);
        // Unknown fields are refused.
        router
            .post_json(
                &format!("{KEYS}/join_signing/rotation"),
                &json!({ "phase": "init", "x": 1 }),
            )
            .await
            .assert_status(400);

        rotate(&router, "init").success();
        let init = join_signing(&router).await;
        assert_eq!(init["phase"], "init");
        let new_kid = kid_in(&init, "next").expect("a next key");
        assert_ne!(new_kid, old_kid);
        assert_eq!(token_kid(&router.mint_join_key("during-init").await.token), old_kid);
        rotate(&router, "update_clients").success();
        assert_eq!(token_kid(&router.mint_join_key("during-clients").await.token), old_kid);
        rotate(&router, "update_servers").success();
        let fresh = router.mint_join_key("fresh").await;
        assert_eq!(token_kid(&fresh.token), new_kid, "new join keys carry the new kid");
        rotate(&router, "standby").success();
        let done = join_signing(&router).await;
        assert_eq!(done["phase"], "standby");
        assert_eq!(kid_in(&done, "current").as_deref(), Some(new_kid.as_str()));
        assert_eq!(kid_in(&done, "verify_only").as_deref(), Some(old_kid.as_str()), "{done}");

        // A join key minted before the rotation still enrolls; so does one minted after.
        assert_enrolls(&router, &early.token, "xem-early").await;
        assert_enrolls(&router, &fresh.token, "xem-fresh").await;
        // A token signed by a fresh key under the old (known) kid is refused.
        let (_, claims) = jwt_parts(&victim.token);
        let forger = SigningKeyPair::generate(&OsEntropy);
        let forged =
            eddsa_token(&json!({ "alg": "EdDSA", "typ": "JWT", "kid": old_kid }), &claims, &forger);
        enroll(&router, &forged, "xem-forged").await.0.assert_error(401, "join_key_invalid");

        // Once the old key's last usable join key is gone (one expired, one revoked, the
        // others used), the sweep drops it, and a token under its kid is refused as unsigned.
        router.revoke_join_key(&victim.id).await.assert_status(200);
        for leftover in ["during-init", "during-clients"] {
            let key = router
                .all_join_keys()
                .await
                .into_iter()
                .find(|k| k["name"] == leftover)
                .expect("the leftover key");
            router.revoke_join_key(key["id"].as_str().expect("id")).await.assert_status(200);
        }
        let _ = short;
        eventually(&format!("[{}] the old key dropped", backend.name), SETTLE, || async {
            let kind = join_signing(&router).await;
            kid_in(&kind, "verify_only").is_none().then_some(())
        })
        .await;
        assert_eq!(router.audit("action=router_key.dropped").await.len(), 1);
        let refused = enroll(&router, &victim.token, "xem-victim").await.0;
        refused.assert_error(401, "join_key_invalid");
        assert!(refused.text.contains("not signed by this router"), "{}", refused.text);
        for action in ["init", "update_clients", "update_servers", "complete"] {
            let records = router.audit(&format!("action=router_key.{action}")).await;
            assert_eq!(records.len(), 1, "[{}] one {action} record", backend.name);
            let text = records[0].to_string();
            assert!(!text.contains("secret"), "fingerprints only: {text}");
        }

        // Rollback from update_clients: the current key keeps signing.
        rotate(&router, "init").success();
        rotate(&router, "update_clients").success();
        let withdrawn = kid_in(&join_signing(&router).await, "next").expect("next");
        rotate(&router, "rollback").success();
        let after = join_signing(&router).await;
        assert_eq!(after["phase"], "standby");
        assert_eq!(after["last_outcome"], "rolled_back");
        assert_eq!(kid_in(&after, "current").as_deref(), Some(new_kid.as_str()));
        assert!(after.to_string().find(&withdrawn).is_none(), "withdrawn key retired: {after}");
        assert_eq!(token_kid(&router.mint_join_key("after-rollback").await.token), new_kid);
        // Rollback from standby is refused.
        assert_eq!(rotate(&router, "rollback").failure().status.code(), Some(3));

        // `router keys` lists them; the posture report shows the key in force.
        let listed = xeroctl(&router, &["router", "keys"]).success();
        assert!(listed.stdout.contains(&new_kid), "{}", listed.stdout);
        let report = router.get_json("/v1/management/credentials?kind=router_key").await;
        let rows = report["credentials"].as_array().expect("rows");
        assert!(rows.iter().any(|r| r["id"] == new_kid.as_str()), "{report}");
    }
}

#[tokio::test]
async fn join_signing_rotation_survives_a_crash_in_every_phase_and_auto_completes_it() {
    for backend in backends().await {
        let mut router = Router::start(&backend).await;
        let old_kid = kid_in(&join_signing(&router).await, "current").expect("current");
        for (phase, shown) in [
            ("init", "init"),
            ("update_clients", "update_clients"),
            ("update_servers", "update_servers"),
        ] {
            rotate(&router, phase).success();
            router.kill();
            router.restart().await;
            let kind = join_signing(&router).await;
            assert_eq!(kind["phase"], shown, "[{}] the phase survives kill -9", backend.name);
            let key = router.mint_join_key(&format!("after-crash-{phase}")).await;
            let expected = if phase == "update_servers" {
                kid_in(&kind, "next").expect("next")
            } else {
                old_kid.clone()
            };
            assert_eq!(token_kid(&key.token), expected, "[{}] {phase}", backend.name);
            assert_enrolls(&router, &key.token, &format!("xem-{phase}")).await;
        }
        // --auto resumes where the router is and completes the rotation.
        let auto = auto_rotate(&router).success();
        assert!(auto.stderr.contains("update_servers -> standby"), "{}", auto.stderr);
        let kind = join_signing(&router).await;
        assert_eq!(kind["phase"], "standby");
        assert_ne!(kid_in(&kind, "current").as_deref(), Some(old_kid.as_str()));
        // And a whole rotation with --auto from standby.
        let current = kid_in(&kind, "current").expect("current");
        auto_rotate(&router).success();
        let kind = join_signing(&router).await;
        let newest = kid_in(&kind, "current").expect("current");
        assert_ne!(newest, current);
        assert_eq!(token_kid(&router.mint_join_key("after-auto").await.token), newest);
    }
}

#[tokio::test]
async fn a_join_signing_phase_changed_through_one_replica_is_in_force_on_another() {
    for backend in backends().await {
        if backend.is_sqlite() {
            continue;
        }
        let a = Router::start(&backend).await;
        let b = a.replica().await;
        let old_kid = kid_in(&join_signing(&b).await, "current").expect("current");
        for phase in ["init", "update_clients", "update_servers"] {
            rotate(&a, phase).success();
        }
        let new_kid = kid_in(&join_signing(&b).await, "next").expect("next");
        assert_ne!(new_kid, old_kid);
        // The change returned once every replica applied it: B signs with the new key now.
        let on_b = b.mint_join_key("minted-on-b").await;
        assert_eq!(token_kid(&on_b.token), new_kid);
        assert_enrolls(&a, &on_b.token, "xem-b-to-a").await;
        rotate(&a, "standby").success();
        assert_eq!(join_signing(&b).await["phase"], "standby");
    }
}
