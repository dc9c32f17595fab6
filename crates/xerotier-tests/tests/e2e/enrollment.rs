//! `POST /v1/enroll`: a join key enrolls exactly one agent, under any concurrency; expired,
//! revoked and forged tokens enroll none; every fleet action is audited once.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use xerotier_core::OsEntropy;
use xerotier_credentials::SigningKeyPair;

use crate::fleet_harness::{
    AGENT_DEADLINE, AgentKeys, EXIT_REVOKED, Xem, b64url_json, eddsa_token, enroll, enroll_body,
    hs256_token, jwt_parts,
};
use crate::harness::{EXIT_DEADLINE, Resp, Router, backends, eventually, xeroctl};

#[tokio::test]
async fn a_join_key_enrolls_once() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let key = router.mint_join_key_with(json!({ "name": "once", "region": "us-east" })).await;
        let mut xem = Xem::enroll(&router, "xem-once", &key.token);
        let agent_id = xem.wait_enrolled().await;
        let agent = router.wait_agent_status(&agent_id, "active", AGENT_DEADLINE).await;
        assert_eq!(agent["name"], "xem-once");
        assert_eq!(agent["join_key_id"], key.id.as_str());
        assert_eq!(agent["role"], "execution");
        assert_eq!(agent["region"], "us-east", "the region comes from the join key");
        assert_eq!(agent["lease_renewal_interval_ms"], 200);
        let curve = xem.curve_keys(&xem.curve_key_path());
        assert_eq!(agent["curve_public_key"], curve.public_z85(), "the XEM's own key is enrolled");

        let view = router.join_key(&key.id).await;
        assert_eq!(view["state"], "used", "{view}");
        assert_eq!(view["used_by_agent"], agent_id.as_str(), "{view}");
        assert!(view["used_at"].is_string(), "{view}");

        // The same token again, with fresh keys: under another name or the same one.
        for name in ["xem-twice", "xem-once"] {
            let (resp, _) = enroll(&router, &key.token, name).await;
            resp.assert_error(409, "join_key_used");
        }
        let agents = router.all_agents().await;
        assert_eq!(agents.len(), 1, "[{}] one agent: {agents:?}", backend.name);
        assert_eq!(router.join_key(&key.id).await["used_by_agent"], agent_id.as_str());
        // The used key is no longer listed as active.
        let active =
            router.api().get("/v1/management/join-keys", Some(router.admin_key())).await.json();
        assert!(!active.to_string().contains(&key.id), "{active}");
        // And the enrolled XEM is unaffected.
        xem.assert_running();
        router.wait_agent_status(&agent_id, "active", AGENT_DEADLINE).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enrollments_with_one_key_make_one_agent() {
    const ATTEMPTS: usize = 32;
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let key = router.mint_join_key("contended").await;
        let bodies: Vec<Value> = (0..ATTEMPTS)
            .map(|i| enroll_body(&key.token, &format!("racer-{i:02}"), &AgentKeys::fresh()))
            .collect();
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(ATTEMPTS));
        let tasks: Vec<_> = bodies
            .into_iter()
            .map(|body| {
                let api = router.api().clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    api.post("/v1/enroll", None, &body).await
                })
            })
            .collect();
        let mut answers: Vec<Resp> = Vec::new();
        for task in tasks {
            answers.push(task.await.expect("an enrollment task"));
        }
        let (won, lost): (Vec<&Resp>, Vec<&Resp>) = answers.iter().partition(|r| r.status == 200);
        assert_eq!(
            won.len(),
            1,
            "[{}] exactly one enrollment wins: {:?}",
            backend.name,
            answers.iter().map(|r| (r.status, &r.text)).collect::<Vec<_>>()
        );
        for resp in lost {
            resp.assert_error(409, "join_key_used");
        }
        let winner = won[0].json();
        let agent_id = winner["agent_id"].as_str().expect("agent_id");
        let agents = router.all_agents().await;
        assert_eq!(agents.len(), 1, "[{}] one agent: {agents:?}", backend.name);
        assert_eq!(agents[0]["id"], agent_id);
        assert_eq!(router.join_key(&key.id).await["used_by_agent"], agent_id);
        let enrolls = router.audit("action=agent.enroll&outcome=success").await;
        assert_eq!(
            enrolls.len(),
            1,
            "[{}] one successful enrollment on record, not: {:?}",
            backend.name,
            targets(&enrolls)
        );
    }
}

/// `token` is refused with 401 `code`.
async fn assert_refused(router: &Router, token: &str, code: &str, what: &str) {
    let name: String = format!("forger-{what}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(100)
        .collect();
    let (resp, _) = enroll(router, token, &name).await;
    assert_eq!(resp.status, 401, "[{}] {what}: {}", router.backend, resp.text);
    resp.assert_error(401, code);
}

#[tokio::test]
async fn expired_revoked_and_forged_tokens_enroll_nobody() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let short = router.mint_join_key_with(json!({ "name": "short", "ttl_seconds": 1 })).await;
        let first = router.mint_join_key("first").await;
        let (resp, _) = enroll(&router, &first.token, "taken").await;
        resp.assert_status(200);
        let valid = router.mint_join_key("valid").await;
        let revoked = router.mint_join_key("revoked").await;
        router.revoke_join_key(&revoked.id).await.assert_status(200);

        assert_refused(&router, &revoked.token, "join_key_revoked", "revoked").await;

        // Forgeries, all built from the valid key's own header and claims (its jti included):
        // accepting any of them would consume the valid key.
        let (header, claims) = jwt_parts(&valid.token);
        let parts: Vec<&str> = valid.token.split('.').collect();
        let signature = parts[2];
        let mut more_rights = claims.clone();
        more_rights["role"] = json!("inference");
        more_rights["exp"] = json!(claims["exp"].as_i64().unwrap() + 365 * 86_400);
        let mut other_region = claims.clone();
        other_region["region"] = json!("eu-west");
        let mut other_audience = claims.clone();
        other_audience["aud"] = json!("someone-else");
        let with_alg = |alg: &str| {
            let mut h = header.clone();
            h["alg"] = json!(alg);
            h
        };
        let stranger = SigningKeyPair::generate(&OsEntropy);
        let router_curve_key = claims["router_curve_key"].as_str().unwrap().as_bytes();
        let forgeries = [
            (
                "tampered claims (role, exp), signature kept",
                format!("{}.{}.{signature}", parts[0], b64url_json(&more_rights)),
            ),
            (
                "tampered region, signature kept",
                format!("{}.{}.{signature}", parts[0], b64url_json(&other_region)),
            ),
            ("alg none, no signature", format!("{}.{}.", b64url_json(&with_alg("none")), parts[1])),
            (
                "alg none, signature kept",
                format!("{}.{}.{signature}", b64url_json(&with_alg("none")), parts[1]),
            ),
            (
                "HS256 keyed with the router's public CURVE key",
                hs256_token(&with_alg("HS256"), &claims, router_curve_key),
            ),
            ("HS256 keyed with an empty secret", hs256_token(&with_alg("HS256"), &claims, b"")),
            ("EdDSA by another key, same kid", eddsa_token(&header, &claims, &stranger)),
            (
                "EdDSA by another key, another audience",
                eddsa_token(&header, &other_audience, &stranger),
            ),
            ("the valid token with its signature cut", format!("{}.{}.", parts[0], parts[1])),
            ("garbage", "garbage".to_string()),
            ("empty", String::new()),
            ("three empty parts", "..".to_string()),
        ];
        for (what, token) in &forgeries {
            assert_refused(&router, token, "join_key_invalid", what).await;
        }

        // A registration name a live agent holds: refused, and the key stays usable.
        let (resp, _) = enroll(&router, &valid.token, "taken").await;
        resp.assert_error(409, "registration_name_taken");
        let view = router.join_key(&valid.id).await;
        assert_eq!(view["state"], "active", "[{}] the key survives: {view}", backend.name);
        assert!(view["used_by_agent"].is_null(), "{view}");

        // Expiry: once the router says so (polled), the key enrolls nobody.
        eventually("the 1 s join key to expire", Duration::from_secs(10), || async {
            (router.join_key(&short.id).await["state"] == "expired").then_some(())
        })
        .await;
        assert_refused(&router, &short.token, "join_key_expired", "expired").await;

        let agents = router.all_agents().await;
        assert_eq!(agents.len(), 1, "[{}] only `taken`: {agents:?}", backend.name);

        // The valid key was never consumed by any of that: it enrolls now, under a free name.
        let (resp, _) = enroll(&router, &valid.token, "rightful").await;
        resp.assert_status(200);
        let body = resp.json();
        assert_eq!(body["role"], "execution", "the signed role, not a forged one: {body}");
        assert!(body["region"].is_null(), "the signed region, not a forged one: {body}");
        assert_eq!(router.all_agents().await.len(), 2);
        assert_eq!(router.join_key(&valid.id).await["used_by_agent"], body["agent_id"]);
    }
}

/// The audit records of `action` with `outcome`.
async fn records(router: &Router, action: &str, outcome: &str) -> Vec<Value> {
    router.audit(&format!("action={action}&outcome={outcome}")).await
}

fn targets(records: &[Value]) -> BTreeSet<String> {
    records.iter().map(|r| r["target_id"].as_str().unwrap_or("-").to_string()).collect()
}

#[tokio::test]
async fn fleet_actions_are_audited_once() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let admin = router.admin_key_id().await;
        let used = router.mint_join_key("audited-used").await;
        let revoked = router.mint_join_key("audited-revoked").await;
        router.revoke_join_key(&revoked.id).await.assert_status(200);
        router.revoke_join_key(&revoked.id).await.assert_error(409, "already_revoked");

        let mut xem = Xem::enroll(&router, "xem-audited", &used.token);
        let agent_id = xem.wait_enrolled().await;
        router.wait_agent_status(&agent_id, "active", AGENT_DEADLINE).await;
        // A replayed token, and a forged one.
        let (resp, _) = enroll(&router, &used.token, "xem-replay").await;
        resp.assert_error(409, "join_key_used");
        let (resp, _) = enroll(&router, "garbage", "xem-garbage").await;
        resp.assert_error(401, "join_key_invalid");

        xeroctl(
            &router,
            &["agents", "revoke-credentials", &agent_id, "--reason", "audit test", "--yes"],
        )
        .success();
        assert_eq!(xem.wait_exit(EXIT_DEADLINE).code(), Some(EXIT_REVOKED), "{}", xem.logs());
        xeroctl(&router, &["agents", "revoke-credentials", &agent_id, "--yes"]).failure();

        let creates = records(&router, "join_key.create", "success").await;
        assert_eq!(creates.len(), 2, "[{}] {creates:?}", backend.name);
        assert_eq!(targets(&creates), BTreeSet::from([used.id.clone(), revoked.id.clone()]));
        assert!(creates.iter().all(|r| r["actor_key_id"] == admin.as_str()), "{creates:?}");

        let revokes = records(&router, "join_key.revoke", "success").await;
        assert_eq!(revokes.len(), 1, "[{}] {revokes:?}", backend.name);
        assert_eq!(revokes[0]["target_id"], revoked.id.as_str());
        assert_eq!(revokes[0]["actor_key_id"], admin.as_str());
        assert_eq!(records(&router, "join_key.revoke", "failed").await.len(), 1);

        let enrolls = records(&router, "agent.enroll", "success").await;
        assert_eq!(enrolls.len(), 1, "[{}] {enrolls:?}", backend.name);
        assert_eq!(enrolls[0]["target_id"], agent_id.as_str());
        assert_eq!(enrolls[0]["actor_key_id"], used.id.as_str(), "the join key enrolled it");
        // The replay and the forgery are on record as denied attempts, never as successes.
        assert!(records(&router, "agent.enroll", "failed").await.is_empty());
        let denied = records(&router, "agent.enroll", "denied").await;
        assert_eq!(denied.len(), 2, "[{}] the replay and the forgery: {denied:?}", backend.name);
        let replay = &denied[0];
        assert!(
            replay.to_string().contains("join_key_used")
                && replay.to_string().contains("xem-replay"),
            "{replay}"
        );
        assert_eq!(replay["reason"], "used", "{replay}");
        assert_eq!(replay["target_type"], "join_key", "{replay}");
        assert_eq!(replay["target_id"], used.id.as_str(), "{replay}");
        assert_eq!(replay["actor_key_id"], used.id.as_str(), "its signature verified");
        assert_eq!(denied[1]["reason"], "malformed", "{}", denied[1]);
        assert!(denied[1]["target_id"].is_null(), "garbage names no join key: {}", denied[1]);
        assert!(denied[1]["actor_key_id"].is_null(), "{}", denied[1]);

        let revocations = records(&router, "agent.revoke_credentials", "success").await;
        assert_eq!(revocations.len(), 1, "[{}] {revocations:?}", backend.name);
        assert_eq!(revocations[0]["target_id"], agent_id.as_str());
        assert_eq!(revocations[0]["actor_key_id"], admin.as_str());
        assert_eq!(revocations[0]["reason"], "audit test");
        assert_eq!(records(&router, "agent.revoke_credentials", "failed").await.len(), 1);
    }
}
