//! Live agents: revocation cuts a XEM off for good, restarts of either side need no join key,
//! and the fleet view tells who is there.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::fleet_harness::{
    AGENT_DEADLINE, EXIT_REVOKED, Handshake, RawMesh, Xem, enrolled_xem, hello, lease_renewal,
};
use crate::harness::{
    EXIT_DEADLINE, Router, RouterOptions, STARTUP_DEADLINE, backends, eventually, xeroctl,
};

const MESH_FRAMES: [&str; 2] = [
    r#"xerotier_router_mesh_frames_total{kind="hello"}"#,
    r#"xerotier_router_mesh_frames_total{kind="lease_renewal"}"#,
];

fn revoked_path(path: PathBuf) -> PathBuf {
    PathBuf::from(format!("{}.revoked", path.display()))
}

fn rfc3339(text: &serde_json::Value) -> SystemTime {
    let text = text.as_str().unwrap_or_else(|| panic!("a timestamp, got {text}"));
    humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

#[tokio::test]
async fn revoked_credentials_stop_the_xem_for_good() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let admin = router.admin_key_id().await;
        let mesh = router.mesh_addr();
        let (mut live, live_id) = enrolled_xem(&router, "xem-live").await;
        let (mut down, down_id) = enrolled_xem(&router, "xem-down").await;
        let router_key = live.identity().unwrap()["router_curve_key"].as_str().unwrap().to_string();
        // xem-down's host goes away hard: its identity stays on disk, nothing is retired.
        down.kill();

        let out = xeroctl(&router, &["agents", "revoke-credentials", &live_id, "--yes"]).success();
        assert!(out.stdout.contains(&live_id), "{}", out.stdout);
        // The live session is cut and the XEM told so: it exits with the revoked status.
        let status = live.wait_exit(EXIT_DEADLINE);
        assert_eq!(
            status.code(),
            Some(EXIT_REVOKED),
            "[{}] {status}:\n{}",
            backend.name,
            live.logs()
        );
        assert!(
            live.stderr().contains("credentials were revoked"),
            "stderr says why: {}",
            live.stderr()
        );
        let agent = router.agent(&live_id).await;
        assert_eq!(agent["status"], "revoked", "{agent}");
        assert_eq!(agent["revoked_by"], admin.as_str(), "{agent}");
        assert!(agent["revoked_at"].is_string(), "{agent}");
        // The XEM retired its identity and key: kept for forensics, never used again.
        assert!(!live.identity_path().exists(), "identity.json retired");
        assert!(revoked_path(live.identity_path()).exists(), "identity.json.revoked kept");
        assert!(!live.curve_key_path().exists(), "curve.hex retired");
        let old_key = live.curve_keys(&revoked_path(live.curve_key_path()));
        assert_eq!(agent["curve_public_key"], old_key.public_z85(), "the retired key is the one");

        // Restarted without a join key, it cannot do anything but say so.
        live.restart();
        let status = live.wait_exit(EXIT_DEADLINE);
        assert!(!status.success(), "{status}: {}", live.logs());
        assert!(
            live.stderr().contains("not enrolled and no join key"),
            "a clear message: {}",
            live.stderr()
        );

        // The revoked key at the mesh endpoint: refused at the handshake, nothing counted.
        let mut counts = Vec::new();
        for series in MESH_FRAMES {
            counts.push(router.metric(series).await);
        }
        let raw = RawMesh::curve(&mesh, &old_key, &router_key);
        raw.send(&hello(&live_id));
        raw.send(&lease_renewal(&live_id, 1));
        assert_eq!(raw.handshake(STARTUP_DEADLINE), Handshake::FailedAuth(400));
        for (series, before) in MESH_FRAMES.iter().zip(counts) {
            assert_eq!(router.metric(series).await, before, "[{}] {series}", backend.name);
        }
        assert_eq!(router.agent(&live_id).await["last_heartbeat_at"], agent["last_heartbeat_at"]);
        // Revoking twice is refused.
        let again =
            xeroctl(&router, &["agents", "revoke-credentials", &live_id, "--yes"]).failure();
        assert!(again.stderr.contains("revoked"), "{}", again.stderr);

        // xem-down is revoked while it is down, then its host comes back with the identity
        // intact: the router refuses its key at the handshake, and the XEM stops as revoked.
        assert!(down.identity_path().exists());
        xeroctl(&router, &["agents", "revoke-credentials", &down_id, "--yes"]).success();
        down.restart();
        let status = down.wait_exit(EXIT_DEADLINE);
        assert_eq!(
            status.code(),
            Some(EXIT_REVOKED),
            "[{}] {status}:\n{}",
            backend.name,
            down.logs()
        );
        assert!(down.stderr().contains("credentials were revoked"), "{}", down.stderr());
        assert!(!down.identity_path().exists(), "identity retired");
        assert_eq!(router.agent(&down_id).await["status"], "revoked");
        assert_eq!(router.all_agents().await.len(), 2, "revoked agents are kept, not deleted");
    }
}

#[tokio::test]
async fn a_restarted_xem_reconnects_without_a_join_key() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let (mut xem, id) = enrolled_xem(&router, "xem-restart").await;
        let key_id = router.agent(&id).await["join_key_id"].as_str().unwrap().to_string();
        let used_at = router.join_key(&key_id).await["used_at"].clone();
        let curve_before = std::fs::read(xem.curve_key_path()).unwrap();

        let status = xem.stop_with_sigterm();
        assert!(status.success(), "SIGTERM is a clean stop: {status}\n{}", xem.logs());
        router.wait_agent_status(&id, "disconnected", AGENT_DEADLINE).await;
        let hellos = router.metric(MESH_FRAMES[0]).await;

        xem.restart();
        let agent = router.wait_agent_status(&id, "active", AGENT_DEADLINE).await;
        assert!(xem.stderr().contains("no join key needed"), "{}", xem.stderr());
        assert_eq!(xem.identity().unwrap()["agent_id"], id.as_str(), "same identity");
        assert_eq!(std::fs::read(xem.curve_key_path()).unwrap(), curve_before, "same key");
        // Its first lease renewal may arrive before its Hello: both come.
        eventually("the restarted XEM's hello", AGENT_DEADLINE, || async {
            (router.metric(MESH_FRAMES[0]).await > hellos).then_some(())
        })
        .await;
        // Not enrolled again: one agent, the key used once, by it, at the same time.
        let agents = router.all_agents().await;
        assert_eq!(agents.len(), 1, "[{}] {agents:?}", backend.name);
        assert_eq!(agents[0]["id"], id.as_str());
        assert_eq!(agent["join_key_id"], key_id.as_str());
        let key = router.join_key(&key_id).await;
        assert_eq!(key["used_by_agent"], id.as_str());
        assert_eq!(key["used_at"], used_at);
        assert_eq!(router.audit("action=agent.enroll").await.len(), 1);
    }
}

#[tokio::test]
async fn a_restarted_router_keeps_its_agents_and_they_reconnect() {
    for backend in backends().await {
        let mut router = Router::start_with(&backend, RouterOptions::fixed_mesh_port()).await;
        let mesh_before = router.mesh_addr();
        let (mut a, a_id) = enrolled_xem(&router, "xem-a").await;
        let (mut b, b_id) = enrolled_xem(&router, "xem-b").await;
        let agents_before = router.all_agents().await;

        let status = router.stop_with_sigterm();
        assert!(status.success(), "{status}");
        let stopped_at = SystemTime::now();
        router.restart().await;
        assert_eq!(router.mesh_addr(), mesh_before, "the same mesh endpoint");

        // Each XEM reconnects by itself, without a restart, and renews its lease again.
        for id in [&a_id, &b_id] {
            let agent = eventually(
                &format!("[{}] {id} to renew its lease with the new router", backend.name),
                AGENT_DEADLINE,
                || async {
                    let agent = router.agent(id).await;
                    let fresh = agent["last_heartbeat_at"].is_string()
                        && rfc3339(&agent["last_heartbeat_at"]) > stopped_at;
                    (fresh && agent["status"] == "active").then_some(agent)
                },
            )
            .await;
            assert_eq!(agent["status"], "active");
        }
        a.assert_running();
        b.assert_running();
        // Every agent kept, as it was (its lease time, and the replica holding its session:
        // each start of a router is a new replica, aside).
        let strip = |mut agents: Vec<serde_json::Value>| {
            for agent in &mut agents {
                agent["last_heartbeat_at"] = json!(null);
                agent["replica_id"] = json!(null);
                agent["status"] = json!(null);
            }
            agents
        };
        assert_eq!(strip(router.all_agents().await), strip(agents_before), "[{}]", backend.name);
        eventually("both XEMs to say hello to the new router", AGENT_DEADLINE, || async {
            (router.metric(MESH_FRAMES[0]).await >= 2.0).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn the_fleet_view_shows_each_agent_and_its_lease() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let key = router
            .mint_join_key_with(
                json!({ "name": "view-key", "region": "eu-west", "agent_role": "inference" }),
            )
            .await;
        let mut xem = Xem::enroll(&router, "xem-view", &key.token);
        let id = xem.wait_enrolled().await;
        let agent = router.wait_agent_status(&id, "active", AGENT_DEADLINE).await;

        let table = xeroctl(&router, &["agents"]).success();
        assert_eq!(
            table.header(&["ID", "NAME", "STATUS"]),
            ["ID", "NAME", "STATUS", "ROLE", "REGION", "LAST_HEARTBEAT"]
        );
        let row = table.row(&id);
        assert_eq!(row[..5], [id.as_str(), "xem-view", "active", "inference", "eu-west"]);
        assert!(humantime::parse_rfc3339(&row[5]).is_ok(), "a heartbeat time: {row:?}");

        // One agent: the manifest summary and the CURVE key fingerprint (SHA-256 of the raw
        // public key, first 16 bytes, hex), computed here from the XEM's own key file.
        let show = xeroctl(&router, &["agents", &id]).success();
        let public = xem.curve_keys(&xem.curve_key_path()).public_bytes();
        let fingerprint = hex::encode(&Sha256::digest(public)[..16]);
        assert_eq!(show.field("curve key fingerprint"), fingerprint);
        assert_eq!(agent["curve_key_fingerprint"], fingerprint.as_str());
        // The XEM's (empty) manifest, hashed as its canonical JSON.
        let manifest_hash =
            hex::encode(Sha256::digest(br#"{"version":1,"tools":[],"workspaces":[]}"#));
        assert_eq!(
            show.field("manifest"),
            format!("version 1, 0 tools, 0 workspaces, sha256 {manifest_hash}")
        );
        assert_eq!(show.field("status"), "active");
        assert_eq!(show.field("name"), "xem-view");
        assert_eq!(show.field("join key"), key.id);
        assert_eq!(show.field("lease interval"), "200 ms");

        let list = xeroctl(&router, &["-o", "json", "agents"]).success().json();
        assert_eq!(list["data"][0]["id"], id.as_str(), "{list}");
        let one = xeroctl(&router, &["-o", "json", "agents", &id]).success().json();
        assert_eq!(one["curve_key_fingerprint"], fingerprint.as_str(), "{one}");
        assert_eq!(one["manifest_hash"], manifest_hash.as_str(), "{one}");

        // The XEM dies without a word: the agent is disconnected once three leases are missed.
        let last = router.agent(&id).await["last_heartbeat_at"].clone();
        xem.kill();
        let killed = Instant::now();
        let agent = router.wait_agent_status(&id, "disconnected", AGENT_DEADLINE).await;
        // Three missed leases of 200 ms: not at once, and not much later either (the status
        // is computed at each read, so only the polling adds to the 600 ms).
        let after = killed.elapsed();
        assert!(
            after >= Duration::from_millis(300) && after < Duration::from_secs(5),
            "disconnected {after:?} after the kill, expected about 600 ms"
        );
        assert!(rfc3339(&agent["last_heartbeat_at"]) >= rfc3339(&last), "{agent}");
        let table = xeroctl(&router, &["agents"]).success();
        assert_eq!(table.row(&id)[2], "disconnected", "{}", table.stdout);

        // Revoked agents leave the default listing.
        router.revoke_agent(&id).await.assert_status(200);
        let table = xeroctl(&router, &["agents"]).success();
        assert!(table.rows_with(&id).is_empty(), "{}", table.stdout);
        let table = xeroctl(&router, &["agents", "--include-revoked"]).success();
        assert_eq!(table.row(&id)[2], "revoked", "{}", table.stdout);
    }
}
