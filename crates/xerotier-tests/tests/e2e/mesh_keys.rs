//! The router mesh key rollout end to end (SPEC §9), on SQLite and PostgreSQL: a real router
//! and real XEMs. Until the phase service drives it, the router's test build reads the phase
//! from a file (`XEROTIER_ROUTER_TEST_MESH_PHASE_FILE`, `test_faults::spawn_mesh_phase_watch`):
//! `<phase> <seed>`, the new key made from the seed.
//!
//! What is shown: a live XEM saves the key set before it acknowledges it (killed with SIGKILL
//! right after the acknowledgement, its file has the set), follows the router onto the new key
//! without re-enrolling, and drops the old one at the end; a XEM offline for the whole
//! rotation fetches the keys with a signed request and reconnects; and the fetch refuses,
//! alike, a forged, replayed, stale, unknown-agent, revoked-agent or wrong-kid request.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tempfile::TempDir;
use xerotier_core::SeededEntropy;
use xerotier_credentials::{CurveKeyPair, SigningKeyPair, fingerprint};
use xerotier_proto::agents::router_keys_signing_input;

use crate::fleet_harness::{AGENT_DEADLINE, Xem, enrolled_xem};
use crate::harness::{Backend, Router, RouterOptions, backends, eventually};

const SETTLE: Duration = Duration::from_secs(20);
const REFUSED: &str = "agent_request_refused";

/// A router whose mesh key phase is read from a file in `dir`.
async fn start_router(backend: &Backend, dir: &TempDir) -> (Router, PathBuf) {
    let phase_file = dir.path().join("mesh-phase");
    let options = RouterOptions {
        env: vec![(
            "XEROTIER_ROUTER_TEST_MESH_PHASE_FILE".to_string(),
            phase_file.display().to_string(),
        )],
        ..RouterOptions::default()
    };
    (Router::start_with(backend, options).await, phase_file)
}

fn set_phase(file: &PathBuf, phase: &str, seed: u64) {
    std::fs::write(file, format!("{phase} {seed}\n")).expect("writing the phase file");
}

fn kid_of(public: &[u8; 32]) -> String {
    format!("mks-{}", &fingerprint(public)[..16])
}

/// The kid of the key the router rotates to with `seed`.
fn new_kid(seed: u64) -> String {
    kid_of(&CurveKeyPair::generate(&SeededEntropy::new(seed)).public_bytes())
}

/// The kids the XEM's identity file holds, in its order.
fn held_kids(xem: &Xem) -> Vec<String> {
    let Some(identity) = xem.identity() else { return Vec::new() };
    identity["router_mesh_keys"]
        .as_array()
        .map(|keys| keys.iter().filter_map(|k| k["kid"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
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
async fn a_live_xem_follows_every_phase_and_saves_each_set_before_acknowledging_it() {
    for backend in backends().await {
        let dir = TempDir::new().unwrap();
        let (router, phase_file) = start_router(&backend, &dir).await;
        let (mut xem, id) = enrolled_xem(&router, "xem-mesh-keys").await;
        let old = held_kids(&xem).first().cloned().expect("enrolled with the key set");
        let new = new_kid(7);

        set_phase(&phase_file, "update_clients", 7);
        let ack = format!("kids={old},{new}");
        eventually("the router records the acknowledgement", SETTLE, || async {
            router.logs().contains(&ack).then_some(())
        })
        .await;
        // Killed right after acknowledging: the set is on disk already.
        xem.kill();
        assert_eq!(held_kids(&xem), [old.as_str(), new.as_str()], "[{}]", backend.name);
        xem.restart();
        router.wait_agent_status(&id, "active", AGENT_DEADLINE).await;

        set_phase(&phase_file, "update_servers", 7);
        let since = now_ms();
        // The old key no longer completes a handshake: the XEM moves to the next one it
        // holds, and keeps it first.
        wait_held(&xem, &[&new, &old]).await;
        wait_connected_after(&router, &id, since).await;

        set_phase(&phase_file, "completed", 7);
        wait_held(&xem, &[&new]).await;
        let since = now_ms();
        wait_connected_after(&router, &id, since).await;
        xem.assert_running();
    }
}

#[tokio::test]
async fn a_xem_offline_for_the_whole_rotation_fetches_the_keys_and_reconnects() {
    for backend in backends().await {
        let dir = TempDir::new().unwrap();
        let (router, phase_file) = start_router(&backend, &dir).await;
        let (mut xem, id) = enrolled_xem(&router, "xem-offline").await;
        let old = held_kids(&xem).first().cloned().expect("enrolled with the key set");
        xem.stop_with_sigterm();

        // The whole rotation happens while it is away.
        set_phase(&phase_file, "update_clients", 9);
        set_phase(&phase_file, "completed", 9);
        let new = new_kid(9);
        eventually("the router serves the new key", SETTLE, || async {
            router.logs().contains(&format!("kid={new}")).then_some(())
        })
        .await;

        let since = now_ms();
        xem.restart();
        wait_held(&xem, &[&new]).await;
        wait_connected_after(&router, &id, since).await;
        assert!(
            xem.logs().contains("fetched the router's current mesh keys"),
            "[{}] the XEM fetched over HTTPS (no join key)",
            backend.name
        );
        assert_ne!(old, new);
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

#[tokio::test]
async fn a_forged_replayed_stale_or_misdirected_key_fetch_is_refused_alike() {
    for backend in backends().await {
        let dir = TempDir::new().unwrap();
        let (router, _phase_file) = start_router(&backend, &dir).await;
        let (xem, id) = enrolled_xem(&router, "xem-fetch").await;
        let text = std::fs::read_to_string(xem.signing_key_path()).unwrap();
        let key = SigningKeyPair::from_secret_hex(text.trim()).unwrap();
        let kid = held_kids(&xem).first().cloned().unwrap();
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

        let forger = SigningKeyPair::generate(&SeededEntropy::new(5));
        let other_kid = new_kid(11);
        let refused = [
            ("replayed", honest),
            ("forged", request(&id, &kid, &forger, now, &"2".repeat(32))),
            ("stale", request(&id, &kid, &key, now - 10 * 60_000, &"3".repeat(32))),
            ("future", request(&id, &kid, &key, now + 10 * 60_000, &"4".repeat(32))),
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
