//! Signals sent to the process (SIGHUP on every `systemctl reload`) must not disturb the mesh
//! threads: a signal landing on one used to interrupt its `zmq::poll` with EINTR, which ended
//! the thread (an agent exited; a router would have stopped its mesh).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, pthread_sigmask};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::timeout;
use xerotier_core::SeededEntropy;
use xerotier_credentials::CurveKeyPair;
use xerotier_mesh::{AllowList, ClientEvent, ClientKeys, MeshClient, MeshEvent, MeshServer};
use xerotier_proto::mesh::Frame;

const SIGNALS: u64 = 300;
const BURST: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_sighups_leaves_both_ends_of_the_mesh_working() {
    // Handled like the daemons do, so the default action (terminate) does not apply.
    let mut hangups = signal(SignalKind::hangup()).unwrap();
    // Linux hands a process-directed signal to the main thread when it can; in the daemons
    // that thread is often busy, so take it out of the running and let the kernel choose
    // among the runtime's workers and the mesh threads, as it does there.
    let mut hup = SigSet::empty();
    hup.add(Signal::SIGHUP);
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&hup), None).unwrap();
    // Started from a worker, the mesh threads inherit a mask without SIGHUP blocked.
    let ((server, handle, mut events), server_keys, client_keys) = tokio::spawn(async {
        let server_keys = CurveKeyPair::generate(&SeededEntropy::new(7));
        let client_keys = CurveKeyPair::generate(&SeededEntropy::new(8));
        let allow = AllowList::default();
        allow.allow(client_keys.public_bytes(), "agt_sig");
        let server = MeshServer::start("tcp://127.0.0.1:0", &server_keys, allow).unwrap();
        (server, server_keys, client_keys)
    })
    .await
    .unwrap();
    let endpoint = server.endpoint().to_string();
    let server_public = server_keys.public_z85();
    let (client, mut client_events) = tokio::spawn(async move {
        MeshClient::connect(&endpoint, &ClientKeys::new(&client_keys, &server_public)).unwrap()
    })
    .await
    .unwrap();

    let renewal = |seq| Frame::LeaseRenewal {
        agent_id: "agt_sig".into(),
        seq,
        in_flight: Vec::new(),
        manifest_hash: "h".into(),
        manifest_version: 1,
    };
    let me = Pid::this();
    for seq in 1..=SIGNALS {
        // Back to back: a thread with a signal still pending does not take the next one, so
        // a burst spreads over every thread that does not block it.
        for _ in 0..BURST {
            kill(me, Signal::SIGHUP).unwrap();
        }
        client.send(&renewal(seq)).unwrap();
        tokio::task::yield_now().await;
    }
    // Every renewal arrives, in order, and the server can still answer.
    let mut expected = 1;
    let mut routing = Vec::new();
    timeout(Duration::from_secs(20), async {
        while expected <= SIGNALS {
            match events.recv().await {
                Some(MeshEvent::Frame {
                    frame: Frame::LeaseRenewal { seq, .. },
                    routing_id,
                    ..
                }) => {
                    assert_eq!(seq, expected);
                    expected += 1;
                    routing = routing_id;
                }
                Some(MeshEvent::Fatal(message)) => panic!("the server's mesh failed: {message}"),
                Some(_) => {}
                None => panic!("the server's mesh thread stopped"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("renewal {expected} of {SIGNALS} never arrived"));
    assert!(server.is_healthy(), "the server's mesh threads survived");
    handle.send(&routing, &Frame::LeaseAck { seq: SIGNALS }).unwrap();
    timeout(Duration::from_secs(10), async {
        loop {
            match client_events.recv().await {
                Some(ClientEvent::Frame(Frame::LeaseAck { seq })) if seq == SIGNALS => return,
                Some(_) => {}
                None => panic!("the client's mesh thread stopped"),
            }
        }
    })
    .await
    .expect("the client still receives");
    assert!(hangups.recv().await.is_some(), "the signals went to the application's handler");
}
