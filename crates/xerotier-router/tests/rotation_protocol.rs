//! The router's half of CURVE rotation, driven directly with an injected clock and real keys on
//! both store backends: acknowledgement checks, deadlines, and the one-in-flight rule.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// test code
// A deadline on polling a background write; the code under test runs on the ManualClock.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;

use secrecy::ExposeSecret;
use xerotier_core::{ManualClock, SeededEntropy};
use xerotier_credentials::{CurveKeyPair, SigningKeyPair};
use xerotier_proto::ErrorCode;
use xerotier_proto::agents::{CapabilityManifest, EnrollRequest};
use xerotier_proto::join_keys::CreateJoinKeyRequest;
use xerotier_proto::mesh::{RotateAckPayload, encode_ack_payload, rotate_ack_signing_input};
use xerotier_router::AppState;
use xerotier_router::audit::{Actor, AuditContext};
use xerotier_router::fleet::FleetSettings;
use xerotier_store::Store;
use xerotier_testkit::TestDb;

const START: i64 = 1_790_000_000_000;
const TIMEOUT_MS: u64 = 5_000;

/// Builds a forged acknowledgement: (fixture, request id, nonce, new key) → (payload, signature).
type Forge = dyn Fn(&Fixture, &str, &str, &CurveKeyPair) -> (Vec<u8>, Vec<u8>);

struct Fixture {
    _db: TestDb,
    state: AppState,
    clock: Arc<ManualClock>,
    admin: AuditContext,
    agent_id: String,
    signing: SigningKeyPair,
}

async fn fixtures() -> Vec<Fixture> {
    let mut out = Vec::new();
    for db in TestDb::all().await {
        let store = Store::connect(db.url()).await.unwrap();
        let clock = Arc::new(ManualClock::new(START));
        let settings =
            FleetSettings { curve_rotation_ack_timeout_ms: TIMEOUT_MS, ..FleetSettings::default() };
        let entropy: xerotier_core::SharedEntropy = Arc::new(SeededEntropy::new(7));
        let sealer = xerotier_seal::Sealer::new(
            xerotier_seal::MasterKey::generate(entropy.as_ref()),
            entropy.clone(),
        );
        let state =
            AppState::load(store, clock.clone(), entropy, sealer, settings, Default::default())
                .await
                .unwrap();
        // In-process: no replica task holds a lease for this state.
        state.replication.run_standalone();
        let admin = AuditContext::new(
            Actor { key_id: "key_admin".into(), name: "admin".into() },
            None,
            None,
        );
        let context = AuditContext::default();
        let request = CreateJoinKeyRequest {
            name: "xem".into(),
            region: None,
            router_addr: Some("tcp://127.0.0.1:5555".into()),
            ttl_seconds: Some(600),
            agent_role: None,
            workspaces: None,
            require_approval: None,
        };
        let issued = state.join_keys.create(&admin, request).await.unwrap();
        let entropy = SeededEntropy::new(99);
        let signing = SigningKeyPair::generate(&entropy);
        let enroll = EnrollRequest {
            join_key: secrecy::ExposeSecret::expose_secret(&issued.token).to_string(),
            registration_name: "xem-1".into(),
            curve_public_key: CurveKeyPair::generate(&entropy).public_z85(),
            signing_public_key: signing.public_hex(),
            manifest: CapabilityManifest::default(),
            lease_renewal_interval_ms: None,
        };
        let enrolled = state.enrollment.enroll(&context, enroll).await.unwrap();
        out.push(Fixture { _db: db, state, clock, admin, agent_id: enrolled.agent_id, signing });
    }
    out
}

impl Fixture {
    async fn request(&self) -> xerotier_proto::rotation::RotationView {
        xerotier_router::fleet::views::rotation(
            self.state.rotations.request(&self.admin, &self.agent_id, None).await.unwrap(),
        )
    }

    async fn status(&self, request_id: &str) -> (String, Option<String>) {
        let view = self.state.rotations.get(&self.agent_id, request_id).await.unwrap();
        (view.status, view.failure_reason)
    }

    async fn nonce(&self, request_id: &str) -> String {
        self.state.store.rotation(request_id).await.unwrap().unwrap().nonce
    }

    fn ack(
        &self,
        request_id: &str,
        nonce: &str,
        key: &CurveKeyPair,
        signer: &SigningKeyPair,
    ) -> (Vec<u8>, Vec<u8>) {
        // A fresh signing key, derived from the new CURVE key so a re-built ack is the same.
        let next_signing =
            SigningKeyPair::from_secret_hex(key.secret_hex().expose_secret()).unwrap();
        self.ack_binding(request_id, nonce, key, &next_signing.public_hex(), signer)
    }

    /// An acknowledgement binding `new_signing_public` as the agent's next signing key.
    fn ack_binding(
        &self,
        request_id: &str,
        nonce: &str,
        key: &CurveKeyPair,
        new_signing_public: &str,
        signer: &SigningKeyPair,
    ) -> (Vec<u8>, Vec<u8>) {
        let payload = encode_ack_payload(&RotateAckPayload {
            agent_id: self.agent_id.clone(),
            request_id: request_id.into(),
            nonce: nonce.into(),
            new_public_key: key.public_z85(),
            new_signing_public_key: new_signing_public.into(),
        });
        let signature = signer.sign(&rotate_ack_signing_input(&payload)).to_vec();
        (payload, signature)
    }

    async fn current_key(&self) -> String {
        self.state.store.agent(&self.agent_id).await.unwrap().unwrap().curve_public_key
    }
}

#[tokio::test]
async fn valid_acknowledgement_promotes_and_keeps_the_old_key_until_seen() {
    for f in fixtures().await {
        let old_key = f.current_key().await;
        let rotation = f.request().await;
        assert_eq!(rotation.status.as_str(), "pending");
        assert_eq!(rotation.reason, "scheduled", "the default reason");
        assert_eq!(rotation.monitor, format!("/v1/management/agents/{}/events", f.agent_id));
        let new_key = CurveKeyPair::generate(&SeededEntropy::new(1));
        let (payload, signature) =
            f.ack(&rotation.request_id, &f.nonce(&rotation.request_id).await, &new_key, &f.signing);
        f.state.rotations.on_ack(&f.agent_id, &payload, &signature).await.unwrap();
        assert_eq!(f.status(&rotation.request_id).await, ("promoted".into(), None));
        assert_eq!(f.current_key().await, new_key.public_z85());
        let allowed: Vec<_> =
            f.state.store.live_agent_keys().await.unwrap().into_iter().map(|(_, k)| k).collect();
        assert!(
            allowed.contains(&old_key) && allowed.contains(&new_key.public_z85()),
            "old key still accepted"
        );
        f.state.rotations.on_seen(&f.agent_id, &new_key.public_bytes()).await;
        let allowed: Vec<_> =
            f.state.store.live_agent_keys().await.unwrap().into_iter().map(|(_, k)| k).collect();
        assert_eq!(allowed, [new_key.public_z85()], "seen on the new key: the old one is retired");
        let kinds: Vec<_> = f
            .state
            .store
            .list_events(&f.agent_id, &xerotier_store::PageRequest { limit: 50, after: None })
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|e| e.event_type)
            .collect();
        let rotation_kinds: Vec<_> =
            kinds.iter().filter(|k| k.starts_with("rotation_")).map(String::as_str).collect();
        assert_eq!(
            rotation_kinds,
            [
                "rotation_requested",
                "rotation_acknowledged",
                "rotation_promoted",
                "rotation_completed"
            ]
        );
    }
}

#[tokio::test]
async fn forged_acknowledgements_end_in_signature_mismatch_and_change_no_key() {
    for f in fixtures().await {
        let forgeries: [(&str, Box<Forge>); 4] = [
            (
                "wrong signing key",
                Box::new(|f, id, nonce, key| {
                    f.ack(id, nonce, key, &SigningKeyPair::generate(&SeededEntropy::new(5)))
                }),
            ),
            ("wrong nonce", Box::new(|f, id, _, key| f.ack(id, "guessed", key, &f.signing))),
            (
                "tampered payload",
                Box::new(|f, id, nonce, key| {
                    let (mut payload, signature) = f.ack(id, nonce, key, &f.signing);
                    let last = payload.len() - 1;
                    payload[last] ^= 1;
                    (payload, signature)
                }),
            ),
            (
                "another request's id",
                Box::new(|f, _, nonce, key| {
                    f.ack("0123456789abcdef0123456789abcdef", nonce, key, &f.signing)
                }),
            ),
        ];
        for (what, forge) in forgeries {
            let before = f.current_key().await;
            let rotation = f.request().await;
            let nonce = f.nonce(&rotation.request_id).await;
            let (payload, signature) = forge(
                &f,
                &rotation.request_id,
                &nonce,
                &CurveKeyPair::generate(&SeededEntropy::new(6)),
            );
            f.state.rotations.on_ack(&f.agent_id, &payload, &signature).await.unwrap();
            assert_eq!(
                f.status(&rotation.request_id).await,
                ("failed".into(), Some("signature mismatch".into())),
                "{what}"
            );
            assert_eq!(f.current_key().await, before, "{what}: the old key stays in force");
        }
    }
}

#[tokio::test]
async fn a_replayed_acknowledgement_from_an_earlier_rotation_fails_the_current_one() {
    for f in fixtures().await {
        let first = f.request().await;
        let key = CurveKeyPair::generate(&SeededEntropy::new(8));
        let (payload, signature) =
            f.ack(&first.request_id, &f.nonce(&first.request_id).await, &key, &f.signing);
        f.state.rotations.on_ack(&f.agent_id, &payload, &signature).await.unwrap();
        assert_eq!(f.status(&first.request_id).await.0, "promoted");
        f.state.rotations.on_seen(&f.agent_id, &key.public_bytes()).await;
        let second = f.request().await;
        f.state.rotations.on_ack(&f.agent_id, &payload, &signature).await.unwrap();
        assert_eq!(
            f.status(&second.request_id).await,
            ("failed".into(), Some("signature mismatch".into()))
        );
        assert_eq!(f.current_key().await, key.public_z85());
    }
}

#[tokio::test]
async fn silence_ends_in_acknowledgement_timeout_exactly_at_the_deadline() {
    for f in fixtures().await {
        let rotation = f.request().await;
        f.clock.advance_millis(TIMEOUT_MS as i64 - 1);
        f.state.rotations.sweep(xerotier_core::Clock::now_millis(f.clock.as_ref())).await.unwrap();
        assert_eq!(f.status(&rotation.request_id).await.0, "pending");
        f.clock.advance_millis(1);
        f.state.rotations.sweep(xerotier_core::Clock::now_millis(f.clock.as_ref())).await.unwrap();
        assert_eq!(
            f.status(&rotation.request_id).await,
            ("failed".into(), Some("acknowledgement timeout".into()))
        );
        // A late acknowledgement changes nothing.
        let key = CurveKeyPair::generate(&SeededEntropy::new(9));
        let (payload, signature) =
            f.ack(&rotation.request_id, &f.nonce(&rotation.request_id).await, &key, &f.signing);
        f.state.rotations.on_ack(&f.agent_id, &payload, &signature).await.unwrap();
        assert_eq!(f.status(&rotation.request_id).await.0, "failed");
        assert_ne!(f.current_key().await, key.public_z85());
    }
}

#[tokio::test]
async fn one_rotation_in_flight_and_revoked_agents_fail() {
    for f in fixtures().await {
        let first = f.request().await;
        let err =
            f.state.rotations.request(&f.admin, &f.agent_id, Some("again")).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::RotationInFlight);
        assert!(err.to_string().contains(&first.request_id), "the conflict names the first: {err}");
        f.state.agents.revoke_credentials(&f.admin, &f.agent_id, Some("incident")).await.unwrap();
        assert_eq!(
            f.status(&first.request_id).await,
            ("failed".into(), Some("revoked agent".into())),
            "revocation ends the pending one"
        );
        let after = f.request().await;
        assert_eq!(
            (after.status.as_str(), after.failure_reason.as_deref()),
            ("failed", Some("revoked agent"))
        );
    }
}

#[tokio::test]
async fn every_rotation_is_audited_with_operator_reason_and_outcome() {
    for f in fixtures().await {
        let rotation = f
            .state
            .rotations
            .request(
                &AuditContext { request_id: Some("http-req-1".into()), ..f.admin.clone() },
                &f.agent_id,
                Some("compliance"),
            )
            .await
            .unwrap();
        f.clock.advance_millis(TIMEOUT_MS as i64);
        f.state.rotations.sweep(xerotier_core::Clock::now_millis(f.clock.as_ref())).await.unwrap();
        let filter = xerotier_store::AuditFilter {
            action: Some("agent.curve_rotate".into()),
            ..Default::default()
        };
        let records = f
            .state
            .store
            .list_audit(&filter, &xerotier_store::PageRequest { limit: 50, after: None })
            .await
            .unwrap()
            .items;
        assert_eq!(records.len(), 2, "requested and ended");
        for record in &records {
            assert_eq!(record.actor_key_id.as_deref(), Some("key_admin"));
            assert_eq!(record.actor_name.as_deref(), Some("admin"));
            assert_eq!(record.reason.as_deref(), Some("compliance"));
            assert_eq!(record.request_id.as_deref(), Some("http-req-1"));
            assert!(record.details.as_deref().unwrap().contains(&rotation.id));
        }
        assert_eq!(records[0].outcome, "success");
        assert_eq!(records[1].outcome, "failed");
        assert!(records[1].details.as_deref().unwrap().contains("acknowledgement timeout"));
    }
}

impl Fixture {
    async fn signing_key(&self) -> (String, Option<i64>) {
        let agent = self.state.store.agent(&self.agent_id).await.unwrap().unwrap();
        (agent.signing_public_key, agent.signing_key_rotated_at)
    }
}

#[tokio::test]
async fn promotion_replaces_the_signing_key_and_the_old_one_proves_nothing_after() {
    for f in fixtures().await {
        let old_signing = f.signing.public_hex();
        assert_eq!(f.signing_key().await, (old_signing.clone(), None), "enrolled, never rotated");
        let next = SigningKeyPair::generate(&SeededEntropy::new(21));
        let key = CurveKeyPair::generate(&SeededEntropy::new(22));
        let first = f.request().await;
        let nonce = f.nonce(&first.request_id).await;
        f.clock.advance_millis(10);
        let (payload, signature) =
            f.ack_binding(&first.request_id, &nonce, &key, &next.public_hex(), &f.signing);
        f.state.rotations.on_ack(&f.agent_id, &payload, &signature).await.unwrap();
        assert_eq!(f.status(&first.request_id).await.0, "promoted");
        assert_eq!(f.signing_key().await, (next.public_hex(), Some(START + 10)));
        let record = f.state.store.rotation(&first.request_id).await.unwrap().unwrap();
        assert_eq!(record.new_signing_public_key, Some(next.public_hex()));
        let view = f.state.agents.get(&f.agent_id).await.unwrap();
        let view = xerotier_router::fleet::views::agent(view);
        assert_eq!(
            view.signing_key_fingerprint,
            xerotier_credentials::fingerprint(&next.public_bytes())
        );
        assert_eq!(
            view.signing_key_rotated_at.as_deref(),
            Some(xerotier_core::format_rfc3339(START + 10).as_str())
        );
        f.state.rotations.on_seen(&f.agent_id, &key.public_bytes()).await;

        // The old signing key, stolen, signs the next acknowledgement: refused, nothing moves.
        let second = f.request().await;
        let stolen = f.ack_binding(
            &second.request_id,
            &f.nonce(&second.request_id).await,
            &CurveKeyPair::generate(&SeededEntropy::new(23)),
            &SigningKeyPair::generate(&SeededEntropy::new(24)).public_hex(),
            &f.signing,
        );
        f.state.rotations.on_ack(&f.agent_id, &stolen.0, &stolen.1).await.unwrap();
        assert_eq!(
            f.status(&second.request_id).await,
            ("failed".into(), Some("signature mismatch".into()))
        );
        assert_eq!(f.current_key().await, key.public_z85());
        assert_eq!(f.signing_key().await.0, next.public_hex());

        // The new signing key proves the next rotation.
        let third = f.request().await;
        let (payload, signature) = f.ack(
            &third.request_id,
            &f.nonce(&third.request_id).await,
            &CurveKeyPair::generate(&SeededEntropy::new(25)),
            &next,
        );
        f.state.rotations.on_ack(&f.agent_id, &payload, &signature).await.unwrap();
        assert_eq!(f.status(&third.request_id).await.0, "promoted");
        assert_ne!(f.signing_key().await.0, next.public_hex());

        // Events and audit records name the keys by fingerprint, never by their bytes.
        let events = f
            .state
            .store
            .list_events(&f.agent_id, &xerotier_store::PageRequest { limit: 50, after: None })
            .await
            .unwrap()
            .items;
        let promoted = events.iter().find(|e| e.event_type == "rotation_promoted").unwrap();
        let details = promoted.details.as_deref().unwrap();
        assert!(details.contains(&xerotier_credentials::fingerprint(&next.public_bytes())));
        let filter = xerotier_store::AuditFilter {
            action: Some("agent.curve_rotate".into()),
            ..Default::default()
        };
        let audit = f
            .state
            .store
            .list_audit(&filter, &xerotier_store::PageRequest { limit: 50, after: None })
            .await
            .unwrap()
            .items;
        let all: Vec<String> = events
            .iter()
            .filter_map(|e| e.details.clone())
            .chain(audit.iter().filter_map(|a| a.details.clone()))
            .collect();
        assert!(all.iter().any(|d| d.contains("new_signing_key_fingerprint")));
        for text in &all {
            assert!(!text.contains(&next.public_hex()), "a signing key in a record: {text}");
            assert!(!text.contains(&old_signing), "a signing key in a record: {text}");
        }
    }
}

#[tokio::test]
async fn an_ack_binding_a_malformed_weak_or_reused_signing_key_is_refused() {
    for f in fixtures().await {
        let mut weak = [0u8; 32];
        weak[0] = 1; // the identity point: a small-order (weak) key
        let cases = [
            ("empty", String::new()),
            ("not hex", "z".repeat(64)),
            ("too short", "ab".repeat(16)),
            ("weak point", hex::encode(weak)),
            ("same as the current one", f.signing.public_hex()),
        ];
        for (what, bound) in cases {
            let before = (f.current_key().await, f.signing_key().await);
            let rotation = f.request().await;
            let (payload, signature) = f.ack_binding(
                &rotation.request_id,
                &f.nonce(&rotation.request_id).await,
                &CurveKeyPair::generate(&SeededEntropy::new(31)),
                &bound,
                &f.signing,
            );
            f.state.rotations.on_ack(&f.agent_id, &payload, &signature).await.unwrap();
            assert_eq!(
                f.status(&rotation.request_id).await,
                ("failed".into(), Some("signature mismatch".into())),
                "{what}"
            );
            assert_eq!((f.current_key().await, f.signing_key().await), before, "{what}");
        }
    }
}
