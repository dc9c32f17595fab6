//! CURVE key rotation end to end (SPEC 3.2, the seed's "CURVE Keys"): a real router, real XEM
//! agents (with the XEM's fault injection for crashes and forged acknowledgements), `xeroctl`,
//! the events stream, and raw CURVE clients that show which keys the mesh accepts.
//!
//! Every test runs against SQLite and PostgreSQL. The routers bind a fixed mesh port (an agent
//! keeps the mesh address it enrolled with, so a restarted router must bind the same one) and
//! time acknowledgements out after a few seconds.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use reqwest::Method;
use serde_json::{Value, json};
use tempfile::TempDir;
use xerotier_credentials::{CurveKeyPair, fingerprint};
use xerotier_proto::mesh::Frame;

use crate::fleet_harness::{Handshake, RawMesh, TOOL_USER};
use crate::harness::{
    Api, Backend, EXIT_DEADLINE, Router, RouterOptions, XEM_BIN, Xeroctl, backends, binary,
    eventually, send_sigterm, wait_for_exit, xeroctl,
};

/// The agents' lease renewal interval: `active` means a renewal within the last three.
const LEASE_MS: u64 = 200;
/// The routers' acknowledgement timeout (seconds), short so that timeouts are quick to see.
pub(crate) const ACK_TIMEOUT_S: u64 = 3;
/// The same for tests of the honest path, where only a failure would wait it out: long enough
/// for an agent on a loaded machine to generate and acknowledge its keys (3 s did not always
/// suffice in a full CI run).
const HONEST_ACK_TIMEOUT_S: u64 = 15;
/// Deadline for anything asynchronous: a rotation's end, an agent's state, a process's crash.
pub(crate) const SETTLE: Duration = Duration::from_secs(20);
/// The three reasons a rotation may fail with (SPEC 3.2), exactly.
const FAILURE_REASONS: [&str; 3] =
    ["acknowledgement timeout", "signature mismatch", "revoked agent"];
/// `xem_version` of the hellos that raw probe clients send, to tell them apart in the events.
const PROBE_VERSION: &str = "rotation-probe";

pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

// ---------------------------------------------------------------------------------------------
// The router, and the rotation API
// ---------------------------------------------------------------------------------------------

/// A router on a fixed mesh port with an acknowledgement timeout of `ack_timeout_s` seconds.
pub(crate) async fn start_router(backend: &Backend, ack_timeout_s: u64) -> Router {
    let options = RouterOptions {
        extra_args: vec![
            "--curve-rotation-ack-timeout-seconds".to_string(),
            ack_timeout_s.to_string(),
        ],
        ..RouterOptions::fixed_mesh_port()
    };
    Router::start_with(backend, options).await
}

/// Rotation calls on a [`Router`], with its admin key.
pub(crate) trait Rotations {
    /// `GET …/curve-rotations/{request_id}`.
    async fn rotation(&self, agent_id: &str, request_id: &str) -> Value;
    /// `POST …/curve-rotate`; panics unless 202.
    async fn rotate(&self, agent_id: &str, reason: &str) -> Value;
    /// All of the agent's events, oldest first.
    async fn events(&self, agent_id: &str) -> Vec<Value>;
    async fn hellos(&self) -> f64;
    async fn unauthorized_drops(&self) -> f64;
    /// Waits for the rotation to leave `pending`; checks that it ended in a terminal state.
    async fn wait_terminal(&self, agent_id: &str, request_id: &str) -> Value;
    /// Waits until the agent is `active` on a lease renewal made after `since` (RFC 3339).
    async fn wait_fresh(&self, agent_id: &str, since: &str) -> Value;
    /// Waits for an event of `kind` for `request_id` in the agent's log.
    async fn wait_event(&self, agent_id: &str, kind: &str, request_id: &str) -> Value;
}

impl Rotations for Router {
    async fn rotation(&self, agent_id: &str, request_id: &str) -> Value {
        self.get_json(&format!("/v1/management/agents/{agent_id}/curve-rotations/{request_id}"))
            .await
    }

    async fn rotate(&self, agent_id: &str, reason: &str) -> Value {
        let path = format!("/v1/management/agents/{agent_id}/curve-rotate");
        let resp = self.post_json(&path, &json!({ "reason": reason })).await;
        resp.assert_status(202);
        let view = resp.json();
        assert_eq!(view["agent_id"], agent_id, "{view}");
        view
    }

    async fn events(&self, agent_id: &str) -> Vec<Value> {
        self.collect_pages(&format!("/v1/management/agents/{agent_id}/events")).await
    }

    async fn hellos(&self) -> f64 {
        self.metric("xerotier_router_mesh_frames_total{kind=\"hello\"}").await
    }

    async fn unauthorized_drops(&self) -> f64 {
        self.metric("xerotier_router_mesh_frames_dropped_total{reason=\"unauthorized\"}").await
    }

    async fn wait_terminal(&self, agent_id: &str, request_id: &str) -> Value {
        let rotation = eventually(&format!("rotation {request_id} to end"), SETTLE, || async {
            let rotation = self.rotation(agent_id, request_id).await;
            (rotation["status"] != "pending").then_some(rotation)
        })
        .await;
        assert_terminal(&rotation);
        rotation
    }

    async fn wait_fresh(&self, agent_id: &str, since: &str) -> Value {
        eventually(
            &format!("agent {agent_id} to renew its lease after {since}"),
            SETTLE,
            || async {
                let agent = self.agent(agent_id).await;
                let fresh = agent["last_heartbeat_at"].as_str().is_some_and(|at| at > since);
                (fresh && agent["status"] == "active").then_some(agent)
            },
        )
        .await
    }

    async fn wait_event(&self, agent_id: &str, kind: &str, request_id: &str) -> Value {
        eventually(&format!("event {kind} of {request_id}"), SETTLE, || async {
            self.events(agent_id)
                .await
                .into_iter()
                .find(|e| e["type"] == kind && e["request_id"] == request_id)
        })
        .await
    }
}

/// Waits for the rotation to end and asserts that it failed for `reason` (`what` names the
/// case in the message); returns it.
pub(crate) async fn wait_failed(
    router: &Router,
    agent_id: &str,
    request_id: &str,
    reason: &str,
    what: &str,
) -> Value {
    let rotation = router.wait_terminal(agent_id, request_id).await;
    assert_eq!(
        (rotation["status"].as_str(), rotation["failure_reason"].as_str()),
        (Some("failed"), Some(reason)),
        "[{}] {what}: {rotation}",
        router.backend
    );
    rotation
}

fn assert_terminal(rotation: &Value) {
    match rotation["status"].as_str() {
        Some("promoted") => assert!(rotation["failure_reason"].is_null(), "{rotation}"),
        Some("failed") => {
            let reason = rotation["failure_reason"].as_str().unwrap_or_default();
            assert!(FAILURE_REASONS.contains(&reason), "failure reason {reason:?}: {rotation}");
        }
        _ => panic!("not a terminal rotation: {rotation}"),
    }
    assert!(rotation["completed_at"].is_string(), "a terminal rotation has ended: {rotation}");
}

// ---------------------------------------------------------------------------------------------
// An XEM process, with the XEM's test fault injection (`XEROTIER_XEM_TEST_FAULT`)
// ---------------------------------------------------------------------------------------------

pub(crate) struct TestXem {
    name: String,
    pub(crate) dir: TempDir,
    child: Option<Child>,
    starts: usize,
    pub(crate) agent_id: String,
    /// The router's CURVE public key, from the enrollment answer (kept in `identity.json`).
    pub(crate) router_key: String,
}

impl TestXem {
    /// Enrolls a fresh agent with a new join key and waits for its first lease renewal.
    pub(crate) async fn enroll(router: &Router, name: &str, fault: Option<&str>) -> TestXem {
        Self::enroll_via(router, router, name, fault).await
    }

    /// Enrolls through `http`'s API, with a join key for `mesh`'s mesh endpoint.
    async fn enroll_via(http: &Router, mesh: &Router, name: &str, fault: Option<&str>) -> TestXem {
        let dir = tempfile::Builder::new().prefix("xerotier-rot-xem-").tempdir().expect("tempdir");
        let mut xem = TestXem {
            name: name.to_string(),
            dir,
            child: None,
            starts: 0,
            agent_id: String::new(),
            router_key: String::new(),
        };
        let join_key =
            http.mint_join_key_with(json!({ "name": name, "router_addr": mesh.mesh_addr() })).await;
        xem.spawn(Some((&http.base_url(), &join_key.token)), fault);
        let identity_path = xem.state_dir().join("identity.json");
        let identity = eventually(&format!("{name} to enroll"), SETTLE, || {
            xem.assert_running();
            let identity = std::fs::read_to_string(&identity_path)
                .ok()
                .and_then(|text| serde_json::from_str::<Value>(&text).ok());
            async move { identity }
        })
        .await;
        xem.agent_id = identity["agent_id"].as_str().expect("agent id").to_string();
        assert!(xem.agent_id.starts_with("agt_"), "{identity}");
        xem.router_key = identity["router_curve_key"].as_str().expect("router key").to_string();
        assert_eq!(identity["mesh_addr"], mesh.mesh_addr().as_str(), "{identity}");
        let agent = mesh.wait_fresh(&xem.agent_id, "").await;
        assert_eq!(agent["curve_public_key"], xem.key().public_z85(), "enrolled on its key file");
        xem
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub(crate) fn key_path(&self) -> PathBuf {
        self.dir.path().join("curve.hex")
    }

    fn log_path(&self, start: usize) -> PathBuf {
        self.dir.path().join(format!("xem-{start}.log"))
    }

    fn spawn(&mut self, enroll: Option<(&str, &str)>, fault: Option<&str>) {
        assert!(self.child.is_none(), "the XEM is already running");
        let dir = self.dir.path();
        // An empty config file, so that a /etc/xerotier/xem.yaml on the host is never read.
        let config = dir.join("empty.yaml");
        std::fs::write(&config, "").expect("writing an empty XEM config");
        // A XEM refuses a missing tools_dir; these agents offer no tools.
        std::fs::create_dir_all(dir.join("tools")).expect("creating the tools dir");
        let mut command = Command::new(binary(XEM_BIN));
        command.arg("--config").arg(&config);
        if let Some((router_url, join_key)) = enroll {
            command.arg("--router-url").arg(router_url).arg("--join-key").arg(join_key);
        }
        command
            .arg("--registration-name")
            .arg(&self.name)
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--curve-key-path")
            .arg(self.key_path())
            .arg("--signing-key-path")
            .arg(dir.join("signing.hex"))
            .arg("--tools-dir")
            .arg(dir.join("tools"))
            .arg("--credentials-dir")
            .arg(dir.join("creds"))
            .arg("--lease-renewal-interval-ms")
            .arg(LEASE_MS.to_string())
            // The XEM's debug lines, for a failure's log (a level name: the XEM takes no
            // filter directives).
            .arg("--log-level")
            .arg("debug");
        for (var, _) in std::env::vars_os() {
            let name = var.to_string_lossy();
            if name.starts_with("XEM_") || name.starts_with("XEROTIER_XEM_") {
                command.env_remove(var);
            }
        }
        command.env_remove("NOTIFY_SOCKET").env_remove("RUST_LOG");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
            .expect("making the XEM's directory traversable");
        command.env("XEM_TOOL_USER", TOOL_USER).env("XEM_RUN_DIR", dir.join("run"));
        if let Some(fault) = fault {
            command.env("XEROTIER_XEM_TEST_FAULT", fault);
        }
        self.starts += 1;
        let log = File::create(self.log_path(self.starts)).expect("creating the XEM log");
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log handle"))
            .stderr(log);
        self.child = Some(command.spawn().expect("spawning xerotier-xem"));
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            self.child = None;
            panic!("{} exited ({status})", self.name);
        }
    }

    /// Starts it again on its enrolled identity (no join key), without any fault.
    pub(crate) fn restart(&mut self) {
        self.spawn(None, None);
    }

    /// SIGTERM; it must exit cleanly.
    pub(crate) fn stop(&mut self) {
        let mut child = self.child.take().expect("the XEM is not running");
        send_sigterm(child.id());
        let status = wait_for_exit(&mut child, EXIT_DEADLINE).expect("the XEM stops on SIGTERM");
        assert!(status.success(), "{} exited with {status} on SIGTERM", self.name);
    }

    /// Waits for the process to end by itself (an injected crash, or a revocation).
    async fn wait_exit(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("the XEM is not running");
        let status = eventually(&format!("{} to exit", self.name), SETTLE, || {
            let exited = child.try_wait().expect("polling the XEM");
            async move { exited }
        })
        .await;
        self.child = None;
        status
    }

    /// Waits for an injected `abort()`.
    pub(crate) async fn wait_crash(&mut self) {
        let status = self.wait_exit().await;
        assert_eq!(status.signal(), Some(6), "{} should have aborted, got {status}", self.name);
    }

    /// The agent's current key, as its key file holds it.
    pub(crate) fn key_hex(&self) -> String {
        std::fs::read_to_string(self.key_path()).expect("reading the key file").trim().to_string()
    }

    pub(crate) fn key(&self) -> CurveKeyPair {
        CurveKeyPair::from_secret_hex(&self.key_hex()).expect("a CURVE secret key")
    }

    /// The public key of the pending key file, if there is one.
    pub(crate) fn pending_public(&self) -> Option<String> {
        let path = PathBuf::from(format!("{}.pending", self.key_path().display()));
        let text = std::fs::read_to_string(path).ok()?;
        let file: Value = serde_json::from_str(&text).expect("a pending key file");
        let secret = file["secret_hex"].as_str().expect("secret_hex");
        Some(CurveKeyPair::from_secret_hex(secret).expect("a pending secret").public_z85())
    }

    fn logs(&self) -> String {
        (1..=self.starts)
            .map(|n| std::fs::read_to_string(self.log_path(n)).unwrap_or_default())
            .collect()
    }
}

impl Drop for TestXem {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("----- {} log -----\n{}\n-----", self.name, self.logs());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw CURVE clients
// ---------------------------------------------------------------------------------------------

/// A raw CURVE client on the mesh with `key_hex` (a hello for `hello_for` queued: it can only
/// leave once the handshake succeeded), and whether the router accepted the key (`false`: the
/// ZAP handler refused it). Keep the client to let the hello go out.
fn probe(
    router: &Router,
    xem: &TestXem,
    key_hex: &str,
    hello_for: Option<&Value>,
) -> (bool, RawMesh) {
    let key = CurveKeyPair::from_secret_hex(key_hex).expect("a CURVE secret key");
    let client = RawMesh::curve(&router.mesh_addr(), &key, &xem.router_key);
    if let Some(agent) = hello_for {
        client.send(&Frame::Hello {
            agent_id: agent["id"].as_str().expect("agent id").to_string(),
            xem_version: PROBE_VERSION.to_string(),
            manifest_hash: agent["manifest_hash"].as_str().expect("manifest hash").to_string(),
            manifest_version: agent["manifest_version"].as_u64().expect("manifest version"),
        });
    }
    let accepted = match client.handshake(SETTLE) {
        Handshake::Succeeded => true,
        Handshake::FailedAuth(_) => false,
        other => panic!("[{}] unexpected CURVE handshake outcome {other:?}", router.backend),
    };
    (accepted, client)
}

/// Whether the mesh accepts `key_hex` at the handshake (no frame is sent).
pub(crate) fn accepted(router: &Router, xem: &TestXem, key_hex: &str) -> bool {
    probe(router, xem, key_hex, None).0
}

fn key_fingerprint(key_hex: &str) -> String {
    let key = CurveKeyPair::from_secret_hex(key_hex).expect("a CURVE secret key");
    fingerprint(&key.public_bytes())
}

fn public_of(key_hex: &str) -> String {
    CurveKeyPair::from_secret_hex(key_hex).expect("a CURVE secret key").public_z85()
}

// ---------------------------------------------------------------------------------------------
// The events stream (SSE)
// ---------------------------------------------------------------------------------------------

/// One server-sent event.
#[derive(Debug, Clone)]
struct SseEvent {
    id: String,
    kind: String,
    data: Value,
}

struct EventStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl EventStream {
    async fn open(router: &Router, agent_id: &str, last_event_id: Option<&str>) -> EventStream {
        // No overall timeout: the stream stays open; each read has its own deadline.
        let client = crate::harness::client_builder(router.ca_file().as_deref())
            .build()
            .expect("HTTP client");
        let mut request = client
            .request(
                Method::GET,
                format!("{}/v1/management/agents/{agent_id}/events", router.base_url()),
            )
            .bearer_auth(router.admin_key())
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("opening the events stream");
        assert_eq!(response.status().as_u16(), 200, "events stream status");
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(content_type.starts_with("text/event-stream"), "content type {content_type:?}");
        EventStream { response, buffer: Vec::new() }
    }

    /// The next event (comments and keep-alives skipped); panics after `SETTLE`.
    async fn next(&mut self) -> SseEvent {
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let block = String::from_utf8(block).expect("SSE is UTF-8");
                let (mut id, mut kind, mut data) = (None, None, String::new());
                for line in block.lines() {
                    let field = |name: &str| {
                        line.strip_prefix(name)
                            .map(|v| v.strip_prefix(' ').unwrap_or(v).to_string())
                    };
                    if let Some(v) = field("id:") {
                        id = Some(v);
                    } else if let Some(v) = field("event:") {
                        kind = Some(v);
                    } else if let Some(v) = field("data:") {
                        data.push_str(&v);
                    }
                }
                if let Some(kind) = kind {
                    let data = serde_json::from_str(&data).expect("SSE data is JSON");
                    return SseEvent { id: id.expect("every event has an id"), kind, data };
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no event on the stream within {SETTLE:?}"))
                .expect("reading the events stream")
                .expect("the events stream ended");
            self.buffer.extend(chunk.iter().filter(|b| **b != b'\r'));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared checks
// ---------------------------------------------------------------------------------------------

/// The end every scenario must reach: the agent renews its lease after `since`, the router's
/// current key is the one in the agent's key file (any switch is done), and the mesh accepts it.
pub(crate) async fn assert_working(router: &Router, xem: &TestXem, since: &str) -> Value {
    router.wait_fresh(&xem.agent_id, since).await;
    eventually(&format!("{} and the router to agree on its key", xem.name), SETTLE, || async {
        let agent = router.agent(&xem.agent_id).await;
        (agent["curve_public_key"] == xem.key().public_z85().as_str()).then_some(())
    })
    .await;
    assert!(
        accepted(router, xem, &xem.key_hex()),
        "[{}] the mesh refuses the key {} holds",
        router.backend,
        xem.name
    );
    // And it keeps renewing (on that key) after the check.
    router.wait_fresh(&xem.agent_id, &now_rfc3339()).await
}

/// After a rotation ended: promoted, the agent is on the new key (`new_public`, when known),
/// the completion is logged and the old key is refused; failed, it is still on the old key.
async fn assert_outcome(
    router: &Router,
    xem: &TestXem,
    rotation: &Value,
    old_hex: &str,
    new_public: Option<&str>,
) {
    let request_id = rotation["request_id"].as_str().expect("request id");
    let agent = router.agent(&xem.agent_id).await;
    if rotation["status"] == "promoted" {
        assert_ne!(agent["curve_public_key"], public_of(old_hex).as_str(), "{rotation}");
        if let Some(new_public) = new_public {
            assert_eq!(agent["curve_public_key"], new_public, "the agent's new key: {rotation}");
        }
        assert_eq!(agent["curve_key_fingerprint"], rotation["new_key_fingerprint"], "{rotation}");
        router.wait_event(&xem.agent_id, "rotation_completed", request_id).await;
        // Retired right after the completion is recorded.
        eventually("the old key to be refused", SETTLE, || async {
            (!accepted(router, xem, old_hex)).then_some(())
        })
        .await;
    } else {
        assert_eq!(agent["curve_public_key"], public_of(old_hex).as_str(), "{rotation}");
        assert!(accepted(router, xem, old_hex), "{rotation}");
    }
}

/// The events of one rotation, in log order.
async fn rotation_events(router: &Router, agent_id: &str, request_id: &str) -> Vec<String> {
    router
        .events(agent_id)
        .await
        .into_iter()
        .filter(|e| e["request_id"] == request_id)
        .map(|e| e["type"].as_str().expect("event type").to_string())
        .collect()
}

pub(crate) fn request_id_of(view: &Value) -> String {
    view["request_id"].as_str().expect("request id").to_string()
}

/// The seed's four lines; returns the request id.
fn assert_four_lines(stdout: &str, agent_id: &str) -> String {
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "exactly four lines:\n{stdout}");
    let request_id = lines[0]
        .strip_prefix("request_id: ")
        .unwrap_or_else(|| panic!("line 1 is `request_id: …`:\n{stdout}"));
    assert_hex_id(request_id);
    assert_eq!(lines[1], format!("agent_id: {agent_id}"), "{stdout}");
    assert_eq!(lines[2], "status: pending", "{stdout}");
    assert_eq!(lines[3], format!("monitor: /v1/management/agents/{agent_id}/events"), "{stdout}");
    request_id.to_string()
}

fn assert_hex_id(id: &str) {
    assert!(
        id.len() >= 16 && id.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "request id {id:?} is lowercase hex"
    );
}

/// A seed line as the shell would split it (double quotes removed).
fn seed_args(line: &str) -> Vec<String> {
    let words: Vec<String> =
        line.split_whitespace().map(|w| w.trim_matches('"').to_string()).collect();
    assert_eq!(words[0], "xeroctl");
    words[1..].to_vec()
}

fn millis(rfc3339: &Value) -> u128 {
    let text = rfc3339.as_str().expect("a timestamp");
    humantime::parse_rfc3339_weak(text)
        .expect("an RFC 3339 timestamp")
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after the epoch")
        .as_millis()
}

// ---------------------------------------------------------------------------------------------
// 1. The seed command
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn seed_curve_rotate_prints_four_lines_and_is_audited() {
    for backend in backends().await {
        let router = start_router(&backend, HONEST_ACK_TIMEOUT_S).await;
        let xem = TestXem::enroll(&router, "xem-seed", None).await;
        let id = xem.agent_id.as_str();

        // The seed's line, exactly, with this agent's id in place of agt_abc123.
        let line = "xeroctl agents curve-rotate agt_abc123 --reason \"scheduled\"";
        let args = seed_args(&line.replace("agt_abc123", id));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = xeroctl(&router, &args).success();
        let first = assert_four_lines(&out.stdout, id);
        assert_eq!(router.wait_terminal(id, &first).await["status"], "promoted");

        // The example id itself names no agent here: refused, nothing printed on stdout.
        let example =
            xeroctl(&router, &seed_args(line).iter().map(String::as_str).collect::<Vec<_>>());
        let example = example.failure();
        assert!(example.stdout.is_empty(), "{}", example.stdout);
        assert!(example.stderr.contains("agt_abc123"), "{}", example.stderr);

        // -o json: the same four fields.
        let out = xeroctl(
            &router,
            &["-o", "json", "agents", "curve-rotate", id, "--reason", "quarterly audit"],
        )
        .success();
        let json_view = out.json();
        let mut keys: Vec<&str> =
            json_view.as_object().expect("an object").keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["agent_id", "monitor", "request_id", "status"], "{json_view}");
        assert_eq!(json_view["agent_id"], id);
        assert_eq!(json_view["status"], "pending");
        assert_eq!(json_view["monitor"], format!("/v1/management/agents/{id}/events"));
        let second = request_id_of(&json_view);
        assert_hex_id(&second);
        assert_eq!(router.wait_terminal(id, &second).await["status"], "promoted");

        // --reason omitted: `scheduled` is recorded.
        let out = xeroctl(&router, &["agents", "curve-rotate", id]).success();
        let third = assert_four_lines(&out.stdout, id);
        let rotation = router.wait_terminal(id, &third).await;
        assert_eq!(
            (rotation["status"].as_str(), rotation["reason"].as_str()),
            (Some("promoted"), Some("scheduled"))
        );
        // So does the API without a body.
        let resp = Api::send(
            router
                .api()
                .request(Method::POST, &format!("/v1/management/agents/{id}/curve-rotate"))
                .bearer_auth(router.admin_key()),
        )
        .await;
        resp.assert_status(202);
        let fourth = request_id_of(&resp.json());
        assert_eq!(resp.json()["reason"], "scheduled");
        assert_eq!(router.wait_terminal(id, &fourth).await["status"], "promoted");

        // The audit log: each rotation, requested and promoted, with operator, reason and ids.
        let admin_key_id = router.admin_key_id().await;
        let records = router.audit(&format!("action=agent.curve_rotate&target_id={id}")).await;
        let expected = [
            (&first, "scheduled"),
            (&second, "quarterly audit"),
            (&third, "scheduled"),
            (&fourth, "scheduled"),
        ];
        assert_eq!(records.len(), 2 * expected.len(), "two records per rotation: {records:#?}");
        for (request_id, reason) in expected {
            let mine: Vec<&Value> = records
                .iter()
                .filter(|r| r["details"]["rotation_request_id"] == request_id.as_str())
                .collect();
            let mut phases: Vec<&str> =
                mine.iter().map(|r| r["details"]["phase"].as_str().unwrap_or("?")).collect();
            phases.sort_unstable();
            assert_eq!(
                phases,
                ["promoted", "requested"],
                "[{}] {request_id}: {mine:#?}",
                backend.name
            );
            for record in &mine {
                assert_eq!(record["action"], "agent.curve_rotate", "{record}");
                assert_eq!(record["reason"], reason, "{record}");
                assert_eq!(record["actor_key_id"], admin_key_id.as_str(), "{record}");
                assert_eq!(record["actor_name"], "bootstrap", "{record}");
                assert_eq!(record["target_id"], id, "{record}");
                assert_eq!(record["outcome"], "success", "{record}");
                assert!(record["request_id"].as_str().is_some_and(|r| !r.is_empty()), "{record}");
            }
            assert_eq!(mine[0]["request_id"], mine[1]["request_id"], "one HTTP request id");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. After promotion: the new key in, the old key out
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn promoted_key_replaces_the_old_one_on_the_mesh() {
    for backend in backends().await {
        let mut router = start_router(&backend, HONEST_ACK_TIMEOUT_S).await;
        let mut xem = TestXem::enroll(&router, "xem-mesh", None).await;
        let agent_id = xem.agent_id.clone();
        let id = agent_id.as_str();
        let old_hex = xem.key_hex();

        // The probe itself works: before the rotation, the old key gets a hello through.
        let agent = router.agent(id).await;
        // Never rotated: its key is as old as its enrollment.
        assert!(agent["curve_key_rotated_at"].is_null(), "{agent}");
        assert_eq!(agent["curve_key_since"], agent["enrolled_at"], "{agent}");
        assert!(agent["curve_key_age_seconds"].is_u64(), "{agent}");
        let hellos = router.hellos().await;
        let (control_accepted, control) = probe(&router, &xem, &old_hex, Some(&agent));
        assert!(control_accepted, "[{}] the key before the rotation", backend.name);
        eventually("the control probe's hello", SETTLE, || async {
            (router.hellos().await > hellos).then_some(())
        })
        .await;
        drop(control);
        // The probe's hello made it the agent's session for a moment; the agent's next renewal
        // takes it back (a rotation instruction must reach the real agent).
        router.wait_fresh(id, &now_rfc3339()).await;

        let request_id = request_id_of(&router.rotate(id, "scheduled").await);
        let rotation = router.wait_terminal(id, &request_id).await;
        assert_eq!(rotation["status"], "promoted", "{rotation}");
        router.wait_event(id, "rotation_completed", &request_id).await;
        // Retired the moment the agent is seen on the new key.
        assert!(
            !accepted(&router, &xem, &old_hex),
            "[{}] the old key right after the completion",
            backend.name
        );
        let agent = assert_working(&router, &xem, rotation["completed_at"].as_str().unwrap()).await;
        let new_hex = xem.key_hex();
        assert_ne!(new_hex, old_hex, "the agent switched key files");
        assert_outcome(&router, &xem, &rotation, &old_hex, None).await;
        // The agent view dates its key from the promotion, and xeroctl shows it.
        let shown = router.agent(id).await;
        assert_eq!(shown["curve_key_rotated_at"], rotation["completed_at"], "{shown}");
        assert_eq!(shown["curve_key_since"], rotation["completed_at"], "{shown}");
        let out = crate::harness::xeroctl(&router, &["agents", id]).success();
        let line =
            out.stdout.lines().find(|l| l.starts_with("last curve rotation")).unwrap_or_default();
        assert!(line.contains(rotation["completed_at"].as_str().unwrap()), "{}", out.stdout);
        assert!(out.stdout.lines().any(|l| l.starts_with("curve key age")), "{}", out.stdout);
        assert_eq!(
            rotation_events(&router, id, &request_id).await,
            [
                "rotation_requested",
                "rotation_acknowledged",
                "rotation_promoted",
                "rotation_completed"
            ]
        );

        // The old key: refused at the handshake, so its hello never reaches the router; the new
        // key (a second session of the same agent) gets one through.
        let (old_fp, new_fp) = (key_fingerprint(&old_hex), key_fingerprint(&new_hex));
        let drops = router.unauthorized_drops().await;
        let hellos = router.hellos().await;
        let (old_accepted, old) = probe(&router, &xem, &old_hex, Some(&agent));
        assert!(!old_accepted, "[{}] the old key after promotion", backend.name);
        let (new_accepted, new) = probe(&router, &xem, &new_hex, Some(&agent));
        assert!(new_accepted, "[{}] the new key", backend.name);
        eventually("the new key's hello", SETTLE, || async {
            router
                .events(id)
                .await
                .iter()
                .any(|e| {
                    e["type"] == "connected"
                        && e["details"]["xem_version"] == PROBE_VERSION
                        && e["details"]["curve_key_fingerprint"] == new_fp.as_str()
                })
                .then_some(())
        })
        .await;
        assert!(router.hellos().await > hellos, "the new key's hello is counted");
        drop((old, new));
        let events = router.events(id).await;
        let completed = events
            .iter()
            .position(|e| e["type"] == "rotation_completed")
            .expect("the completion event");
        let on_old: Vec<&Value> = events[completed..]
            .iter()
            .filter(|e| {
                e["type"] == "connected" && e["details"]["curve_key_fingerprint"] == old_fp.as_str()
            })
            .collect();
        assert!(
            on_old.is_empty(),
            "[{}] hellos on the old key after completion: {on_old:#?}",
            backend.name
        );
        assert_eq!(
            router.unauthorized_drops().await,
            drops,
            "no old-key frame got as far as the router"
        );

        // The real agent keeps renewing on its new key.
        let last = router.agent(id).await["last_heartbeat_at"].as_str().unwrap().to_string();
        router.wait_fresh(id, &last).await;

        // The store retired it too. With the agent stopped (so that nothing is seen on the new
        // key to retire the old one again), a restarted router, whose allow-list comes from the
        // store, refuses the old key and accepts the new one.
        xem.stop();
        router.restart().await;
        assert!(
            !accepted(&router, &xem, &old_hex),
            "[{}] the old key after a router restart",
            backend.name
        );
        assert!(accepted(&router, &xem, &new_hex), "[{}] the new key", backend.name);
        let since = now_rfc3339();
        xem.restart();
        assert_working(&router, &xem, &since).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 3. --wait
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn curve_rotate_wait_reports_promotion_and_ack_timeout() {
    for backend in backends().await {
        let router = start_router(&backend, 2).await;

        let xem = TestXem::enroll(&router, "xem-wait", None).await;
        let id = xem.agent_id.as_str();
        let out = xeroctl(&router, &["agents", "curve-rotate", id, "--wait"]).success();
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert!(lines.len() >= 5, "{}", out.stdout);
        let request_id = assert_four_lines(&lines[..4].join("\n"), id);
        assert_eq!(lines[4], "status: promoted", "{}", out.stdout);
        let rotation = router.rotation(id, &request_id).await;
        assert_eq!(rotation["status"], "promoted");
        let fingerprint_line =
            format!("new_key_fingerprint: {}", rotation["new_key_fingerprint"].as_str().unwrap());
        assert!(lines.contains(&fingerprint_line.as_str()), "{}", out.stdout);

        // An agent that never answers: the timeout fails it, --wait exits non-zero with advice.
        let mute = TestXem::enroll(&router, "xem-never-ack", Some("never_ack")).await;
        let mute_id = mute.agent_id.clone();
        let old_hex = mute.key_hex();
        let (url, key, agent, ca) =
            (router.base_url(), router.admin_key().to_string(), mute_id.clone(), router.ca_file());
        let waiter = std::thread::spawn(move || {
            Xeroctl::bare().base_url(Some(&url)).api_key(Some(&key)).ca_file(ca.as_deref()).run(&[
                "agents",
                "curve-rotate",
                &agent,
                "--wait",
            ])
        });
        // While it waits, a second rotation of the same agent is refused.
        let requested = eventually("the rotation to be requested", SETTLE, || async {
            router.events(&mute_id).await.into_iter().find(|e| e["type"] == "rotation_requested")
        })
        .await;
        let request_id = requested["request_id"].as_str().unwrap().to_string();
        let second = router
            .post_json(&format!("/v1/management/agents/{mute_id}/curve-rotate"), &json!({}))
            .await;
        second.assert_error(409, "rotation_in_flight");
        let out = waiter.join().expect("the xeroctl thread").failure();
        assert_four_lines(&out.stdout.lines().take(4).collect::<Vec<_>>().join("\n"), &mute_id);
        assert!(out.stdout.contains("status: failed"), "{}", out.stdout);
        assert!(out.stdout.contains("failure_reason: acknowledgement timeout"), "{}", out.stdout);
        assert!(out.stderr.contains("acknowledgement timeout"), "{}", out.stderr);
        assert!(out.stderr.contains("containment trigger"), "{}", out.stderr);
        assert!(
            out.stderr.contains(&format!("xeroctl agents revoke-credentials {mute_id}")),
            "{}",
            out.stderr
        );

        let rotation = router.rotation(&mute_id, &request_id).await;
        assert_eq!(rotation["status"], "failed");
        assert_eq!(rotation["failure_reason"], "acknowledgement timeout");
        let waited = millis(&rotation["completed_at"]) - millis(&rotation["requested_at"]);
        assert!(
            waited >= 2000,
            "[{}] failed after {waited} ms, before the 2 s timeout",
            backend.name
        );
        assert_eq!(
            rotation_events(&router, &mute_id, &request_id).await,
            ["rotation_requested", "rotation_failed"]
        );
        assert_working(&router, &mute, rotation["completed_at"].as_str().unwrap()).await;
        assert_outcome(&router, &mute, &rotation, &old_hex, None).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Forged acknowledgements
// ---------------------------------------------------------------------------------------------

async fn forged_acknowledgement_fails(fault: &str) {
    for backend in backends().await {
        let router = start_router(&backend, ACK_TIMEOUT_S).await;
        let xem = TestXem::enroll(&router, &format!("xem-{fault}"), Some(fault)).await;
        let id = xem.agent_id.as_str();
        if fault == "replay_previous_ack" {
            // The first rotation is answered honestly: there is nothing to replay yet.
            let old_hex = xem.key_hex();
            let first = request_id_of(&router.rotate(id, "scheduled").await);
            let rotation = router.wait_terminal(id, &first).await;
            assert_eq!(rotation["status"], "promoted", "{rotation}");
            assert_working(&router, &xem, rotation["completed_at"].as_str().unwrap()).await;
            assert_outcome(&router, &xem, &rotation, &old_hex, None).await;
        }
        let key_hex = xem.key_hex();
        let request_id = request_id_of(&router.rotate(id, "forgery drill").await);
        let rotation = router.wait_terminal(id, &request_id).await;
        assert_eq!(
            (rotation["status"].as_str(), rotation["failure_reason"].as_str()),
            (Some("failed"), Some("signature mismatch")),
            "[{}] {fault}: {rotation}",
            backend.name
        );
        assert!(rotation["new_key_fingerprint"].is_null(), "nothing promoted: {rotation}");
        assert_eq!(
            rotation_events(&router, id, &request_id).await,
            ["rotation_requested", "rotation_failed"]
        );
        let failed = router.wait_event(id, "rotation_failed", &request_id).await;
        assert_eq!(failed["details"]["reason"], "signature mismatch");

        // The agent is untouched: same key, pending key dropped, still renewing, still accepted.
        eventually("the agent to drop its pending key", SETTLE, || async {
            xem.pending_public().is_none().then_some(())
        })
        .await;
        assert_eq!(xem.key_hex(), key_hex, "the agent kept its key file");
        let agent = assert_working(&router, &xem, rotation["completed_at"].as_str().unwrap()).await;
        assert_eq!(
            agent["curve_public_key"],
            public_of(&key_hex).as_str(),
            "[{}] {fault}",
            backend.name
        );
        assert_outcome(&router, &xem, &rotation, &key_hex, None).await;

        let audit =
            router.audit(&format!("action=agent.curve_rotate&outcome=failed&target_id={id}")).await;
        assert_eq!(audit.len(), 1, "{audit:#?}");
        assert_eq!(audit[0]["details"]["rotation_request_id"], request_id.as_str());
        assert_eq!(audit[0]["details"]["failure_reason"], "signature mismatch");
        assert_eq!(audit[0]["reason"], "forgery drill");
    }
}

#[tokio::test]
async fn ack_signed_with_another_key_fails_with_signature_mismatch() {
    forged_acknowledgement_fails("forge_wrong_key").await;
}

#[tokio::test]
async fn ack_with_a_wrong_nonce_fails_with_signature_mismatch() {
    forged_acknowledgement_fails("forge_wrong_nonce").await;
}

#[tokio::test]
async fn replayed_ack_of_the_previous_rotation_fails_with_signature_mismatch() {
    forged_acknowledgement_fails("replay_previous_ack").await;
}

// ---------------------------------------------------------------------------------------------
// 5. Revoked agents
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn rotating_a_revoked_agent_fails_with_revoked_agent() {
    for backend in backends().await {
        let router = start_router(&backend, ACK_TIMEOUT_S).await;

        // Revoked first, rotated after.
        let mut gone = TestXem::enroll(&router, "xem-revoked", None).await;
        let id = gone.agent_id.clone();
        let key_hex = gone.key_hex();
        let revoke = router
            .post_json(
                &format!("/v1/management/agents/{id}/revoke-credentials"),
                &json!({ "reason": "suspected leak" }),
            )
            .await;
        revoke.assert_status(200);
        assert_eq!(gone.wait_exit().await.code(), Some(3), "the XEM exits as revoked");
        let view = router.rotate(&id, "scheduled").await;
        assert_eq!(
            (view["status"].as_str(), view["failure_reason"].as_str()),
            (Some("failed"), Some("revoked agent")),
            "[{}] {view}",
            backend.name
        );
        let request_id = request_id_of(&view);
        let rotation = router.rotation(&id, &request_id).await;
        assert_terminal(&rotation);
        assert_eq!(rotation["failure_reason"], "revoked agent");
        assert_eq!(
            rotation_events(&router, &id, &request_id).await,
            ["rotation_requested", "rotation_failed"]
        );
        let out = xeroctl(&router, &["agents", "curve-rotate", &id, "--wait"]).failure();
        assert!(out.stdout.contains("status: failed"), "{}", out.stdout);
        assert!(out.all().contains("revoked agent"), "{}", out.all());
        assert!(out.stderr.contains("containment trigger"), "{}", out.stderr);
        assert_eq!(router.agent(&id).await["status"], "revoked");
        assert!(!accepted(&router, &gone, &key_hex), "a revoked key stays out");

        // Revoked while a rotation waits for its acknowledgement.
        let mut mute = TestXem::enroll(&router, "xem-revoked-mid", Some("never_ack")).await;
        let id = mute.agent_id.clone();
        let request_id = request_id_of(&router.rotate(&id, "scheduled").await);
        assert_eq!(router.rotation(&id, &request_id).await["status"], "pending");
        router
            .post_json(&format!("/v1/management/agents/{id}/revoke-credentials"), &json!({}))
            .await
            .assert_status(200);
        wait_failed(&router, &id, &request_id, "revoked agent", "revoked mid-rotation").await;
        assert_eq!(mute.wait_exit().await.code(), Some(3));
    }
}

// ---------------------------------------------------------------------------------------------
// 6. The events stream
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn events_stream_shows_the_rotation_live_and_resumes() {
    for backend in backends().await {
        let router = start_router(&backend, ACK_TIMEOUT_S).await;
        let xem = TestXem::enroll(&router, "xem-sse", None).await;
        let id = xem.agent_id.as_str();

        // Opened before the request; the history comes first.
        let mut stream = EventStream::open(&router, id, None).await;
        let history = router.events(id).await;
        let mut seen = Vec::new();
        for expected in &history {
            let event = stream.next().await;
            assert_eq!(event.id, expected["id"].as_str().unwrap(), "history in order");
            seen.push(event);
        }
        let request_id = request_id_of(&router.rotate(id, "live").await);
        loop {
            let event = stream.next().await;
            let done = event.kind == "rotation_promoted"
                && event.data["request_id"] == request_id.as_str();
            seen.push(event);
            if done {
                break;
            }
        }
        for event in &seen {
            assert_eq!(event.data["id"], event.id.as_str(), "{event:?}");
            assert_eq!(event.data["type"], event.kind.as_str(), "{event:?}");
            assert_eq!(event.data["agent_id"], id, "{event:?}");
        }
        let mine: Vec<&str> = seen
            .iter()
            .filter(|e| e.data["request_id"] == request_id.as_str())
            .map(|e| e.kind.as_str())
            .collect();
        assert_eq!(
            mine,
            ["rotation_requested", "rotation_acknowledged", "rotation_promoted"],
            "[{}] {seen:#?}",
            backend.name
        );
        // The stream's order is the database's (commit) order, not the ids' (which carry the
        // writing router's clock and are made before the commit): no duplicates is what holds.
        let ids: HashSet<&str> = seen.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids.len(), seen.len(), "no duplicates: {seen:#?}");

        // Reconnecting after the request event resumes right after it.
        let at = seen.iter().position(|e| e.kind == "rotation_requested").expect("requested");
        let mut resumed = EventStream::open(&router, id, Some(&seen[at].id)).await;
        for expected in &seen[at + 1..] {
            let event = resumed.next().await;
            assert_eq!(event.id, expected.id, "[{}] resumed stream: {event:?}", backend.name);
        }
        // ... and goes on live: the completion is still to come (or just came).
        let completed = loop {
            let event = resumed.next().await;
            assert!(!ids.contains(event.id.as_str()), "duplicate {event:?}");
            if event.kind == "rotation_completed" {
                break event;
            }
        };
        assert_eq!(completed.data["request_id"], request_id.as_str());
    }
}

// ---------------------------------------------------------------------------------------------
// 7. kill -9 at every step
// ---------------------------------------------------------------------------------------------

/// After a crash, a rotation still pending when the agent says hello again is re-sent and
/// completes. So it may end `failed` only with `acknowledgement timeout`, and only when the
/// agent's first hello after `since` came too late to answer before the deadline.
async fn assert_fair_outcome(router: &Router, agent_id: &str, since: &str, rotation: &Value) {
    if rotation["status"] != "failed" {
        return;
    }
    assert_eq!(rotation["failure_reason"], "acknowledgement timeout", "{rotation}");
    let events = router.events(agent_id).await;
    let back = events
        .iter()
        .find(|e| e["type"] == "connected" && e["at"].as_str().is_some_and(|at| at > since))
        .expect("a hello after the restart");
    assert!(
        millis(&back["at"]) + 500 >= millis(&rotation["deadline_at"]),
        "[{}] the agent was back at {} but its rotation still timed out at {}: the pending \
         instruction was not re-sent on hello",
        router.backend,
        back["at"],
        rotation["deadline_at"]
    );
}

/// The XEM dies at `fault` during a rotation and is started again without it.
async fn xem_crash_during_rotation(fault: &str, must_promote: bool) {
    for backend in backends().await {
        let router = start_router(&backend, ACK_TIMEOUT_S).await;
        let mut xem = TestXem::enroll(&router, &format!("xem-{fault}"), Some(fault)).await;
        let id = xem.agent_id.clone();
        let old_hex = xem.key_hex();
        let request_id = request_id_of(&router.rotate(&id, "crash drill").await);
        xem.wait_crash().await;
        let pending = xem.pending_public();
        assert!(
            pending.is_some(),
            "[{}] {fault}: the new key is stored before anything else",
            backend.name
        );
        if fault == "crash_after_promotion" {
            // Promoted, but the agent still holds only the old key: it must stay accepted.
            let rotation = router.rotation(&id, &request_id).await;
            assert_eq!(rotation["status"], "promoted", "{rotation}");
            assert_eq!(router.agent(&id).await["curve_public_key"], pending.as_deref().unwrap());
            assert!(accepted(&router, &xem, &old_hex), "[{}] locked out", backend.name);
        }
        let since = now_rfc3339();
        xem.restart();
        let rotation = router.wait_terminal(&id, &request_id).await;
        assert_working(&router, &xem, &since).await;
        if must_promote {
            assert_eq!(rotation["status"], "promoted", "[{}] {fault}: {rotation}", backend.name);
        }
        assert_fair_outcome(&router, &id, &since, &rotation).await;
        assert_outcome(
            &router,
            &xem,
            &rotation,
            &old_hex,
            pending.as_deref().filter(|_| rotation["status"] == "promoted"),
        )
        .await;
        router.wait_fresh(&id, &now_rfc3339()).await;
    }
}

#[tokio::test]
async fn xem_killed_before_its_ack_recovers() {
    xem_crash_during_rotation("crash_before_ack", false).await;
}

#[tokio::test]
async fn xem_killed_after_its_ack_recovers() {
    xem_crash_during_rotation("crash_after_ack", false).await;
}

#[tokio::test]
async fn xem_killed_after_the_promotion_ends_on_the_new_key() {
    xem_crash_during_rotation("crash_after_promotion", true).await;
}

#[tokio::test]
async fn router_killed_after_the_request_recovers() {
    for backend in backends().await {
        let mut router = start_router(&backend, ACK_TIMEOUT_S).await;
        let xem = TestXem::enroll(&router, "xem-router-crash", None).await;
        let id = xem.agent_id.clone();
        let old_hex = xem.key_hex();
        let request_id = request_id_of(&router.rotate(&id, "crash drill").await);
        router.kill();
        let since = now_rfc3339();
        router.restart().await;
        let rotation = router.wait_terminal(&id, &request_id).await;
        assert_working(&router, &xem, &since).await;
        assert_fair_outcome(&router, &id, &since, &rotation).await;
        assert_outcome(&router, &xem, &rotation, &old_hex, None).await;
        router.wait_fresh(&id, &now_rfc3339()).await;
    }
}

#[tokio::test]
async fn router_and_xem_killed_after_the_promotion_end_on_the_new_key() {
    for backend in backends().await {
        let mut router = start_router(&backend, ACK_TIMEOUT_S).await;
        let mut xem =
            TestXem::enroll(&router, "xem-both-crash", Some("crash_after_promotion")).await;
        let id = xem.agent_id.clone();
        let old_hex = xem.key_hex();
        let request_id = request_id_of(&router.rotate(&id, "crash drill").await);
        xem.wait_crash().await;
        let new_public = xem.pending_public().expect("the pending key");
        assert_eq!(router.rotation(&id, &request_id).await["status"], "promoted");
        router.kill();
        // The agent comes back first and waits for the router (it keeps reconnecting).
        let since = now_rfc3339();
        xem.restart();
        router.restart().await;
        let rotation = router.wait_terminal(&id, &request_id).await;
        assert_eq!(rotation["status"], "promoted");
        assert_working(&router, &xem, &since).await;
        assert_outcome(&router, &xem, &rotation, &old_hex, Some(&new_public)).await;
        router.wait_fresh(&id, &now_rfc3339()).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Replicas (PostgreSQL)
// ---------------------------------------------------------------------------------------------

/// The routers of the replica tests: the tests' acknowledgement timeout.
fn with_ack_timeout() -> RouterOptions {
    RouterOptions {
        extra_args: vec![
            "--curve-rotation-ack-timeout-seconds".to_string(),
            ACK_TIMEOUT_S.to_string(),
        ],
        ..RouterOptions::default()
    }
}

/// Operators reach any replica; the agent's mesh session is on one of them. A rotation asked
/// through another replica than the agent's must still reach the agent and be promoted.
#[tokio::test]
async fn rotation_requested_through_another_replica_is_promoted() {
    for backend in backends().await.into_iter().filter(|b| !b.is_sqlite()) {
        let options = with_ack_timeout();
        let first = Router::start_with(&backend, options).await;
        let second = first.replica().await;
        let third = first.replica().await;
        // The agent's session is on the second replica; the operator talks to the first.
        let xem = TestXem::enroll_via(&first, &second, "xem-replicas", None).await;
        let id = xem.agent_id.as_str();
        let old_hex = xem.key_hex();
        for replica in [&first, &third] {
            assert!(accepted(replica, &xem, &old_hex), "every replica allows the enrolled key");
        }
        let request_id = request_id_of(&first.rotate(id, "scheduled").await);
        let rotation = first.wait_terminal(id, &request_id).await;
        assert_eq!(rotation["status"], "promoted", "[{}] {rotation}", backend.name);
        assert_working(&second, &xem, rotation["completed_at"].as_str().unwrap()).await;
        assert_outcome(&second, &xem, &rotation, &old_hex, None).await;
        // Retired on the replica that saw the agent on its new key, and so everywhere: the
        // other replicas learn it from the retirement's signal, not from a restart.
        let new_hex = xem.key_hex();
        assert_ne!(new_hex, old_hex);
        for (name, replica) in [("first", &first), ("second", &second), ("third", &third)] {
            eventually(&format!("the {name} replica to refuse the old key"), SETTLE, || {
                let refused = !accepted(replica, &xem, &old_hex);
                async move { refused.then_some(()) }
            })
            .await;
            assert!(accepted(replica, &xem, &new_hex), "the {name} replica allows the new key");
        }
    }
}

/// A replica that missed a promotion made on another one still finishes it, from the store. The
/// promotion is made on A; the agent dies before switching to its new key (XEM fault
/// `crash_after_promotion`); A is killed; the agent comes back on B, whose reads of the
/// promotion on its signal and on the agent's hello are lost (router fault
/// `ignore_promotion_reads`). B's periodic full refresh finds the agent listed with two keys,
/// tells it it was promoted, and retires the old key at its first frame on the new one: the old
/// key is refused on B without a restart. Without the refresh's re-read the old key stayed
/// accepted on B for good.
#[tokio::test]
async fn a_replica_that_missed_a_promotion_finishes_it_from_the_store() {
    for backend in backends().await.into_iter().filter(|b| !b.is_sqlite()) {
        let options = with_ack_timeout();
        let mut first = Router::start_with(&backend, options.clone()).await;
        let mut lossy = options;
        lossy.env.push(("XEROTIER_ROUTER_TEST_FAULT".into(), "ignore_promotion_reads".into()));
        let second = first.replica_with(lossy).await;
        // The agent's session is on A; the operator talks to B.
        let mut xem = TestXem::enroll_via(
            &second,
            &first,
            "xem-missed-promotion",
            Some("crash_after_promotion"),
        )
        .await;
        let id = xem.agent_id.clone();
        let old_hex = xem.key_hex();
        let request_id = request_id_of(&second.rotate(&id, "missed promotion").await);
        xem.wait_crash().await;
        let pending = xem.pending_public().expect("the new key is stored before the ack");
        let rotation = second.wait_terminal(&id, &request_id).await;
        assert_eq!(rotation["status"], "promoted", "[{}] {rotation}", backend.name);
        // Promoted, but the agent holds only the old key so far: it stays accepted.
        assert!(accepted(&second, &xem, &old_hex), "[{}] locked out", backend.name);
        first.kill();
        let since = now_rfc3339();
        xem.restart();
        assert_working(&second, &xem, &since).await;
        assert_eq!(xem.key().public_z85(), pending, "the agent switched to its promoted key");
        assert_outcome(&second, &xem, &rotation, &old_hex, Some(&pending)).await;
        assert!(
            second.logs().contains("a promotion this replica had missed was read from the store"),
            "[{}] the full refresh, not a hello or a signal, finished it",
            backend.name
        );
    }
}

/// kill -9 of the replica holding the sessions while rotations of its agents are in flight
/// (issue 12): every agent is connected to another replica within 5 s, every rotation ends
/// terminal there (promoted or failed with a SPEC reason, never stuck `pending`), and each agent
/// keeps working on the key the store says it has, which the surviving replica accepts.
#[tokio::test]
async fn rotations_in_flight_when_their_replica_is_killed_all_end_terminal() {
    /// SPEC: an agent whose replica dies is connected to another within this.
    const FAILOVER: Duration = Duration::from_secs(5);
    for backend in backends().await.into_iter().filter(|b| !b.is_sqlite()) {
        let options = with_ack_timeout();
        let mut first = Router::start_with(&backend, options).await;
        let second = first.replica().await;
        // Sessions on the first replica; the operator talks to the second.
        let mut xems = Vec::new();
        for n in 0..3 {
            xems.push(TestXem::enroll_via(&second, &first, &format!("xem-killed-{n}"), None).await);
        }
        let mut requests = Vec::new();
        for xem in &xems {
            requests.push(request_id_of(&second.rotate(&xem.agent_id, "scheduled").await));
        }
        let since = now_rfc3339();
        first.kill();
        let killed = Instant::now();
        let survivor = &second;
        for xem in &xems {
            eventually(
                &format!("{} to renew on the surviving replica", xem.name),
                FAILOVER,
                || {
                    let since = since.clone();
                    async move {
                        let agent = survivor.agent(&xem.agent_id).await;
                        let fresh = agent["last_heartbeat_at"]
                            .as_str()
                            .is_some_and(|at| at > since.as_str());
                        (fresh && agent["status"] == "active").then_some(())
                    }
                },
            )
            .await;
        }
        eprintln!("[{}] every agent failed over in {:?}", backend.name, killed.elapsed());
        for (xem, request_id) in xems.iter().zip(&requests) {
            let rotation = second.wait_terminal(&xem.agent_id, request_id).await;
            eprintln!("[{}] {}: {}", backend.name, xem.name, rotation["status"]);
            let ended = rotation["completed_at"].as_str().expect("a terminal rotation has ended");
            assert_working(&second, xem, ended).await;
        }
        // Nothing is left pending for any of them.
        for xem in &xems {
            let agent = second.agent(&xem.agent_id).await;
            assert_eq!(agent["status"], "active", "{agent}");
        }
    }
}
