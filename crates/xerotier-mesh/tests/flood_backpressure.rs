//! An agent with a valid key floods the endpoint: the I/O thread stops reading it (its own
//! transport holds it back) while another agent's frames and answers keep flowing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;
use common::hello;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::{Instant, timeout};
use xerotier_core::{SeededEntropy, SystemClock};
use xerotier_credentials::CurveKeyPair;
use xerotier_mesh::{
    AllowList, ClientEvent, ClientKeys, InboundCap, MeshClient, MeshEvent, MeshServer,
    configure_client_socket,
};
use xerotier_proto::mesh::{self, Frame};

const FLOOD: Duration = Duration::from_secs(2);
/// What the I/O thread may read of a flood per millisecond (its `OVER_CAP_PER_PAUSE`).
const OVER_CAP_PER_MS: u64 = 16;

/// Sends hellos as fast as the socket takes them (blocking while its queue is full) until
/// `stop`; returns how many were taken.
fn flood(endpoint: String, keys: ClientKeys, stop: Arc<AtomicBool>) -> u64 {
    let context = zmq::Context::new();
    let socket = context.socket(zmq::DEALER).unwrap();
    configure_client_socket(&socket, &keys).unwrap();
    socket.set_sndtimeo(50).unwrap();
    socket.connect(&endpoint).unwrap();
    let payload = mesh::encode(&hello("agt_flood"));
    let mut sent = 0;
    while !stop.load(Ordering::Relaxed) {
        if socket.send(&payload, 0).is_ok() {
            sent += 1;
        }
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_agent_is_read_slowly_and_held_back_while_another_is_answered() {
    let server_keys = CurveKeyPair::generate(&SeededEntropy::new(300));
    let allow = AllowList::default();
    let cap = InboundCap { per_second: 100, burst: 100, clock: Arc::new(SystemClock) };
    let (server, handle, mut events) =
        MeshServer::start_capped("tcp://127.0.0.1:0", &server_keys, allow.clone(), Some(cap))
            .unwrap();
    let server_public = server_keys.public_z85();
    let flooder = CurveKeyPair::generate(&SeededEntropy::new(301));
    let honest = CurveKeyPair::generate(&SeededEntropy::new(302));
    allow.allow(flooder.public_bytes(), "agt_flood");
    allow.allow(honest.public_bytes(), "agt_honest");

    // The application: answers every honest hello with a lease acknowledgement, counts what
    // reached it from the flooder.
    let reached_from_flood = Arc::new(AtomicU64::new(0));
    let app_counter = reached_from_flood.clone();
    let app = tokio::spawn(async move {
        let mut seq = 0;
        while let Some(event) = events.recv().await {
            if let MeshEvent::Frame { agent_id, routing_id, .. } = event {
                if agent_id == "agt_flood" {
                    app_counter.fetch_add(1, Ordering::Relaxed);
                } else {
                    seq += 1;
                    handle.send(&routing_id, &Frame::LeaseAck { seq }).unwrap();
                }
            }
        }
    });

    let (client, mut client_events) =
        MeshClient::connect(server.endpoint(), &ClientKeys::new(&honest, &server_public)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flood_thread = {
        let (endpoint, keys) =
            (server.endpoint().to_string(), ClientKeys::new(&flooder, &server_public));
        let stop = stop.clone();
        std::thread::spawn(move || flood(endpoint, keys, stop))
    };

    let started = Instant::now();
    let drops_before = server.cap_drops();
    let mut answered: u64 = 0;
    let mut slowest = Duration::ZERO;
    while started.elapsed() < FLOOD {
        let asked = Instant::now();
        client.send(&hello("agt_honest")).unwrap();
        let answer = timeout(Duration::from_secs(5), async {
            loop {
                match client_events.recv().await {
                    Some(ClientEvent::Frame(Frame::LeaseAck { .. })) => return,
                    Some(_) => {}
                    None => panic!("the honest client's channel closed"),
                }
            }
        })
        .await;
        assert!(answer.is_ok(), "the honest agent's hello went unanswered under the flood");
        answered += 1;
        slowest = slowest.max(asked.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap();
    let read_over_cap = server.cap_drops() - drops_before;
    stop.store(true, Ordering::Relaxed);
    let flood_sent = flood_thread.join().unwrap();

    assert!(answered >= 20, "only {answered} honest round trips in {elapsed_ms} ms");
    assert!(slowest < Duration::from_secs(1), "slowest honest round trip {slowest:?}");
    // Read-and-dropped at most OVER_CAP_PER_MS per millisecond (each pause is a millisecond,
    // cut short only by answers going out), so the rest of the flood waits in the flooder's
    // own queues. Without the pause the I/O thread reads everything the flooder sends.
    let bound = OVER_CAP_PER_MS * (elapsed_ms + 1_000) + answered * OVER_CAP_PER_MS;
    assert!(
        read_over_cap <= bound,
        "read {read_over_cap} flood messages over the cap in {elapsed_ms} ms (bound {bound}; the flooder sent {flood_sent})"
    );
    assert!(read_over_cap > 0, "the flood never went over the cap: the test measured nothing");
    // The application saw no more of the flood than the cap lets through.
    let reached = reached_from_flood.load(Ordering::Relaxed);
    assert!(reached <= 100 + 100 * (elapsed_ms / 1_000 + 2), "{reached} flood frames reached");
    assert!(server.is_healthy());
    drop(client);
    drop(server);
    app.abort();
}
