//! The router mesh key rotated in phases end to end (SPEC §9), on SQLite and PostgreSQL: a
//! real router, real XEMs and `xeroctl router rotate-keys --kind mesh`.
//!
//! What is shown: with three XEMs, one stopped for the whole rotation, the key moves through
//! init → update_clients → update_servers → standby with a kill -9 of the router in every
//! phase and of a XEM in every phase (in update_clients right after it acknowledged the new
//! set: its file already holds it); no agent re-enrolls; the old key no longer completes a
//! CURVE handshake; the stopped XEM comes back on its own with a signed HTTPS key fetch. A rollback from
//! update_clients leaves every agent on the old key. The fetch refuses, alike, a forged,
//! replayed, stale, unknown-agent, revoked-agent or wrong-kid request.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use xerotier_core::SeededEntropy;
use xerotier_credentials::{CurveKeyPair, SigningKeyPair, fingerprint};
use xerotier_proto::agents::router_keys_signing_input;

use crate::fleet_harness::{AGENT_DEADLINE, Handshake, RawMesh, Xem, enrolled_xem};
use crate::harness::{CliOutput, Router, RouterOptions, backends, eventually, xeroctl};
use crate::router_keys::{key_kind, kid_in};

const SETTLE: Duration = Duration::from_secs(30);
const REFUSED: &str = "agent_request_refused";

fn kid_of(public: &[u8; 32]) -> String {
    format!("mks-{}", &fingerprint(public)[..16])
}

/// The mesh kind as `GET …/router/keys` shows it.
async fn mesh_kind(router: &Router) -> Value {
    key_kind(router, "mesh").await
}

fn rotate(router: &Router, phase: &str) -> CliOutput {
    xeroctl(router, &["router", "rotate-keys", "--kind", "mesh", "--phase", phase, "--yes"])
}

/// The kids the XEM's identity file holds, in its order.
fn held_kids(xem: &Xem) -> Vec<String> {
    let Some(identity) = xem.identity() else { return Vec::new() };
    identity["router_mesh_keys"]
        .as_array()
        .map(|keys| keys.iter().filter_map(|k| k["kid"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// The public key (Z85) the XEM's identity file holds for `kid`.
fn held_public(xem: &Xem, kid: &str) -> String {
    let identity = xem.identity().expect("an identity file");
    identity["router_mesh_keys"]
        .as_array()
        .expect("a key set")
        .iter()
        .find(|k| k["kid"] == kid)
        .and_then(|k| k["public_key"].as_str())
        .expect("the key is held")
        .to_string()
}

async fn wait_held(xem: &Xem, want: &[&str]) {
    eventually(&format!("the XEM holds {want:?}"), SETTLE, || async {
        let held = held_kids(xem);
        (held == want).then_some(())
    })
    .await;
}

/// Waits until the agent renewed its lease after `since_ms` (Unix ms), i.e. is connected now.
async fn wait_connected_after(router: &Router, id: &str, since_ms: u128) {
    eventually("a fresh lease renewal", SETTLE, || async {
        let agent = router.agent(id).await;
        let at = agent["last_heartbeat_at"].as_str()?;
        let at = humantime::parse_rfc3339(at).ok()?.duration_since(UNIX_EPOCH).ok()?.as_millis();
        (agent["status"] == "active" && at > since_ms).then_some(())
    })
    .await;
}

fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

#[tokio::test]
async fn the_mesh_key_rotates_with_a_xem_stopped_throughout_and_crashes_in_every_phase() {
    for backend in backends().await {
        let mut router = Router::start_with(&backend, RouterOptions::fixed_ports()).await;
        let (mut a, id_a) = enrolled_xem(&router, "xem-mesh-a").await;
        let (mut b, id_b) = enrolled_xem(&router, "xem-mesh-b").await;
        let (mut c, id_c) = enrolled_xem(&router, "xem-mesh-c").await;
        let old = kid_in(&mesh_kind(&router).await, "current").expect("a current mesh key");
        assert_eq!(held_kids(&a), [old.as_str()], "[{}] enrolled with the key set", backend.name);
        let old_public = held_public(&a, &old);
        c.stop_with_sigterm();

        rotate(&router, "init").success();
        router.kill();
        router.restart().await;
        let kind = mesh_kind(&router).await;
        assert_eq!(kind["phase"], "init", "[{}] the phase survives a crash: {kind}", backend.name);
        let new = kid_in(&kind, "next").expect("the new mesh key");
        assert_ne!(new, old);
        // A XEM killed in init comes back on the key it holds.
        b.kill();
        b.restart();
        router.wait_agent_status(&id_b, "active", AGENT_DEADLINE).await;

        rotate(&router, "update_clients").success();
        wait_held(&a, &[&old, &new]).await;
        // Killed right after acknowledging: the set is on disk already, and it comes back.
        a.kill();
        assert_eq!(held_kids(&a), [old.as_str(), new.as_str()], "[{}]", backend.name);
        a.restart();
        router.wait_agent_status(&id_a, "active", AGENT_DEADLINE).await;
        wait_held(&b, &[&old, &new]).await;
        router.kill();
        router.restart().await;
        assert_eq!(mesh_kind(&router).await["phase"], "update_clients", "[{}]", backend.name);
        router.wait_agent_status(&id_b, "active", AGENT_DEADLINE).await;
        // update_servers waits until every live agent has moved (the stopped one is not live).
        eventually("update_servers once every live agent acknowledged", SETTLE, || async {
            rotate(&router, "update_servers").status.success().then_some(())
        })
        .await;
        router.kill();
        router.restart().await;
        assert_eq!(mesh_kind(&router).await["phase"], "update_servers", "[{}]", backend.name);
        // A XEM killed while the servers switch comes back through the keys it holds.
        b.kill();
        b.restart();
        let since = now_ms();
        // The old key no longer completes a handshake: each XEM moves to the next key it holds
        // and keeps it first.
        wait_held(&a, &[&new, &old]).await;
        wait_held(&b, &[&new, &old]).await;
        wait_connected_after(&router, &id_a, since).await;
        wait_connected_after(&router, &id_b, since).await;

        eventually(
            "the rotation completes once every live agent is on the new key",
            SETTLE,
            || async { rotate(&router, "standby").status.success().then_some(()) },
        )
        .await;
        let kind = mesh_kind(&router).await;
        assert_eq!(kind["phase"], "standby", "[{}] {kind}", backend.name);
        assert_eq!(kid_in(&kind, "current").as_deref(), Some(new.as_str()), "[{}]", backend.name);
        wait_held(&a, &[&new]).await;
        wait_held(&b, &[&new]).await;
        // And one killed after completion.
        a.kill();
        a.restart();
        router.kill();
        router.restart().await;
        let since = now_ms();
        wait_connected_after(&router, &id_a, since).await;
        wait_connected_after(&router, &id_b, since).await;

        // The old key is refused after completion; the new one completes a handshake.
        let own = a.curve_keys(&a.curve_key_path());
        let stale = RawMesh::curve(&router.mesh_addr(), &own, &old_public);
        let outcome = stale.handshake(Duration::from_secs(2));
        assert!(
            !matches!(outcome, Handshake::Succeeded),
            "[{}] old key: {outcome:?}",
            backend.name
        );
        let fresh = RawMesh::curve(&router.mesh_addr(), &own, &held_public(&a, &new));
        let outcome = fresh.handshake(Duration::from_secs(5));
        assert!(matches!(outcome, Handshake::Succeeded), "[{}] new key: {outcome:?}", backend.name);

        // The XEM stopped for the whole rotation comes back on its own, without a join key.
        let since = now_ms();
        c.restart();
        wait_held(&c, &[&new]).await;
        wait_connected_after(&router, &id_c, since).await;
        assert!(
            c.logs().contains("fetched the router's current mesh keys"),
            "[{}] the stopped XEM fetched the keys over HTTPS",
            backend.name
        );
        // Nobody re-enrolled: the same three agents, all active.
        let agents = router.all_agents().await;
        assert_eq!(agents.len(), 3, "[{}] {agents:?}", backend.name);
        for id in [&id_a, &id_b, &id_c] {
            assert_eq!(router.agent(id).await["status"], "active", "[{}] {id}", backend.name);
        }
        a.assert_running();
    }
}

#[tokio::test]
async fn a_mesh_key_rotation_rolled_back_from_update_clients_leaves_every_agent_on_the_old_key() {
    for backend in backends().await {
        let router = Router::start_with(&backend, RouterOptions::fixed_mesh_port()).await;
        let (mut xem, id) = enrolled_xem(&router, "xem-mesh-rollback").await;
        let old = kid_in(&mesh_kind(&router).await, "current").expect("a current mesh key");
        rotate(&router, "init").success();
        let new = kid_in(&mesh_kind(&router).await, "next").expect("the new mesh key");
        rotate(&router, "update_clients").success();
        wait_held(&xem, &[&old, &new]).await;

        rotate(&router, "rollback").success();
        wait_held(&xem, &[&old]).await;
        let kind = mesh_kind(&router).await;
        assert_eq!(kind["phase"], "standby", "[{}] {kind}", backend.name);
        assert_eq!(kid_in(&kind, "current").as_deref(), Some(old.as_str()), "[{}]", backend.name);
        assert_eq!(kid_in(&kind, "next"), None, "[{}] the new key is withdrawn", backend.name);
        let since = now_ms();
        wait_connected_after(&router, &id, since).await;
        xem.assert_running();
    }
}

/// A signed fetch request for `id` holding `kid`, at `timestamp_ms`.
fn request(id: &str, kid: &str, key: &SigningKeyPair, timestamp_ms: i64, nonce: &str) -> Value {
    let input = router_keys_signing_input(id, timestamp_ms, nonce, kid);
    json!({
        "agent_id": id,
        "timestamp_ms": timestamp_ms,
        "nonce": nonce,
        "kid": kid,
        "signature": hex::encode(key.sign(&input)),
    })
}

/// An enrolled XEM, its agent id, its signing key (as a key fetch is signed with) and the kid
/// it holds first.
async fn fetching_xem(router: &Router, name: &str) -> (Xem, String, SigningKeyPair, String) {
    let (xem, id) = enrolled_xem(router, name).await;
    let text = std::fs::read_to_string(xem.signing_key_path()).unwrap();
    let key = SigningKeyPair::from_secret_hex(text.trim()).unwrap();
    let kid = held_kids(&xem).first().cloned().unwrap();
    (xem, id, key, kid)
}

#[tokio::test]
async fn a_forged_replayed_stale_or_misdirected_key_fetch_is_refused_alike() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let (_xem, id, key, kid) = fetching_xem(&router, "xem-fetch").await;
        let now = i64::try_from(now_ms()).unwrap();
        let fetch = |body: Value| {
            let api = router.api();
            async move { api.post("/v1/agents/router-keys", None, &body).await }
        };

        // The honest path.
        let honest = request(&id, &kid, &key, now, &"1".repeat(32));
        let answer = fetch(honest.clone()).await;
        assert_eq!(answer.status, 200, "[{}] {}", backend.name, answer.text);
        assert_eq!(answer.json()["keys"][0]["kid"], kid.as_str());
        // The CAs to trust come along (an agent offline across a TLS CA rotation too).
        let pins = answer.json()["tls_ca_pins"].clone();
        assert_eq!(pins, json!([crate::tls::pin_of(&router.ca_file().unwrap())]), "{pins}");

        let forger = SigningKeyPair::generate(&SeededEntropy::new(5));
        let other_kid = kid_of(&CurveKeyPair::generate(&SeededEntropy::new(11)).public_bytes());
        let refused = [
            ("replayed", honest),
            ("forged", request(&id, &kid, &forger, now, &"2".repeat(32))),
            ("stale", request(&id, &kid, &key, now - 10 * 60_000, &"3".repeat(32))),
            ("future", request(&id, &kid, &key, now + 10 * 60_000, &"4".repeat(32))),
            ("the earliest instant", request(&id, &kid, &key, i64::MIN, &"8".repeat(32))),
            ("the latest instant", request(&id, &kid, &key, i64::MAX, &"9".repeat(32))),
            (
                "unknown agent",
                request("agt_01j9zk3v8p5q2r7t4w6x0y1abc", &kid, &key, now, &"5".repeat(32)),
            ),
            ("wrong kid", request(&id, &other_kid, &key, now, &"6".repeat(32))),
        ];
        for (what, body) in refused {
            let answer = fetch(body).await;
            assert_eq!(answer.status, 401, "[{}] {what}: {}", backend.name, answer.text);
            assert_eq!(answer.json()["error"]["code"], REFUSED, "[{}] {what}", backend.name);
        }
        let unknown = fetch(json!({ "agent_id": id, "extra": 1 })).await;
        assert_eq!(unknown.status, 400, "unknown fields are refused: {}", unknown.text);

        router.revoke_agent(&id).await.assert_status(200);
        let revoked = fetch(request(&id, &kid, &key, now, &"7".repeat(32))).await;
        assert_eq!(revoked.status, 401, "[{}] revoked: {}", backend.name, revoked.text);
        assert_eq!(revoked.json()["error"]["code"], REFUSED);
        let audited = router.audit("action=agent.router_keys_fetch").await;
        assert!(audited.len() >= 7, "[{}] refusals audited: {}", backend.name, audited.len());
    }
}

/// A flood of forged key fetches from one source (the endpoint needs no credential): each is
/// refused alike, the audit log records them only at the per-source rate, and an honest fetch
/// in the middle of the flood is answered.
#[tokio::test]
async fn a_flood_of_forged_key_fetches_is_refused_recorded_at_a_bounded_rate_and_starves_no_one() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let (_xem, id, key, kid) = fetching_xem(&router, "xem-fetch-flood").await;
        let forger = SigningKeyPair::generate(&SeededEntropy::new(21));
        let now = i64::try_from(now_ms()).unwrap();
        const FLOOD: usize = 600;
        let forged: Vec<Value> =
            (0..FLOOD).map(|i| request(&id, &kid, &forger, now, &format!("{i:032x}"))).collect();
        let api = router.api().clone();
        let started = std::time::Instant::now();
        // Eight senders at once, each sending its share back to back.
        let senders: Vec<_> = forged
            .chunks(FLOOD / 8)
            .map(|chunk| {
                let (api, chunk) = (api.clone(), chunk.to_vec());
                tokio::spawn(async move {
                    let mut statuses = Vec::with_capacity(chunk.len());
                    for body in &chunk {
                        statuses.push(api.post("/v1/agents/router-keys", None, body).await.status);
                    }
                    statuses
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let body = request(&id, &kid, &key, now, &"f".repeat(32));
        let honest = api.post("/v1/agents/router-keys", None, &body).await;
        let mut statuses = Vec::with_capacity(senders.len());
        for sender in senders {
            statuses.push(sender.await.expect("a sender"));
        }
        let statuses: Vec<u16> = statuses.into_iter().flatten().collect();
        assert_eq!(statuses.len(), FLOOD);
        assert!(statuses.iter().all(|s| *s == 401), "[{}] every forgery refused", backend.name);
        assert_eq!(honest.status, 200, "[{}] the honest fetch: {}", backend.name, honest.text);
        let elapsed = started.elapsed();
        let audited = router.audit("action=agent.router_keys_fetch").await;
        // 20 at once, then 10 a minute: the flood lasted well under a few minutes.
        let bound = 20 + 10 * (elapsed.as_secs() / 60 + 1) as usize;
        assert!(
            !audited.is_empty() && audited.len() <= bound,
            "[{}] {} refusals audited for {FLOOD} in {elapsed:?} (bound {bound})",
            backend.name,
            audited.len()
        );
        println!(
            "[{}] {FLOOD} forged fetches in {elapsed:?}; {} audited",
            backend.name,
            audited.len()
        );
    }
}
