//! Refused enrollment attempts (SPEC 6.1): each is audited (`agent.enroll`, `denied`) with the
//! join key the token names, the reason and the peer address; a flood from one source records at
//! most its share and counts the rest; `xeroctl agents join-keys jk_…` shows them.

use std::time::Duration;

use serde_json::{Value, json};
use xerotier_core::OsEntropy;
use xerotier_credentials::SigningKeyPair;

use crate::fleet_harness::{AgentKeys, b64url_json, eddsa_token, enroll, enroll_body, jwt_parts};
use crate::harness::{Router, backends, eventually, xeroctl};

const UNRECORDED: &str = "xerotier_router_enroll_denied_unrecorded_total";
/// The per-source burst of refused-attempt records.
const BURST: usize = 20;

async fn denied_on(router: &Router, join_key_id: &str) -> Vec<Value> {
    router.audit(&format!("action=agent.enroll&outcome=denied&target_id={join_key_id}")).await
}

/// The one denied record on `join_key_id`, checked for `reason`, peer and target.
async fn assert_one_denied(router: &Router, join_key_id: &str, reason: &str, code: &str) -> Value {
    let records = denied_on(router, join_key_id).await;
    assert_eq!(records.len(), 1, "[{}] {reason}: {records:?}", router.backend);
    let record = records[0].clone();
    assert_eq!(record["reason"], reason, "{record}");
    assert_eq!(record["target_type"], "join_key", "{record}");
    assert_eq!(record["target_id"], join_key_id, "{record}");
    assert_eq!(record["outcome"], "denied", "{record}");
    let peer = record["client_addr"].as_str().unwrap_or_default();
    assert!(peer.starts_with("127.0.0.1:"), "the peer address is recorded: {record}");
    assert_eq!(record["details"]["error"], code, "{record}");
    assert!(record["request_id"].is_string(), "{record}");
    record
}

#[tokio::test]
async fn every_refused_enrollment_is_audited_with_its_reason_peer_and_join_key() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let short = router.mint_join_key_with(json!({ "name": "short", "ttl_seconds": 1 })).await;
        let used = router.mint_join_key("used").await;
        let revoked = router.mint_join_key("revoked").await;
        let forged = router.mint_join_key("forged").await;
        let wrong_alg = router.mint_join_key("wrong-alg").await;
        let (resp, _) = enroll(&router, &used.token, "rightful").await;
        resp.assert_status(200);
        router.revoke_join_key(&revoked.id).await.assert_status(200);

        // Used, revoked.
        enroll(&router, &used.token, "replayer").await.0.assert_error(409, "join_key_used");
        let replay = assert_one_denied(&router, &used.id, "used", "join_key_used").await;
        assert_eq!(replay["details"]["registration_name"], "replayer", "{replay}");
        enroll(&router, &revoked.token, "late").await.0.assert_error(401, "join_key_revoked");
        assert_one_denied(&router, &revoked.id, "revoked", "join_key_revoked").await;

        // Forged: the claims of a real key, re-signed by a stranger; and alg none.
        let (header, claims) = jwt_parts(&forged.token);
        let stranger = SigningKeyPair::generate(&OsEntropy);
        let token = eddsa_token(&header, &claims, &stranger);
        enroll(&router, &token, "forger").await.0.assert_error(401, "join_key_invalid");
        let record =
            assert_one_denied(&router, &forged.id, "bad_signature", "join_key_invalid").await;
        assert!(record["actor_key_id"].is_null(), "an unverified token is nobody: {record}");
        let (header, claims) = jwt_parts(&wrong_alg.token);
        let mut none = header.clone();
        none["alg"] = json!("none");
        let token = format!("{}.{}.", b64url_json(&none), b64url_json(&claims));
        enroll(&router, &token, "alg-none").await.0.assert_error(401, "join_key_invalid");
        assert_one_denied(&router, &wrong_alg.id, "wrong_algorithm", "join_key_invalid").await;

        // A join key id nobody minted, named by a forged token: recorded under that label.
        let mut unknown = claims.clone();
        unknown["jti"] = json!("jk_01jbxq5e4y6n2v3r8t9w0z1a2b");
        let token = eddsa_token(&header, &unknown, &stranger);
        enroll(&router, &token, "stranger").await.0.assert_error(401, "join_key_invalid");
        assert_one_denied(
            &router,
            "jk_01jbxq5e4y6n2v3r8t9w0z1a2b",
            "bad_signature",
            "join_key_invalid",
        )
        .await;
        // A `jti` that is not a join key id is never written into the log.
        let mut junk = claims.clone();
        junk["jti"] = json!("jk_<script>");
        let token = eddsa_token(&header, &junk, &stranger);
        enroll(&router, &token, "junk").await.0.assert_error(401, "join_key_invalid");
        let all = router.audit("action=agent.enroll&outcome=denied").await;
        assert!(!format!("{all:?}").contains("<script>"), "{all:?}");

        // Expired (once the router says so).
        eventually("the 1 s join key to expire", Duration::from_secs(10), || async {
            (router.join_key(&short.id).await["state"] == "expired").then_some(())
        })
        .await;
        enroll(&router, &short.token, "too-late").await.0.assert_error(401, "join_key_expired");
        assert_one_denied(&router, &short.id, "expired", "join_key_expired").await;

        // Name taken: the agent is refused, the key survives, the attempt is on record.
        let spare = router.mint_join_key("spare").await;
        enroll(&router, &spare.token, "rightful")
            .await
            .0
            .assert_error(409, "registration_name_taken");
        assert_one_denied(&router, &spare.id, "name_taken", "registration_name_taken").await;

        // Malformed: a body that is not an enrollment request at all.
        let resp = router
            .api()
            .request(reqwest::Method::POST, "/v1/enroll")
            .header("content-type", "application/json")
            .body("{ not json");
        crate::harness::Api::send(resp).await.assert_error(400, "invalid_request");
        let malformed: Vec<Value> = router
            .audit("action=agent.enroll&outcome=denied")
            .await
            .into_iter()
            .filter(|r| r["reason"] == "malformed")
            .collect();
        assert_eq!(malformed.len(), 1, "[{}] {malformed:?}", backend.name);
        assert!(malformed[0]["target_id"].is_null(), "{}", malformed[0]);

        // None of it enrolled anybody, and nothing was left unrecorded.
        assert_eq!(router.all_agents().await.len(), 1);
        assert_eq!(router.metric(UNRECORDED).await, 0.0);
    }
}

#[tokio::test]
async fn a_flood_of_bad_attempts_records_at_most_the_limit() {
    const FLOOD: usize = 200;
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let key = router.mint_join_key("flooded").await;
        let (header, claims) = jwt_parts(&key.token);
        let stranger = SigningKeyPair::generate(&OsEntropy);
        let token = eddsa_token(&header, &claims, &stranger);
        let body = enroll_body(&token, "flood", &AgentKeys::fresh());
        for _ in 0..FLOOD {
            router.post_enroll(&body).await.assert_error(401, "join_key_invalid");
        }
        let recorded = denied_on(&router, &key.id).await.len();
        // The burst, plus what refilled (10 a minute) while the flood ran.
        assert!(
            (BURST..=BURST + 3).contains(&recorded),
            "[{}] {recorded} records of {FLOOD} attempts",
            backend.name
        );
        let unrecorded = router.metric(UNRECORDED).await;
        assert_eq!(
            unrecorded as usize,
            FLOOD - recorded,
            "[{}] every dropped record counted",
            backend.name
        );
        // The key was never touched; the honest holder enrolls.
        let (resp, _) = enroll(&router, &key.token, "honest").await;
        resp.assert_status(200);
    }
}

#[tokio::test]
async fn xeroctl_join_keys_shows_attempts_made_after_use() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let key = router.mint_join_key("shown").await;
        enroll(&router, &key.token, "first").await.0.assert_status(200);
        enroll(&router, &key.token, "again").await.0.assert_error(409, "join_key_used");
        enroll(&router, &key.token, "and-again").await.0.assert_error(409, "join_key_used");

        let out = xeroctl(&router, &["agents", "join-keys", &key.id]).success();
        assert!(out.stdout.contains("refused attempts:"), "{}", out.stdout);
        let rows: Vec<&str> = out
            .stdout
            .lines()
            .filter(|l| l.contains(" used ") && l.contains("127.0.0.1:"))
            .collect();
        assert_eq!(rows.len(), 2, "one row per attempt (time, reason, peer): {}", out.stdout);
        assert!(out.stdout.matches(" used ").count() >= 2, "{}", out.stdout);

        let json =
            xeroctl(&router, &["-o", "json", "agents", "join-keys", &key.id]).success().json();
        assert_eq!(json["id"], key.id.as_str(), "{json}");
        let attempts = json["refused_attempts"].as_array().expect("refused_attempts");
        assert_eq!(attempts.len(), 2, "[{}] {json}", backend.name);
        for attempt in attempts {
            assert_eq!(attempt["reason"], "used", "{attempt}");
            assert!(attempt["client_addr"].as_str().unwrap().starts_with("127.0.0.1:"));
            assert!(attempt["at"].is_string());
        }
    }
}
