//! Changing the key a running endpoint serves (the router's mesh key rotation, SPEC §9), with
//! real CURVE clients over loopback: after the rekey a client on the old server key never gets
//! a frame through, one on the new key does, and a rekey under traffic leaves the endpoint up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;
use common::hello;

use std::time::Duration;

use tokio::sync::mpsc::Receiver;
use tokio::time::{Instant, timeout};
use xerotier_core::SeededEntropy;
use xerotier_credentials::CurveKeyPair;
use xerotier_mesh::{AllowList, ClientEvent, ClientKeys, MeshClient, MeshEvent, MeshServer};

const WAIT: Duration = Duration::from_secs(10);

fn client(
    endpoint: &str,
    allow: &AllowList,
    seed: u64,
    agent_id: &str,
    server_public: &str,
) -> (MeshClient, Receiver<ClientEvent>) {
    let keys = CurveKeyPair::generate(&SeededEntropy::new(seed));
    allow.allow(keys.public_bytes(), agent_id);
    MeshClient::connect(endpoint, &ClientKeys::new(&keys, server_public)).unwrap()
}

/// The agent ids of the frames that reach the application within `within`.
async fn frames_from(events: &mut Receiver<MeshEvent>, within: Duration) -> Vec<String> {
    let until = Instant::now() + within;
    let mut seen = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout_at(until, events.recv()).await {
        if let MeshEvent::Frame { agent_id, .. } = event {
            seen.push(agent_id);
        }
    }
    seen
}

async fn wait_applied(rekey: &xerotier_mesh::MeshRekey, number: u64) {
    timeout(WAIT, async {
        while rekey.applied() < number {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the rekey was never applied");
}

#[tokio::test]
async fn after_a_rekey_the_old_server_key_is_refused_and_the_new_one_works() {
    let old = CurveKeyPair::generate(&SeededEntropy::new(1));
    let new = CurveKeyPair::generate(&SeededEntropy::new(2));
    let allow = AllowList::default();
    let (server, _handle, mut events) =
        MeshServer::start("tcp://127.0.0.1:0", &old, allow.clone()).unwrap();
    let endpoint = server.endpoint().to_string();

    let (on_old, _old_events) = client(&endpoint, &allow, 10, "agt_old", &old.public_z85());
    on_old.send(&hello("agt_old")).unwrap();
    assert_eq!(frames_from(&mut events, Duration::from_millis(800)).await, ["agt_old"]);

    let number = server.rekey().serve(&new);
    wait_applied(&server.rekey(), number).await;
    assert!(server.is_healthy());
    assert_eq!(server.endpoint(), endpoint, "the same endpoint, re-bound");

    // The session on the old key ended with the old socket; its reconnects cannot complete a
    // handshake with a server that no longer holds the old key.
    on_old.send(&hello("agt_old")).unwrap();
    let (on_new, mut new_events) = client(&endpoint, &allow, 11, "agt_new", &new.public_z85());
    on_new.send(&hello("agt_new")).unwrap();
    timeout(WAIT, async { while new_events.recv().await != Some(ClientEvent::Connected) {} })
        .await
        .expect("a client on the new key completes its handshake");
    let (late_old, _late) = client(&endpoint, &allow, 12, "agt_late", &old.public_z85());
    late_old.send(&hello("agt_late")).unwrap();
    let seen = frames_from(&mut events, Duration::from_millis(1_500)).await;
    assert!(seen.iter().all(|a| a == "agt_new"), "only the new key gets in: {seen:?}");
    assert!(seen.contains(&"agt_new".to_string()), "{seen:?}");
}

#[tokio::test]
async fn a_rekey_under_traffic_keeps_the_endpoint_serving() {
    let first = CurveKeyPair::generate(&SeededEntropy::new(3));
    let second = CurveKeyPair::generate(&SeededEntropy::new(4));
    let allow = AllowList::default();
    let (server, _handle, mut events) =
        MeshServer::start("tcp://127.0.0.1:0", &first, allow.clone()).unwrap();
    let endpoint = server.endpoint().to_string();
    let (busy, _busy_events) = client(&endpoint, &allow, 20, "agt_busy", &first.public_z85());
    for _ in 0..2_000 {
        busy.send(&hello("agt_busy")).unwrap();
    }
    // Back and forth, while the busy client's frames are in flight.
    let mut last = 0;
    for keys in [&second, &first, &second] {
        last = server.rekey().serve(keys);
    }
    wait_applied(&server.rekey(), last).await;
    assert!(server.is_healthy(), "the I/O thread survived");
    let (after, _after_events) = client(&endpoint, &allow, 21, "agt_after", &second.public_z85());
    after.send(&hello("agt_after")).unwrap();
    let seen = frames_from(&mut events, Duration::from_millis(1_500)).await;
    assert!(seen.contains(&"agt_after".to_string()), "served after the rekeys");
    assert!(server.is_healthy());
}
