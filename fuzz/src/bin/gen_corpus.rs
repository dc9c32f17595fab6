//! Writes the seed corpora under `fuzz/corpus/<target>/` from real inputs: every mesh frame
//! variant, rotation acknowledgement payloads, enrollment requests, join tokens (good, expired,
//! another router's, `alg: none`, HS256, garbage), the example tool bundles and workspaces, and
//! the schemas the tests use. Run from anywhere:
//! `cargo +nightly run --manifest-path fuzz/Cargo.toml --bin gen_corpus`.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use xerotier_core::SeededEntropy;
use xerotier_credentials::{CurveKeyPair, JoinTokenSigner, SigningKeyPair};
use xerotier_fuzz::{NOW, SIGNER};
use xerotier_proto::agents::{CapabilityManifest, ManifestTool, ManifestWorkspace};
use xerotier_proto::join_keys::{JOIN_KEY_AUDIENCE, JOIN_KEY_ISSUER, JoinKeyClaims};
use xerotier_proto::mesh::{self, Frame, RotateAckPayload};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("corpus directory");
    std::fs::write(dir.join(name), bytes).expect("corpus file");
}

fn schemas() -> Vec<Value> {
    vec![
        json!({"type": "object"}),
        json!({
            "type": "object",
            "properties": {
                "namespace": { "type": "string", "minLength": 1, "maxLength": 8 },
                "replicas": { "type": "integer", "minimum": 0, "maximum": 10 },
                "ratio": { "type": "number" },
                "mode": { "enum": ["fast", "safe"] },
                "dry_run": { "type": "boolean" },
                "labels": { "type": "array", "items": { "type": "string" } },
                "nothing": { "type": "null" }
            },
            "required": ["namespace"],
            "additionalProperties": false
        }),
        json!({"type": "object", "properties": {"x": {"pattern": "a+"}}}),
        json!({"type": "object", "properties": {"seconds": {"type": "integer", "minimum": 0,
            "maximum": 3600, "description": "how long", "title": "t", "default": 1}}}),
    ]
}

fn manifest() -> CapabilityManifest {
    CapabilityManifest {
        version: 3,
        tools: vec![ManifestTool {
            name: "kubectl-get".into(),
            description: "kubectl get".into(),
            risk: "read".into(),
            timeout_seconds: 30,
            args_schema: schemas()[1].clone(),
        }],
        workspaces: vec![ManifestWorkspace {
            id: "kubernetes-prod".into(),
            kind: "kubernetes".into(),
            credentials_ref: Some("kubernetes-prod.yaml".into()),
        }],
    }
}

fn claims(exp: i64) -> JoinKeyClaims {
    JoinKeyClaims {
        iss: JOIN_KEY_ISSUER.into(),
        aud: JOIN_KEY_AUDIENCE.into(),
        jti: "jk_01HZY3V8W2".into(),
        iat: NOW / 1000 - 60,
        exp,
        name: "xem-fleet-02".into(),
        region: Some("us-east".into()),
        role: "execution".into(),
        router_addr: "tcp://router:5555".into(),
        router_curve_key: CurveKeyPair::generate(&SeededEntropy::new(9)).public_z85(),
        workspaces: vec!["kubernetes-prod".into()],
        require_approval: false,
        tls_ca: None,
    }
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

fn tokens() -> Vec<(&'static str, String)> {
    let good = claims(NOW / 1000 + 3600);
    let body = b64(&serde_json::to_value(&good).expect("claims"));
    let other =
        JoinTokenSigner::new(&SigningKeyPair::generate(&SeededEntropy::new(2))).expect("signer");
    let mut wrong_aud = good.clone();
    wrong_aud.aud = "someone-else".into();
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: Some(SIGNER.kid().into()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &good,
        &jsonwebtoken::EncodingKey::from_secret(b"guessable"),
    )
    .expect("hs256");
    vec![
        ("good", SIGNER.issue(&good).expect("token")),
        ("expired", SIGNER.issue(&claims(NOW / 1000 - 1)).expect("token")),
        ("other_router", other.issue(&good).expect("token")),
        ("wrong_audience", SIGNER.issue(&wrong_aud).expect("token")),
        ("alg_none", format!("{}.{body}.", b64(&json!({"alg": "none", "kid": SIGNER.kid()})))),
        ("hs256", hs),
        ("garbage", "not-a-token".into()),
    ]
}

fn frames() -> Vec<Frame> {
    let signing = SigningKeyPair::generate(&SeededEntropy::new(3));
    let payload = mesh::encode_ack_payload(&RotateAckPayload {
        agent_id: "agt_01HZY3".into(),
        request_id: "rot_01HZY3".into(),
        nonce: "6f1c".repeat(8),
        new_public_key: CurveKeyPair::generate(&SeededEntropy::new(4)).public_z85(),
        new_signing_public_key: SigningKeyPair::generate(&SeededEntropy::new(5)).public_hex(),
    });
    let signature = signing.sign(&mesh::rotate_ack_signing_input(&payload)).to_vec();
    let result: xerotier_proto::invocation::InvocationResult = serde_json::from_value(json!({
        "invocation_id": "inv_1", "status": "succeeded", "exit_code": 0, "stdout": "ok\n",
        "stderr": "", "stdout_truncated": false, "stderr_truncated": true, "error": null,
        "started_at_ms": NOW, "finished_at_ms": NOW + 5, "credential_generation": 2
    }))
    .expect("invocation result");
    let report: xerotier_proto::workspace_credentials::ReloadReport =
        serde_json::from_value(json!({
            "trigger": "sighup", "ok": false, "files": [
                {"credentials_ref": "kubernetes-prod.yaml", "ok": true, "sha256": "ab",
                 "generation": 1, "mtime_ms": NOW, "error": null},
                {"credentials_ref": "x.yaml", "ok": false, "sha256": null,
                 "generation": 0, "mtime_ms": null, "error": "group-readable"}
            ]
        }))
        .expect("reload report");
    let m = manifest();
    vec![
        Frame::Hello {
            agent_id: "agt_1".into(),
            xem_version: "0.1.0".into(),
            manifest_hash: m.hash(),
            manifest_version: 3,
        },
        Frame::LeaseRenewal {
            agent_id: "agt_1".into(),
            seq: 7,
            in_flight: vec!["inv_1".into(), "inv_2".into()],
            manifest_hash: m.hash(),
            manifest_version: 3,
        },
        Frame::LeaseAck { seq: u64::MAX },
        Frame::Revoked { reason: "compromised".into() },
        Frame::RotateCurve { request_id: "rot_1".into(), nonce: "00ff".repeat(8) },
        Frame::RotateAck { payload, signature },
        Frame::RotationPromoted { request_id: "rot_1".into() },
        Frame::RotationFailed { request_id: "rot_1".into(), reason: "signature mismatch".into() },
        Frame::Manifest { agent_id: "agt_1".into(), manifest: m },
        Frame::Invoke {
            invocation_id: "inv_1".into(),
            tool: "kubectl-get".into(),
            workspace: "kubernetes-prod".into(),
            args_json: r#"{"namespace":"prod","replicas":3}"#.into(),
        },
        Frame::CancelInvocation { invocation_id: "inv_1".into() },
        Frame::InvocationStarted { invocation_id: "inv_1".into(), credential_generation: 2 },
        Frame::InvocationOutput {
            invocation_id: "inv_1".into(),
            stream: "stdout".into(),
            chunk: vec![0, 159, 146, 150, b'\n'],
        },
        Frame::InvocationFinished { result },
        Frame::InvocationRefused { invocation_id: "inv_1".into(), reason: "unknown tool".into() },
        Frame::ResultAck { invocation_id: "inv_1".into() },
        Frame::CredentialsReloaded { report },
        Frame::RouterKeys {
            keys: vec![mesh::RouterMeshKey {
                kid: "mks-0123456789abcdef".into(),
                public_key: CurveKeyPair::generate(&SeededEntropy::new(6)).public_z85(),
            }],
            tls_ca_pins: vec![format!("sha256:{}", "0a".repeat(32))],
        },
        Frame::RouterKeysAck {
            kids: vec!["mks-0123456789abcdef".into(), "tls-0a0a0a0a0a0a0a0a".into()],
        },
    ]
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let corpus = root.join("corpus");

    let dir = corpus.join("mesh_frame");
    for (i, frame) in frames().iter().enumerate() {
        let bytes = mesh::encode(frame);
        assert_eq!(mesh::decode(&bytes).as_ref(), Ok(frame));
        write(&dir, &format!("frame-{i:02}"), &bytes);
        if let Frame::RotateAck { payload, .. } = frame {
            write(&dir, "ack-payload", payload);
        }
    }

    let dir = corpus.join("enroll_request");
    let curve = CurveKeyPair::generate(&SeededEntropy::new(5)).public_z85();
    let signing = SigningKeyPair::generate(&SeededEntropy::new(6)).public_hex();
    for (name, token) in tokens() {
        write(&dir, &format!("token-{name}"), token.as_bytes());
        let request = json!({
            "join_key": token,
            "registration_name": "xem-fleet-02",
            "curve_public_key": curve,
            "signing_public_key": signing,
            "manifest": manifest(),
            "lease_renewal_interval_ms": 10_000,
        });
        write(&dir, &format!("request-{name}.json"), request.to_string().as_bytes());
    }
    assert!(SIGNER.verify(&tokens()[0].1, NOW).is_ok(), "the good token verifies");
    let minimal = json!({"join_key": "x", "registration_name": "a", "curve_public_key": "",
        "signing_public_key": "", "manifest": {"version": 1}, "lease_renewal_interval_ms": null});
    write(&dir, "request-minimal.json", minimal.to_string().as_bytes());

    let dir = corpus.join("manifest_and_schema");
    write(&dir, "manifest.json", serde_json::to_string(&manifest()).expect("json").as_bytes());
    let values = [
        json!({"namespace": "prod", "replicas": 3, "ratio": 0.5, "mode": "safe",
            "dry_run": true, "labels": ["a", "b"], "nothing": null}),
        json!({"namespace": "p", "replicas": 2.0}),
        json!({"namespace": 7, "nmespace": "x", "labels": ["a", 2]}),
    ];
    for (i, schema) in schemas().iter().enumerate() {
        for (j, value) in values.iter().enumerate() {
            let mut bytes = schema.to_string().into_bytes();
            bytes.push(0);
            bytes.extend_from_slice(value.to_string().as_bytes());
            write(&dir, &format!("schema-{i}-value-{j}"), &bytes);
        }
    }
    let examples = root.join("../examples/tools");
    for tool in ["kubectl-get", "noop", "sleep"] {
        let text = std::fs::read(examples.join(tool).join("tool.yaml")).expect("example tool");
        write(&dir, &format!("tool-{tool}.yaml"), &text);
    }
    let text = std::fs::read(examples.join("workspaces.yaml")).expect("example workspaces");
    write(&dir, "workspaces.yaml", &text);
    write(
        &dir,
        "workspaces-two.yaml",
        b"workspaces:\n  - {id: prod, type: kubernetes, credentials_ref: prod.yaml}\n  - {id: lab, type: aws, credentials_ref: prod.yaml}\n",
    );
    write(
        &dir,
        "tool-anchors.yaml",
        b"name: noop\nrisk: read\ntimeout_seconds: 5\ncommand: run.sh\nargs_schema: &s {type: object, properties: {a: {type: string}}}\ndescription: x\n",
    );
    println!("corpora written under {}", corpus.display());
}
