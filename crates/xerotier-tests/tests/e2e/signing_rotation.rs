//! The agent's Ed25519 signing key rotates with its CURVE key (issue 14 part 3), end to end: a
//! real router and XEM, `xeroctl`, and a raw CURVE client that forges acknowledgements the way
//! an attacker holding a key would. Every test runs against SQLite and PostgreSQL.
//!
//! What holds: after a promoted rotation the agent's signing key changed on disk and in the
//! router's view, the next rotation is proved by the new key, the replaced key proves nothing,
//! an acknowledgement must bind a valid new signing key, and a kill -9 of the XEM at any step of
//! the rotation ends with the agent's two keys matching what the router holds.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use xerotier_core::OsEntropy;
use xerotier_credentials::{CurveKeyPair, SigningKeyPair, fingerprint};
use xerotier_proto::mesh::{Frame, RotateAckPayload, encode_ack_payload, rotate_ack_signing_input};

use crate::fleet_harness::{Handshake, RawMesh};
use crate::harness::{Router, backends, eventually, xeroctl};
use crate::rotation::{
    ACK_TIMEOUT_S, Rotations, SETTLE, TestXem, accepted, assert_working, now_rfc3339,
    request_id_of, start_router, wait_failed,
};

// ---------------------------------------------------------------------------------------------
// The agent's signing key, on disk and in the router's view
// ---------------------------------------------------------------------------------------------

fn signing_path(xem: &TestXem) -> PathBuf {
    xem.dir.path().join("signing.hex")
}

/// The signing key the XEM holds in its key file.
fn signing_key(xem: &TestXem) -> SigningKeyPair {
    let text = std::fs::read_to_string(signing_path(xem)).expect("reading the signing key file");
    SigningKeyPair::from_secret_hex(text.trim()).expect("an Ed25519 secret key")
}

fn signing_fingerprint(key: &SigningKeyPair) -> String {
    fingerprint(&key.public_bytes())
}

fn pending_path(xem: &TestXem) -> PathBuf {
    PathBuf::from(format!("{}.pending", xem.key_path().display()))
}

/// The new signing key's public half in the pending file, if there is one.
fn pending_signing_public(xem: &TestXem) -> Option<String> {
    let text = std::fs::read_to_string(pending_path(xem)).ok()?;
    let file: Value = serde_json::from_str(&text).expect("a pending key file");
    let secret = file["signing_secret_hex"].as_str().expect("the pending signing key");
    Some(SigningKeyPair::from_secret_hex(secret).expect("a pending signing key").public_hex())
}

/// The router's view and the XEM's key files agree on both keys, and no promotion is left
/// half done on disk.
async fn assert_keys_match(router: &Router, xem: &TestXem) -> Value {
    let agent = router.agent(&xem.agent_id).await;
    assert_eq!(
        agent["curve_public_key"],
        xem.key().public_z85().as_str(),
        "[{}] {agent}",
        router.backend
    );
    assert_eq!(
        agent["signing_key_fingerprint"],
        signing_fingerprint(&signing_key(xem)).as_str(),
        "[{}] the router's signing key is the one in the key file: {agent}",
        router.backend
    );
    agent
}

/// The agent's two keys, and when its signing key last changed, are as `before` had them.
fn assert_keys_unchanged(before: &Value, after: &Value, what: &str) {
    for field in ["curve_public_key", "signing_key_fingerprint", "signing_key_rotated_at"] {
        assert_eq!(after[field], before[field], "{what}: {field} unchanged");
    }
}

/// Requests a rotation and waits for it to end; returns the rotation.
async fn rotate(router: &Router, agent_id: &str, reason: &str) -> Value {
    let request_id = request_id_of(&router.rotate(agent_id, reason).await);
    router.wait_terminal(agent_id, &request_id).await
}

// ---------------------------------------------------------------------------------------------
// A raw client on the agent's CURVE key: what an attacker holding keys would send
// ---------------------------------------------------------------------------------------------

/// A raw CURVE client on the agent's current key, its hello sent (the XEM is stopped first, so
/// the router sees one session: a restart, not a clone).
fn impersonate(router: &Router, xem: &TestXem) -> RawMesh {
    let client = RawMesh::curve(&router.mesh_addr(), &xem.key(), &xem.router_key);
    client.send(&Frame::Hello {
        agent_id: xem.agent_id.clone(),
        xem_version: "signing-rotation-forger".to_string(),
        manifest_hash: "0".repeat(64),
        manifest_version: 1,
    });
    assert_eq!(
        client.handshake(SETTLE),
        Handshake::Succeeded,
        "[{}] the agent's key",
        router.backend
    );
    client
}

/// The next rotation instruction the router sends the client: (request id, nonce).
/// The instruction for `request_id`. An instruction of an earlier request may still be queued
/// (the router's sweep re-sends an unanswered instruction as a safety net): it is skipped.
fn instruction(client: &RawMesh, request_id: &str) -> (String, String) {
    let deadline = std::time::Instant::now() + SETTLE;
    while std::time::Instant::now() < deadline {
        if let Some(Frame::RotateCurve { request_id: got, nonce }) =
            client.recv(Duration::from_millis(200))
            && got == request_id
        {
            return (got, nonce);
        }
    }
    panic!("no rotation instruction for {request_id} within {SETTLE:?}");
}

/// An acknowledgement of `(request_id, nonce)` binding `new_signing_public`, signed by `signer`.
fn forged_ack(
    agent_id: &str,
    (request_id, nonce): &(String, String),
    new_signing_public: &str,
    signer: &SigningKeyPair,
) -> Frame {
    let payload = encode_ack_payload(&RotateAckPayload {
        agent_id: agent_id.to_string(),
        request_id: request_id.clone(),
        nonce: nonce.clone(),
        new_public_key: CurveKeyPair::generate(&OsEntropy).public_z85(),
        new_signing_public_key: new_signing_public.to_string(),
    });
    let signature = signer.sign(&rotate_ack_signing_input(&payload)).to_vec();
    Frame::RotateAck { payload, signature }
}

// ---------------------------------------------------------------------------------------------
// The honest path, and the forgeries next to it
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn curve_rotate_rotates_the_signing_key_and_the_replaced_key_proves_nothing() {
    for backend in backends().await {
        let router = start_router(&backend, ACK_TIMEOUT_S).await;
        let mut xem = TestXem::enroll(&router, "xem-signing", None).await;
        let id = xem.agent_id.clone();
        let enrolled = signing_key(&xem);
        let agent = assert_keys_match(&router, &xem).await;
        assert!(agent["signing_key_rotated_at"].is_null(), "never rotated: {agent}");

        // `xeroctl agents curve-rotate`: both keys move.
        let out = xeroctl(&router, &["agents", "curve-rotate", &id, "--reason", "drill"]).success();
        let request_id = out.stdout.lines().next().and_then(|l| l.strip_prefix("request_id: "));
        let request_id = request_id.expect("the request id line").to_string();
        let rotation = router.wait_terminal(&id, &request_id).await;
        assert_eq!(rotation["status"], "promoted", "[{}] {rotation}", backend.name);
        assert_working(&router, &xem, rotation["completed_at"].as_str().unwrap()).await;
        let first = signing_key(&xem);
        assert_ne!(first.public_hex(), enrolled.public_hex(), "the key file holds a new key");
        assert!(!pending_path(&xem).exists(), "nothing left pending");
        let agent = assert_keys_match(&router, &xem).await;
        assert_eq!(agent["signing_key_rotated_at"], rotation["completed_at"], "{agent}");
        let shown = xeroctl(&router, &["agents", &id]).success().stdout;
        let line = shown.lines().find(|l| l.starts_with("signing key fingerprint"));
        assert!(
            line.is_some_and(|l| l.ends_with(&signing_fingerprint(&first))),
            "[{}] `xeroctl agents <id>` shows the new fingerprint:\n{shown}",
            backend.name
        );
        assert!(shown.contains("last signing key rotation"), "{shown}");
        // The promotion's records carry fingerprints, never the keys.
        let events = router.events(&id).await;
        let promoted = events
            .iter()
            .find(|e| e["type"] == "rotation_promoted" && e["request_id"] == request_id.as_str())
            .expect("the promotion event");
        assert_eq!(
            promoted["details"]["new_signing_key_fingerprint"],
            signing_fingerprint(&first).as_str()
        );
        let audit = router.audit(&format!("action=agent.curve_rotate&target_id={id}")).await;
        let records = serde_json::to_string(&(events, audit)).unwrap();
        for key in [&enrolled, &first] {
            assert!(!records.contains(&key.public_hex()), "a signing key in a record: {records}");
        }

        // A second rotation is proved by the new key (the XEM signs with it) and succeeds.
        let rotation = rotate(&router, &id, "again").await;
        assert_eq!(rotation["status"], "promoted", "[{}] {rotation}", backend.name);
        assert_working(&router, &xem, rotation["completed_at"].as_str().unwrap()).await;
        let second = signing_key(&xem);
        assert_ne!(second.public_hex(), first.public_hex());
        assert_keys_match(&router, &xem).await;

        // The attacker's side: the XEM is stopped, a client on its CURVE key answers.
        xem.stop();
        let client = impersonate(&router, &xem);
        let before = router.agent(&id).await;
        let forgeries = [
            (
                "signed by the replaced key",
                SigningKeyPair::generate(&OsEntropy).public_hex(),
                &first,
            ),
            (
                "signed by the enrolled key",
                SigningKeyPair::generate(&OsEntropy).public_hex(),
                &enrolled,
            ),
            ("binding a malformed key", "zz".repeat(32), &second),
            ("binding a too short key", "ab".repeat(16), &second),
            ("binding the current key again", second.public_hex(), &second),
        ];
        for (what, bound, signer) in forgeries {
            let request_id = request_id_of(&router.rotate(&id, what).await);
            let instructed = instruction(&client, &request_id);
            assert_eq!(instructed.0, request_id);
            client.send(&forged_ack(&id, &instructed, &bound, signer));
            wait_failed(&router, &id, &request_id, "signature mismatch", what).await;
            assert_keys_unchanged(&before, &router.agent(&id).await, what);
        }
        drop(client);

        // The agent comes back on its keys and keeps working; its next rotation succeeds.
        let since = now_rfc3339();
        xem.restart();
        assert_working(&router, &xem, &since).await;
        assert_eq!(signing_key(&xem).public_hex(), second.public_hex(), "its key file untouched");
        let rotation = rotate(&router, &id, "after the forgeries").await;
        assert_eq!(rotation["status"], "promoted", "[{}] {rotation}", backend.name);
        assert_working(&router, &xem, rotation["completed_at"].as_str().unwrap()).await;
        assert_keys_match(&router, &xem).await;
    }
}

/// The first line of the router's log that contains `needle`, once there is one.
async fn logged_line(router: &Router, needle: &str) -> String {
    eventually(&format!("{needle:?} logged"), SETTLE, || async {
        router.logs().lines().find(|l| l.contains(needle)).map(str::to_string)
    })
    .await
}

/// An acknowledgement that comes after its rotation ended (a slow agent, or a resend) changes
/// nothing, and the router's log names the rotation it answered, how and when that one ended;
/// one whose payload names no rotation of this agent is logged as before; one sent again
/// after its rotation was promoted is logged as such.
#[tokio::test]
async fn an_acknowledgement_after_its_rotation_ended_changes_nothing_and_is_logged_with_it() {
    for backend in backends().await {
        let router = start_router(&backend, 2).await;
        let mut xem = TestXem::enroll(&router, "xem-late-ack", None).await;
        let id = xem.agent_id.clone();
        let signer = signing_key(&xem);
        xem.stop();
        let client = impersonate(&router, &xem);
        let request_id = request_id_of(&router.rotate(&id, "late").await);
        let instructed = instruction(&client, &request_id);
        wait_failed(&router, &id, &request_id, "acknowledgement timeout", "no ack").await;
        let before = router.agent(&id).await;
        let fresh = SigningKeyPair::generate(&OsEntropy).public_hex();
        // Well signed, well bound: only late.
        client.send(&forged_ack(&id, &instructed, &fresh, &signer));
        let line =
            logged_line(&router, "rotation acknowledgement for a rotation that already ended")
                .await;
        for expected in [request_id.as_str(), "failed", "acknowledgement timeout", &id] {
            assert!(line.contains(expected), "[{}] {expected} in: {line}", backend.name);
        }
        // A payload that names nothing.
        client
            .send(&Frame::RotateAck { payload: b"not a payload".to_vec(), signature: vec![0; 64] });
        logged_line(&router, "rotation acknowledgement with no rotation pending; ignored").await;
        assert_keys_unchanged(&before, &router.agent(&id).await, "a late acknowledgement");
        assert_eq!(router.rotation(&id, &request_id).await["status"], "failed");

        // An answer sent twice: the first promotes, the second changes nothing more and is
        // logged as a resend of the promoted rotation.
        let request_id = request_id_of(&router.rotate(&id, "twice").await);
        let instructed = instruction(&client, &request_id);
        let ack = forged_ack(&id, &instructed, &fresh, &signer);
        client.send(&ack);
        let rotation = router.wait_terminal(&id, &request_id).await;
        assert_eq!(rotation["status"], "promoted", "[{}] {rotation}", backend.name);
        let promoted = router.agent(&id).await;
        client.send(&ack);
        let line = logged_line(&router, "sent again after its rotation was promoted").await;
        assert!(line.contains(&request_id), "[{}] {line}", backend.name);
        assert_keys_unchanged(&promoted, &router.agent(&id).await, "an answer sent twice");
    }
}

// ---------------------------------------------------------------------------------------------
// kill -9 of the XEM at each step: its two keys end matching the router's
// ---------------------------------------------------------------------------------------------

/// The XEM aborts at `fault` during a rotation and starts again without it: whatever the
/// rotation's end, the agent works on the keys the router holds, and its next rotation (proved
/// by the signing key it now has) is promoted.
async fn xem_crash_ends_with_matching_keys(fault: &str, must_promote: bool) {
    for backend in backends().await {
        let router = start_router(&backend, ACK_TIMEOUT_S).await;
        let mut xem = TestXem::enroll(&router, &format!("xem-sig-{fault}"), Some(fault)).await;
        let id = xem.agent_id.clone();
        let (old_curve, old_signing) = (xem.key_hex(), signing_key(&xem).public_hex());
        let request_id = request_id_of(&router.rotate(&id, "crash drill").await);
        xem.wait_crash().await;
        let pending = pending_signing_public(&xem);
        assert!(pending.is_some(), "[{}] {fault}: both new keys stored first", backend.name);
        if fault == "crash_between_key_files" {
            // Killed with the new CURVE key in place and the old signing key still on disk.
            assert_eq!(xem.key().public_z85(), xem.pending_public().unwrap());
            assert_ne!(xem.key_hex(), old_curve);
            assert_eq!(signing_key(&xem).public_hex(), old_signing);
        }
        let since = now_rfc3339();
        xem.restart();
        let rotation = router.wait_terminal(&id, &request_id).await;
        if must_promote {
            assert_eq!(rotation["status"], "promoted", "[{}] {fault}: {rotation}", backend.name);
        }
        assert_working(&router, &xem, &since).await;
        eventually(&format!("[{}] {fault}: the keys to match", backend.name), SETTLE, || async {
            let agent = router.agent(&id).await;
            let matches = agent["signing_key_fingerprint"]
                == signing_fingerprint(&signing_key(&xem)).as_str()
                && agent["curve_public_key"] == xem.key().public_z85().as_str();
            matches.then_some(())
        })
        .await;
        if rotation["status"] == "promoted" {
            assert_eq!(
                signing_key(&xem).public_hex(),
                pending.unwrap(),
                "the pending key took over"
            );
            assert!(!pending_path(&xem).exists(), "[{}] {fault}: promotion finished", backend.name);
            eventually("the old CURVE key to be refused", SETTLE, || async {
                (!accepted(&router, &xem, &old_curve)).then_some(())
            })
            .await;
        } else {
            assert_eq!(signing_key(&xem).public_hex(), old_signing);
        }
        let next = rotate(&router, &id, "after the crash").await;
        assert_eq!(next["status"], "promoted", "[{}] {fault}: {next}", backend.name);
        assert_working(&router, &xem, next["completed_at"].as_str().unwrap()).await;
        assert_keys_match(&router, &xem).await;
        let agent = router.agent(&id).await;
        assert_eq!(agent["status"], json!("active"));
    }
}

#[tokio::test]
async fn signing_key_xem_killed_between_ack_and_promotion_ends_with_matching_keys() {
    xem_crash_ends_with_matching_keys("crash_after_ack", false).await;
}

#[tokio::test]
async fn signing_key_xem_killed_after_the_promotion_ends_with_matching_keys() {
    xem_crash_ends_with_matching_keys("crash_after_promotion", true).await;
}

#[tokio::test]
async fn signing_key_xem_killed_between_the_two_key_files_ends_with_matching_keys() {
    xem_crash_ends_with_matching_keys("crash_between_key_files", true).await;
}
