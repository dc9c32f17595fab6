//! The expiry a workspace credential file carries, read by a real XEM and recorded by the
//! router: a kubeconfig whose client certificate expires at a known time, and a bare JWT.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use crate::exec::{CREDENTIAL_FILE, exec_fleet};
use crate::harness::{Router, backends, eventually};

/// 2030-01-02T03:04:05Z
const JWT_EXP: i64 = 1_893_553_445;

/// A kubeconfig whose client certificate's notAfter is 2031-05-06T00:00:00Z.
fn kubeconfig_with_cert() -> String {
    let mut params = rcgen::CertificateParams::new(vec!["deployer".to_string()]).unwrap();
    params.not_after = rcgen::date_time_ymd(2031, 5, 6);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: prod\nclusters:\n- name: prod\n  cluster:\n    server: https://k8s.example:6443\ncontexts:\n- name: prod\n  context:\n    cluster: prod\n    user: deployer\nusers:\n- name: deployer\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        STANDARD.encode(cert.pem()),
        STANDARD.encode(key.serialize_pem()),
    )
}

fn jwt(exp: i64) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(json!({ "sub": "ci", "exp": exp }).to_string());
    format!("{header}.{payload}.c2lnbmF0dXJl\n")
}

/// The agent's workspace credential row of the posture report.
async fn reported_row(router: &Router, agent_id: &str) -> Value {
    eventually("the credential report", Duration::from_secs(15), || async {
        let path =
            format!("/v1/management/credentials?agent_id={agent_id}&kind=workspace_credential");
        let list = router.get_json(&path).await;
        let file = list["credentials"].as_array()?.first()?.clone();
        assert_eq!(file["credentials_ref"], json!(CREDENTIAL_FILE), "{list}");
        Some(file)
    })
    .await
}

async fn reported_expiry(router: &Router, agent_id: &str) -> Value {
    reported_row(router, agent_id).await["expires_at"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_xem_reports_the_expiry_its_credential_files_carry() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let (_kube_xem, kube_agent) =
            exec_fleet(&router, "xem-kubecert", &kubeconfig_with_cert(), |_| {}).await;
        let (_jwt_xem, jwt_agent) = exec_fleet(&router, "xem-jwt", &jwt(JWT_EXP), |_| {}).await;
        let (_plain_xem, plain_agent) =
            exec_fleet(&router, "xem-plain", "apiVersion: v1\nuser: opaque-token\n", |_| {}).await;
        assert_eq!(
            reported_expiry(&router, &kube_agent).await,
            json!("2031-05-06T00:00:00.000Z"),
            "[{}] kubeconfig certificate notAfter",
            backend.name
        );
        assert_eq!(
            reported_expiry(&router, &jwt_agent).await,
            json!("2030-01-02T03:04:05.000Z"),
            "[{}] JWT exp",
            backend.name
        );
        assert_eq!(reported_expiry(&router, &plain_agent).await, Value::Null, "[{}]", backend.name);
        // The posture follows the file's own expiry: a token past its `exp` is `expired`
        // whatever the file's age, one far from it is `ok`, both judged by the rule `expiry`.
        let kube = reported_row(&router, &kube_agent).await;
        assert_eq!((kube["state"].as_str(), kube["rule"].as_str()), (Some("ok"), Some("expiry")));
        let (_old_xem, old_agent) =
            exec_fleet(&router, "xem-old-jwt", &jwt(1_577_836_800), |_| {}).await;
        let old = reported_row(&router, &old_agent).await;
        assert_eq!(old["expires_at"], json!("2020-01-01T00:00:00.000Z"), "{old}");
        assert_eq!(
            (old["state"].as_str(), old["rule"].as_str()),
            (Some("expired"), Some("expiry"))
        );
    }
}
