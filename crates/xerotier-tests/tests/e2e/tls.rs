//! HTTPS and pinned enrollment (issue 10 §1–2): the router's own CA by default, operator
//! certificates reloaded on SIGHUP, plain HTTP only on loopback, and an XEM that enrolls with
//! the router its join key pins and no one else: not a man in the middle with a CA of its own,
//! not one holding the router's stolen certificate key that rewrites the answer, not a
//! downgrade to plain HTTP.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use xerotier_core::SystemClock;
use xerotier_tls::{CertSource, ServerTls, ca_fingerprint};

use crate::fleet_harness::{Xem, enrolled_xem};
use crate::harness::{
    Api, Router, RouterOptions, STARTUP_DEADLINE, backends, binary, client_builder, eventually,
    wait_for_exit,
};

fn jwt_claims(token: &str) -> Value {
    crate::fleet_harness::jwt_parts(token).1
}

fn now_seconds() -> i64 {
    use xerotier_core::Clock;
    SystemClock.now_millis() / 1000
}

pub(crate) fn pin_of(ca_pem_file: &Path) -> String {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_file(ca_pem_file).expect("a PEM CA");
    ca_fingerprint(&der)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_serves_https_with_its_own_ca_and_join_keys_pin_it() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let tls = router.state_dir().join("tls");
        for (file, mode) in [("ca.pem", 0o644), ("server.key", 0o600)] {
            let meta = std::fs::metadata(tls.join(file)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
        }
        // The CA's key is in the store, sealed (SPEC §9), and nowhere in the state directory.
        assert!(!tls.join("ca.key").exists(), "no CA key file");
        // Every call of the suite goes over HTTPS trusting only this CA; plain HTTP to the same
        // port gets no answer, and a client trusting the system's CAs refuses the certificate.
        let plain = reqwest::Client::new()
            .get(format!("http://{}/healthz", router.base_url().trim_start_matches("https://")))
            .send()
            .await;
        assert!(!plain.is_ok_and(|r| r.status().is_success()), "no plain HTTP on the TLS port");
        let system = reqwest::Client::new().get(format!("{}/healthz", router.base_url())).send();
        assert!(system.await.is_err(), "a certificate from the router's own CA only");

        let key = router.mint_join_key("pinned").await;
        let claims = jwt_claims(&key.token);
        assert_eq!(claims["tls_ca"], json!(pin_of(&tls.join("ca.pem"))), "{claims}");
        assert_eq!(claims["router_addr"], json!(router.mesh_addr()));

        // A restart keeps the CA, so join keys minted before stay good.
        let mut router = router;
        router.restart().await;
        assert_eq!(json!(pin_of(&tls.join("ca.pem"))), claims["tls_ca"]);
        let (_xem, agent) = enrolled_xem(&router, "after-restart").await;
        assert!(agent.starts_with("agt_"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_refused_off_loopback_and_allowed_on_it() {
    let dir = tempfile::tempdir().unwrap();
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let mut child = Command::new(binary(crate::harness::ROUTER_BIN))
            .args(["--insecure-http", "--listen", listen, "--mesh-bind", "tcp://127.0.0.1:0"])
            .arg("--state-dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("err")).unwrap())
            .spawn()
            .unwrap();
        let status = wait_for_exit(&mut child, STARTUP_DEADLINE).expect("the router refuses");
        assert!(!status.success());
        let err = std::fs::read_to_string(dir.path().join("err")).unwrap();
        assert!(err.contains("not a loopback address"), "{err}");
        assert!(!dir.path().join("router.db").exists(), "refused before touching the store");
    }

    for backend in backends().await {
        let options = RouterOptions {
            extra_args: vec!["--insecure-http".into()],
            ..RouterOptions::default()
        };
        let router = Router::start_with(&backend, options).await;
        assert!(router.base_url().starts_with("http://"));
        assert!(!router.state_dir().join("tls").exists(), "no CA without TLS");
        let key = router.mint_join_key("plain").await;
        assert!(jwt_claims(&key.token).get("tls_ca").is_none(), "nothing to pin");
        let (_xem, agent) = enrolled_xem(&router, "plain-xem").await;
        assert!(agent.starts_with("agt_"));
    }
}

/// Issues a server certificate from a fresh private CA into `dir` and copies it to the
/// operator's file names; returns the CA's pin.
fn operator_material(dir: &Path, cert: &Path, key: &Path) -> String {
    let tls = ServerTls::load(
        CertSource::Generated {
            dir: dir.to_path_buf(),
            sans: vec!["localhost".into(), "127.0.0.1".into()],
        },
        now_seconds(),
    )
    .unwrap();
    std::fs::copy(dir.join("server.pem"), cert).unwrap();
    std::fs::copy(dir.join("server.key"), key).unwrap();
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).unwrap();
    tls.ca_pin()
}

async fn trusts(router: &Router, ca: &Path) -> bool {
    let client = client_builder(Some(ca)).timeout(Duration::from_secs(5)).build().unwrap();
    client.get(format!("{}/healthz", router.base_url())).send().await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_certificates_are_reloaded_on_sighup() {
    for backend in backends().await {
        let ops = tempfile::tempdir().unwrap();
        let (cert, key) = (ops.path().join("tls.crt"), ops.path().join("tls.key"));
        let (first, second) = (ops.path().join("ca-1"), ops.path().join("ca-2"));
        let first_pin = operator_material(&first, &cert, &key);
        let options = RouterOptions {
            extra_args: vec![
                "--tls-cert".into(),
                cert.display().to_string(),
                "--tls-key".into(),
                key.display().to_string(),
            ],
            ca_file: Some(first.join("ca.pem")),
            ..RouterOptions::default()
        };
        let router = Router::start_with(&backend, options).await;
        assert!(!router.state_dir().join("tls").exists(), "no CA of its own");
        assert!(trusts(&router, &first.join("ca.pem")).await);
        assert_eq!(
            jwt_claims(&router.mint_join_key("one").await.token)["tls_ca"],
            json!(first_pin)
        );

        // A broken file and SIGHUP: the router keeps serving the certificate it had.
        std::fs::write(&cert, "garbage").unwrap();
        router.send_sighup();
        eventually("the failed reload to be logged", Duration::from_secs(10), || async {
            router.logs().contains("TLS reload failed").then_some(())
        })
        .await;
        assert!(trusts(&router, &first.join("ca.pem")).await, "still the old certificate");

        // New files and SIGHUP: the new certificate from then on, no restart.
        let second_pin = operator_material(&second, &cert, &key);
        router.send_sighup();
        eventually("the new certificate", Duration::from_secs(10), || async {
            trusts(&router, &second.join("ca.pem")).await.then_some(())
        })
        .await;
        assert!(!trusts(&router, &first.join("ca.pem")).await, "the old one is gone");
        let api = Api::new(router.base_url(), Some(&second.join("ca.pem")));
        let body = json!({ "name": "two", "workspaces": ["kubernetes-prod"] });
        let minted = api.post("/v1/management/join-keys", Some(router.admin_key()), &body).await;
        minted.assert_status(201);
        let claims = jwt_claims(minted.json()["token"].as_str().unwrap());
        assert_eq!(claims["tls_ca"], json!(second_pin), "new join keys pin the new CA");
    }
}

// ---------------------------------------------------------------------------------------------
// A man in the middle of enrollment
// ---------------------------------------------------------------------------------------------

/// What the proxy does to the router's enrollment answer.
#[derive(Clone, Copy)]
enum Rewrite {
    /// Replace the router's CURVE key with the attacker's.
    CurveKey,
    /// Replace the mesh address with the attacker's.
    MeshAddr,
}

/// A TLS-terminating HTTP/1.1 proxy in front of the router: it serves `tls` (its own CA's
/// certificate, or the router's stolen one), forwards each request to the router and rewrites
/// the answer. Counts the requests it got: a refused handshake means the XEM sent nothing.
struct Proxy {
    url: String,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn proxy(router: &Router, tls: Option<Arc<ServerTls>>, rewrite: Rewrite) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let requests = Arc::new(AtomicUsize::new(0));
    let upstream = client_builder(router.ca_file().as_deref()).build().unwrap();
    let base = router.base_url();
    let count = requests.clone();
    let task = tokio::spawn(async move {
        let acceptor = tls.map(|tls| tokio_rustls::TlsAcceptor::from(tls.config()));
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (upstream, base, count, acceptor) =
                (upstream.clone(), base.clone(), count.clone(), acceptor.clone());
            tokio::spawn(async move {
                match acceptor {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            relay(stream, &upstream, &base, rewrite, &count).await;
                        }
                    }
                    None => relay(tcp, &upstream, &base, rewrite, &count).await,
                }
            });
        }
    });
    Proxy { url: format!("{scheme}://{addr}"), requests, task }
}

async fn relay<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    upstream: &reqwest::Client,
    base: &str,
    rewrite: Rewrite,
    count: &AtomicUsize,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let (head_end, length) = loop {
        let Ok(n) = stream.read(&mut chunk).await else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .unwrap_or(0usize);
            break (end + 4, length);
        }
    };
    while buf.len() < head_end + length {
        let Ok(n) = stream.read(&mut chunk).await else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    count.fetch_add(1, Ordering::SeqCst);
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let body = buf[head_end..head_end + length].to_vec();
    let answer = upstream
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let mut json: Value = answer.json().await.unwrap();
    if status == 201 || status == 200 {
        match rewrite {
            Rewrite::CurveKey => {
                let attacker =
                    xerotier_credentials::CurveKeyPair::generate(&xerotier_core::OsEntropy);
                json["router_curve_key"] = json!(attacker.public_z85());
            }
            Rewrite::MeshAddr => json["mesh_addr"] = json!("tcp://127.0.0.1:9"),
        }
    }
    let body = json.to_string();
    let reply = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Starts a XEM against `url` with `token`, waits for it to give up, and returns its stderr.
fn refused_enrollment(url: &str, token: &str, name: &str) -> String {
    let mut xem = Xem::with_config(url, name, crate::fleet_harness::XemConfig::Flags);
    xem.start(Some(token));
    let status = xem.wait_exit(STARTUP_DEADLINE);
    assert!(!status.success(), "the XEM must refuse:\n{}", xem.logs());
    assert!(xem.identity().is_none(), "no identity written:\n{}", xem.logs());
    assert!(!xem.identity_path().exists());
    xem.logs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrollment_through_a_rewriting_proxy_is_refused_and_writes_nothing() {
    for backend in backends().await {
        let router = Router::start(&backend).await;

        // 1. A proxy with a CA of its own (what an attacker on the path has): the pinned
        //    handshake fails, so the join key never leaves the XEM and stays good.
        let own_ca = tempfile::tempdir().unwrap();
        let impostor = ServerTls::load(
            CertSource::Generated {
                dir: own_ca.path().to_path_buf(),
                sans: vec!["localhost".into(), "127.0.0.1".into()],
            },
            now_seconds(),
        )
        .unwrap();
        let mitm = proxy(&router, Some(Arc::new(impostor)), Rewrite::CurveKey).await;
        let key = router.mint_join_key("through-mitm").await;
        let logs = refused_enrollment(&mitm.url, &key.token, "mitm-1");
        assert!(logs.contains("does not contain the CA pinned"), "{logs}");
        assert_eq!(mitm.requests.load(Ordering::SeqCst), 0, "the proxy saw no request");
        assert_eq!(router.join_key(&key.id).await["state"], json!("active"), "not consumed");

        // 2. A downgrade: the same proxy's address over plain HTTP. Refused before sending.
        let plain = proxy(&router, None, Rewrite::CurveKey).await;
        let logs = refused_enrollment(&plain.url, &key.token, "mitm-2");
        assert!(logs.contains("not https://"), "{logs}");
        assert_eq!(plain.requests.load(Ordering::SeqCst), 0, "the join key was not sent");
        assert_eq!(router.join_key(&key.id).await["state"], json!("active"));

        // 3. A proxy holding the router's own certificate key (stolen from the host) that
        //    rewrites the answer: the XEM compares it with the join key and refuses it.
        let tls_dir = router.state_dir().join("tls");
        let stolen = ServerTls::load(
            CertSource::Operator {
                cert: tls_dir.join("server.pem"),
                key: tls_dir.join("server.key"),
            },
            now_seconds(),
        )
        .unwrap();
        let stolen = Arc::new(stolen);
        let rewrites =
            [(Rewrite::CurveKey, "router mesh key set"), (Rewrite::MeshAddr, "mesh address")];
        for (n, (rewrite, what)) in rewrites.into_iter().enumerate() {
            let rewriting = proxy(&router, Some(stolen.clone()), rewrite).await;
            let key = router.mint_join_key("through-rewriter").await;
            let logs = refused_enrollment(&rewriting.url, &key.token, &format!("mitm-3-{n}"));
            assert!(logs.contains(&format!("its {what} disagrees with the join key")), "{logs}");
            assert_eq!(rewriting.requests.load(Ordering::SeqCst), 1);
        }

        // The honest path, with the key the first proxy could not steal.
        let mut xem = Xem::new(&router, "honest");
        xem.start(Some(&key.token));
        let agent = xem.wait_enrolled().await;
        assert_eq!(router.join_key(&key.id).await["used_by_agent"], json!(agent));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_key_file_others_can_read_is_refused_and_a_mangled_token_says_so() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        // (Every other test hands its XEMs the join key in a 0600 join_key_file.)
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("join.key");
        let fresh = router.mint_join_key("file-mode-2").await;
        std::fs::write(&file, &fresh.token).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut xem = Xem::new(&router, "open-file-2");
        std::fs::create_dir_all(xem.tools_dir()).unwrap();
        xem.start_with_config_text(&format!(
            "router_url: {}\njoin_key_file: {}\nregistration_name: open-file-2\nstate_dir: {}\n\
             curve_key_path: {}\nsigning_key_path: {}\ntools_dir: {}\ncredentials_dir: {}\n",
            router.base_url(),
            file.display(),
            xem.state_dir().display(),
            xem.curve_key_path().display(),
            xem.signing_key_path().display(),
            xem.tools_dir().display(),
            xem.credentials_dir().display(),
        ));
        let status = xem.wait_exit(STARTUP_DEADLINE);
        assert!(!status.success());
        assert!(xem.logs().contains("join_key_file"), "{}", xem.logs());
        assert_eq!(router.join_key(&fresh.id).await["state"], json!("active"));

        let mut mangled = Xem::new(&router, "mangled");
        mangled.start(Some("not-a-token"));
        assert!(!mangled.wait_exit(STARTUP_DEADLINE).success());
        assert!(mangled.logs().contains("not a readable token"), "{}", mangled.logs());
    }
}
