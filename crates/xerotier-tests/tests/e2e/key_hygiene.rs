//! Key hygiene (SPEC 6.1): a CURVE key any agent ever used never enrolls again, and weak keys
//! (low-order X25519 points, small-order Ed25519 points) are refused at enrollment. Each test
//! plays the attacker next to the honest path.

use std::time::Duration;

use serde_json::{Value, json};
use xerotier_credentials::curve_public_z85;

use crate::fleet_harness::{AGENT_DEADLINE, AgentKeys, Xem, enroll_body};
use crate::harness::{Router, backends, eventually};

const SETTLE: Duration = Duration::from_secs(30);

/// The agent's events, oldest first.
async fn events(router: &Router, agent_id: &str) -> Vec<Value> {
    router.collect_pages(&format!("/v1/management/agents/{agent_id}/events")).await
}

#[tokio::test]
async fn a_rotated_away_key_never_enrolls_again() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let key = router.mint_join_key("hygiene").await;
        let mut xem = Xem::enroll(&router, "xem-rotated", &key.token);
        let agent_id = xem.wait_enrolled().await;
        router.wait_agent_status(&agent_id, "active", AGENT_DEADLINE).await;
        let old = xem.curve_keys(&xem.curve_key_path());
        let old_z85 = old.public_z85();

        // The operator rotates "for suspected leak"; the agent moves to its new key and the old
        // one is retired.
        let path = format!("/v1/management/agents/{agent_id}/curve-rotate");
        let resp = router.post_json(&path, &json!({ "reason": "suspected leak" })).await;
        resp.assert_status(202);
        let request_id = resp.json()["request_id"].as_str().unwrap().to_string();
        eventually("the old key to be retired", SETTLE, || async {
            events(&router, &agent_id)
                .await
                .into_iter()
                .any(|e| {
                    e["type"] == "rotation_completed" && e["request_id"] == request_id.as_str()
                })
                .then_some(())
        })
        .await;
        let agent = router.agent(&agent_id).await;
        assert_ne!(
            agent["curve_public_key"],
            old_z85.as_str(),
            "[{}] rotated: {agent}",
            backend.name
        );

        // The attacker who leaked the old key enrolls "a new agent" with it: refused, and the
        // join key is not consumed by the attempt.
        let attacker_key = router.mint_join_key("attacker").await;
        let mut keys = AgentKeys::fresh();
        keys.curve = old;
        let resp =
            router.post_enroll(&enroll_body(&attacker_key.token, "xem-impostor", &keys)).await;
        resp.assert_error(409, "curve_key_taken");
        assert_eq!(router.join_key(&attacker_key.id).await["state"], "active");
        // The current key is refused too (the pre-existing rule), under any name.
        let mut current = AgentKeys::fresh();
        current.curve = xem.curve_keys(&xem.curve_key_path());
        let resp =
            router.post_enroll(&enroll_body(&attacker_key.token, "xem-clone", &current)).await;
        resp.assert_error(409, "curve_key_taken");
        // The refusals are audited on the join key.
        let denied = router
            .audit(&format!("action=agent.enroll&outcome=denied&target_id={}", attacker_key.id))
            .await;
        assert_eq!(denied.len(), 2, "[{}] {denied:?}", backend.name);
        assert!(denied.iter().all(|r| r["reason"] == "curve_key_taken"), "{denied:?}");

        // Honest path: fresh keys enroll with the same join key.
        let resp = router
            .post_enroll(&enroll_body(&attacker_key.token, "xem-honest", &AgentKeys::fresh()))
            .await;
        resp.assert_status(200);
        assert_eq!(router.all_agents().await.len(), 2, "[{}]", backend.name);
        xem.assert_running();
    }
}

#[tokio::test]
async fn a_revoked_agents_key_never_enrolls_again() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let first = router.mint_join_key("first").await;
        let keys = AgentKeys::fresh();
        let resp = router.post_enroll(&enroll_body(&first.token, "xem-doomed", &keys)).await;
        resp.assert_status(200);
        let agent_id = resp.json()["agent_id"].as_str().unwrap().to_string();
        router.revoke_agent(&agent_id).await.assert_status(200);
        let second = router.mint_join_key("second").await;
        let resp = router.post_enroll(&enroll_body(&second.token, "xem-doomed", &keys)).await;
        resp.assert_error(409, "curve_key_taken");
    }
}

/// Low-order X25519 points (including non-canonical encodings).
const WEAK_CURVE: [&str; 5] = [
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
];

/// Small-order Ed25519 points: identity, order 2, order 4, order 8.
const WEAK_SIGNING: [&str; 4] = [
    "0100000000000000000000000000000000000000000000000000000000000000",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
];

fn assert_invalid(resp: &crate::harness::Resp, param: &str, what: &str) {
    resp.assert_error(400, "invalid_request");
    let body = resp.json();
    assert_eq!(body["error"]["param"], param, "{what}: {body}");
}

#[tokio::test]
async fn weak_keys_are_refused_at_enrollment() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let key = router.mint_join_key("weak").await;
        for hex_key in WEAK_CURVE {
            let bytes: [u8; 32] = hex::decode(hex_key).unwrap().try_into().unwrap();
            let mut body = enroll_body(&key.token, "xem-weak-curve", &AgentKeys::fresh());
            body["curve_public_key"] = json!(curve_public_z85(&bytes));
            assert_invalid(&router.post_enroll(&body).await, "curve_public_key", hex_key);
        }
        for hex_key in WEAK_SIGNING {
            let mut body = enroll_body(&key.token, "xem-weak-signing", &AgentKeys::fresh());
            body["signing_public_key"] = json!(hex_key);
            assert_invalid(&router.post_enroll(&body).await, "signing_public_key", hex_key);
        }
        let denied =
            router.audit(&format!("action=agent.enroll&outcome=denied&target_id={}", key.id)).await;
        assert_eq!(
            denied.len(),
            WEAK_CURVE.len() + WEAK_SIGNING.len(),
            "[{}] {denied:?}",
            backend.name
        );
        assert!(denied.iter().all(|r| r["reason"] == "weak_key"), "{denied:?}");
        // Nothing consumed the key: an honest agent enrolls with it.
        assert_eq!(router.join_key(&key.id).await["state"], "active");
        let resp =
            router.post_enroll(&enroll_body(&key.token, "xem-strong", &AgentKeys::fresh())).await;
        resp.assert_status(200);
    }
}
