//! Real CURVE over loopback: who gets in, and what reaches the application.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;
use common::hello;

use std::time::Duration;

use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;
use xerotier_core::SeededEntropy;
use xerotier_credentials::CurveKeyPair;
use xerotier_mesh::{
    AllowList, ClientEvent, ClientKeys, DropReason, MeshClient, MeshEvent, MeshServer,
};
use xerotier_proto::mesh::Frame;

const WAIT: Duration = Duration::from_secs(10);

struct Setup {
    server: MeshServer,
    handle: xerotier_mesh::MeshHandle,
    events: Receiver<MeshEvent>,
    allow: AllowList,
    server_public: String,
}

fn setup() -> Setup {
    let server_keys = CurveKeyPair::generate(&SeededEntropy::new(100));
    let allow = AllowList::default();
    let (server, handle, events) =
        MeshServer::start("tcp://127.0.0.1:0", &server_keys, allow.clone()).unwrap();
    Setup { server, handle, events, allow, server_public: server_keys.public_z85() }
}

/// Connects a client; with `allow_as`, its key is allowed first (as enrollment does before an
/// agent ever connects).
fn connect_client(
    setup: &Setup,
    seed: u64,
    allow_as: Option<&str>,
) -> (CurveKeyPair, MeshClient, Receiver<ClientEvent>) {
    let keys = CurveKeyPair::generate(&SeededEntropy::new(seed));
    if let Some(agent_id) = allow_as {
        setup.allow.allow(keys.public_bytes(), agent_id);
    }
    let (client, events) =
        MeshClient::connect(setup.server.endpoint(), &ClientKeys::new(&keys, &setup.server_public))
            .unwrap();
    (keys, client, events)
}

async fn next_client_event(
    events: &mut Receiver<ClientEvent>,
    wanted: impl Fn(&ClientEvent) -> bool,
) -> ClientEvent {
    timeout(WAIT, async {
        loop {
            let event = events.recv().await.expect("client channel closed");
            if wanted(&event) {
                return event;
            }
        }
    })
    .await
    .expect("timed out waiting for a client event")
}

async fn next_mesh_event(events: &mut Receiver<MeshEvent>) -> MeshEvent {
    timeout(WAIT, events.recv()).await.expect("timed out waiting for a mesh event").expect("closed")
}

#[test]
fn libzmq_has_curve() {
    assert_eq!(zmq::has("curve"), Some(true));
}

#[tokio::test]
async fn allowed_agent_talks_both_ways() {
    let mut s = setup();
    let (keys, client, mut client_events) = connect_client(&s, 1, Some("agt_a"));
    client.send(&hello("agt_a")).unwrap();
    let MeshEvent::Frame { agent_id, curve_key, routing_id, frame } =
        next_mesh_event(&mut s.events).await
    else {
        panic!("expected a frame")
    };
    assert_eq!(
        (agent_id.as_str(), curve_key, frame),
        ("agt_a", keys.public_bytes(), hello("agt_a"))
    );
    s.handle.send(&routing_id, &Frame::LeaseAck { seq: 9 }).unwrap();
    let got = next_client_event(&mut client_events, |e| matches!(e, ClientEvent::Frame(_))).await;
    assert_eq!(got, ClientEvent::Frame(Frame::LeaseAck { seq: 9 }));
    assert!(s.server.is_healthy());
}

#[tokio::test]
async fn unknown_key_never_reaches_the_application() {
    let mut s = setup();
    let (_keys, client, mut client_events) = connect_client(&s, 2, None);
    client.send(&hello("agt_x")).unwrap();
    next_client_event(&mut client_events, |e| *e == ClientEvent::AuthRejected).await;
    // A known agent connecting afterwards is the first thing the application hears of.
    let (_known, known_client, _rx) = connect_client(&s, 3, Some("agt_k"));
    known_client.send(&hello("agt_k")).unwrap();
    match next_mesh_event(&mut s.events).await {
        MeshEvent::Frame { agent_id, .. } => assert_eq!(agent_id, "agt_k"),
        other => panic!("the unknown client got through: {other:?}"),
    }
}

#[tokio::test]
async fn removing_a_key_cuts_the_live_session() {
    let mut s = setup();
    let (_keys, client, _client_events) = connect_client(&s, 4, Some("agt_a"));
    client.send(&hello("agt_a")).unwrap();
    assert!(matches!(next_mesh_event(&mut s.events).await, MeshEvent::Frame { .. }));
    s.allow.remove_agent("agt_a");
    client.send(&hello("agt_a")).unwrap();
    match next_mesh_event(&mut s.events).await {
        MeshEvent::Dropped { reason, .. } => assert_eq!(reason, DropReason::Unauthorized),
        other => panic!("a revoked session's frame got through: {other:?}"),
    }
}

#[tokio::test]
async fn spoofed_and_malformed_frames_are_dropped_and_the_endpoint_survives() {
    let mut s = setup();
    let (_keys, client, _client_events) = connect_client(&s, 5, Some("agt_a"));
    client.send(&hello("agt_b")).unwrap();
    assert!(matches!(
        next_mesh_event(&mut s.events).await,
        MeshEvent::Dropped { reason: DropReason::Spoofed, .. }
    ));

    // Raw garbage on an authenticated session.
    let context = zmq::Context::new();
    let raw = context.socket(zmq::DEALER).unwrap();
    let raw_keys = CurveKeyPair::generate(&SeededEntropy::new(6));
    xerotier_mesh::configure_client_socket(&raw, &ClientKeys::new(&raw_keys, &s.server_public))
        .unwrap();
    s.allow.allow(raw_keys.public_bytes(), "agt_raw");
    raw.connect(s.server.endpoint()).unwrap();
    raw.send(&b"\xc1not msgpack"[..], 0).unwrap();
    assert!(matches!(
        next_mesh_event(&mut s.events).await,
        MeshEvent::Dropped { reason: DropReason::Malformed, .. }
    ));
    raw.send_multipart([&b"two"[..], &b"parts"[..]], 0).unwrap();
    assert!(matches!(
        next_mesh_event(&mut s.events).await,
        MeshEvent::Dropped { reason: DropReason::BadEnvelope, .. }
    ));

    client.send(&hello("agt_a")).unwrap();
    assert!(matches!(next_mesh_event(&mut s.events).await, MeshEvent::Frame { .. }));
    assert!(s.server.is_healthy());
}

#[tokio::test]
async fn a_client_without_curve_cannot_talk_to_the_endpoint() {
    let mut s = setup();
    let context = zmq::Context::new();
    let plain = context.socket(zmq::DEALER).unwrap();
    plain.set_linger(0).unwrap();
    plain.connect(s.server.endpoint()).unwrap();
    plain.send(xerotier_proto::mesh::encode(&hello("agt_a")), zmq::DONTWAIT).ok();
    // The only way to reach the application is an allowed CURVE key; prove the channel stays
    // silent by sending a real frame afterwards and seeing it arrive first.
    let (_keys, client, _rx) = connect_client(&s, 7, Some("agt_ok"));
    client.send(&hello("agt_ok")).unwrap();
    match next_mesh_event(&mut s.events).await {
        MeshEvent::Frame { agent_id, .. } => assert_eq!(agent_id, "agt_ok"),
        other => panic!("unexpected {other:?}"),
    }
}
