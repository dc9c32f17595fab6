//! The CURVE mesh endpoint from outside: clients the router does not know never reach the
//! application, whatever they claim; a known agent cannot speak for another.

use xerotier_core::OsEntropy;
use xerotier_credentials::CurveKeyPair;
use xerotier_proto::mesh::Frame;

use crate::fleet_harness::{
    AGENT_DEADLINE, Handshake, RawMesh, enroll, enrolled_xem, hello, jwt_parts, lease_renewal,
};
use crate::harness::{Router, STARTUP_DEADLINE, backends, eventually};

const HELLOS: &str = r#"xerotier_router_mesh_frames_total{kind="hello"}"#;
const LEASES: &str = r#"xerotier_router_mesh_frames_total{kind="lease_renewal"}"#;
const UNAUTHORIZED: &str = r#"xerotier_router_mesh_frames_dropped_total{reason="unauthorized"}"#;
const SPOOFED: &str = r#"xerotier_router_mesh_frames_dropped_total{reason="spoofed"}"#;

/// The mesh counters a forged frame would move.
async fn counters(router: &Router) -> [f64; 4] {
    [
        router.metric(HELLOS).await,
        router.metric(LEASES).await,
        router.metric(UNAUTHORIZED).await,
        router.metric(SPOOFED).await,
    ]
}

#[tokio::test]
async fn unknown_curve_clients_never_reach_the_application() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let mesh = router.mesh_addr();
        let (mut xem, victim) = enrolled_xem(&router, "victim").await;
        let router_key = xem.identity().unwrap()["router_curve_key"].as_str().unwrap().to_string();
        // A second agent, enrolled over HTTP with keys the test holds.
        let witness_key = router.mint_join_key("witness").await;
        assert_eq!(
            jwt_parts(&witness_key.token).1["router_curve_key"],
            router_key.as_str(),
            "the join key carries the router's CURVE key"
        );
        let (resp, witness_keys) = enroll(&router, &witness_key.token, "witness").await;
        resp.assert_status(200);
        let witness = resp.json()["agent_id"].as_str().unwrap().to_string();

        // Nothing but the forgeries below could move the victim's lease now.
        assert!(xem.stop_with_sigterm().success(), "{}", xem.logs());
        let before = router.wait_agent_status(&victim, "disconnected", AGENT_DEADLINE).await;
        let last_heartbeat = before["last_heartbeat_at"].clone();
        assert!(last_heartbeat.is_string(), "{before}");
        let [hellos, leases, unauthorized, spoofed] = counters(&router).await;
        assert!(hellos >= 1.0, "the real XEM said hello");

        // A random CURVE key: refused at the handshake (ZAP 400).
        let stranger = RawMesh::curve(&mesh, &CurveKeyPair::generate(&OsEntropy), &router_key);
        stranger.send(&hello(&victim));
        stranger.send(&lease_renewal(&victim, 1));
        assert_eq!(stranger.handshake(STARTUP_DEADLINE), Handshake::FailedAuth(400));
        assert_eq!(stranger.recv(std::time::Duration::ZERO), None);
        // No CURVE at all: the mechanisms do not match, nothing is exchanged.
        let plain = RawMesh::plain(&mesh);
        plain.send(&hello(&victim));
        plain.send_bytes(b"not even a frame");
        let outcome = plain.handshake(STARTUP_DEADLINE);
        assert!(
            matches!(outcome, Handshake::FailedProtocol(_) | Handshake::FailedNoDetail(_)),
            "[{}] a client without CURVE: {outcome:?}",
            backend.name
        );
        // The right key of a live agent, claiming the victim: the session is accepted, the
        // frame is not.
        let impostor = RawMesh::curve(&mesh, &witness_keys.curve, &router_key);
        impostor.send(&hello(&victim));
        impostor.send(&lease_renewal(&victim, 2));
        assert_eq!(impostor.handshake(STARTUP_DEADLINE), Handshake::Succeeded);
        eventually("the spoofed frames to be dropped", AGENT_DEADLINE, || async {
            (router.metric(SPOOFED).await >= spoofed + 2.0).then_some(())
        })
        .await;
        // Its own frames go through: a marker that everything sent before was handled.
        impostor.send(&hello(&witness));
        impostor.send(&lease_renewal(&witness, 3));
        assert_eq!(impostor.recv(AGENT_DEADLINE), Some(Frame::LeaseAck { seq: 3 }));
        eventually("the witness's hello to be counted", AGENT_DEADLINE, || async {
            (router.metric(HELLOS).await >= hellos + 1.0).then_some(())
        })
        .await;

        assert_eq!(
            counters(&router).await,
            [hellos + 1.0, leases + 1.0, unauthorized, spoofed + 2.0],
            "[{}] hello, lease, unauthorized, spoofed: only the witness's own frames counted",
            backend.name
        );
        let after = router.agent(&victim).await;
        assert_eq!(after["status"], "disconnected", "{after}");
        assert_eq!(after["last_heartbeat_at"], last_heartbeat, "the victim's lease never moved");
        eventually("the witness's lease to be recorded", AGENT_DEADLINE, || async {
            router.agent(&witness).await["last_heartbeat_at"].is_string().then_some(())
        })
        .await;
    }
}
