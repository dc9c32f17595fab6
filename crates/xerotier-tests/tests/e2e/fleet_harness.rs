//! Test support for the fleet: a real `xerotier-xem` process per agent (all its paths in its own
//! temporary directory), raw ZeroMQ clients for the mesh endpoint, enrollment over HTTP with
//! fresh keys, and hand-made join tokens.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use xerotier_core::OsEntropy;
use xerotier_credentials::{CurveKeyPair, SigningKeyPair};
use xerotier_proto::mesh::Frame;

use crate::harness::{
    EXIT_DEADLINE, POLL_INTERVAL, Resp, Router, STARTUP_DEADLINE, XEM_BIN, binary, send_sigterm,
    wait_for_exit,
};

/// Every XEM in the tests renews its lease this often, so an agent is `disconnected` 600 ms
/// (three missed leases) after its XEM dies.
pub const LEASE_MS: u64 = 200;
/// How long an agent may take to change status (connect, reconnect, miss its leases).
pub const AGENT_DEADLINE: Duration = Duration::from_secs(15);
/// The exit status of a XEM whose credentials were revoked.
pub const EXIT_REVOKED: i32 = 3;

// ---------------------------------------------------------------------------------------------
// The XEM process
// ---------------------------------------------------------------------------------------------

/// How a [`Xem`] is configured: command-line flags, or a flat YAML file given with `--config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XemConfig {
    Flags,
    YamlFile,
}

/// The unprivileged user the suite's XEMs run tools as.
pub const TOOL_USER: &str = "nobody";

/// A `xerotier-xem` process with every path in its own temporary directory; killed on drop.
/// Restarts keep the directory, so a restarted XEM finds its enrolled identity.
#[derive(Debug)]
pub struct Xem {
    pub name: String,
    router_url: String,
    config: XemConfig,
    dir: TempDir,
    child: Option<Child>,
    starts: usize,
    /// Settings beyond the ones every start uses (see [`Xem::set`]).
    extra: Vec<(&'static str, String)>,
    /// The XEM test fault (`XEROTIER_XEM_TEST_FAULT`) of the next starts, if any.
    pub fault: Option<String>,
}

impl Xem {
    /// A XEM for `router`, registering as `name`, configured with flags; not started.
    pub fn new(router: &Router, name: &str) -> Xem {
        Self::with_config(&router.base_url(), name, XemConfig::Flags)
    }

    /// A XEM for the router at `router_url` (`http://…`); not started.
    pub fn with_config(router_url: &str, name: &str, config: XemConfig) -> Xem {
        let dir = tempfile::Builder::new().prefix("xem-e2e-").tempdir().expect("tempdir");
        // The tool user passes through (never lists) to its tools and its run directory.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
            .expect("making the XEM's directory traversable");
        Xem {
            name: name.to_string(),
            router_url: router_url.to_string(),
            config,
            dir,
            child: None,
            starts: 0,
            extra: Vec::new(),
            fault: None,
        }
    }

    /// One more config setting (`key` as in the YAML file) for every later start.
    pub fn set(&mut self, key: &'static str, value: impl Into<String>) {
        self.extra.push((key, value.into()));
    }

    /// A XEM started with `join_key`: it enrolls, then connects to the mesh.
    pub fn enroll(router: &Router, name: &str, join_key: &str) -> Xem {
        let mut xem = Self::new(router, name);
        xem.start(Some(join_key));
        xem
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn curve_key_path(&self) -> PathBuf {
        self.dir.path().join("curve.hex")
    }

    pub fn signing_key_path(&self) -> PathBuf {
        self.dir.path().join("signing.hex")
    }

    pub fn identity_path(&self) -> PathBuf {
        self.state_dir().join("identity.json")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("xem.yaml")
    }

    /// Its `tools_dir`: empty unless a test puts tool bundles there before the start.
    pub fn tools_dir(&self) -> PathBuf {
        self.dir.path().join("tools")
    }

    /// Its `run_dir`: per-invocation directories.
    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// Its `credentials_dir`.
    pub fn credentials_dir(&self) -> PathBuf {
        self.dir.path().join("creds")
    }

    /// `xerotier-xem reload` for this agent, as the systemd unit's ExecReload runs it.
    pub fn reload_command(&self) -> Command {
        let config = self.dir.path().join("reload.yaml");
        std::fs::write(&config, "").expect("writing an empty config");
        let mut command = Command::new(binary(XEM_BIN));
        command.arg("--config").arg(config).arg("--state-dir").arg(self.state_dir()).args([
            "reload",
            "--pid",
            &self.pid().to_string(),
        ]);
        command
    }

    fn out_path(&self, start: usize) -> PathBuf {
        self.dir.path().join(format!("xem-{start}.out"))
    }

    fn err_path(&self, start: usize) -> PathBuf {
        self.dir.path().join(format!("xem-{start}.err"))
    }

    /// The settings every start uses, as (config key, value).
    fn settings(&self, join_key: Option<&str>) -> Vec<(&'static str, String)> {
        let path = |p: PathBuf| p.display().to_string();
        let mut settings = vec![
            ("router_url", self.router_url.clone()),
            ("registration_name", self.name.clone()),
            ("state_dir", path(self.state_dir())),
            ("curve_key_path", path(self.curve_key_path())),
            ("signing_key_path", path(self.signing_key_path())),
            ("tools_dir", path(self.tools_dir())),
            ("credentials_dir", path(self.credentials_dir())),
            ("lease_renewal_interval_ms", LEASE_MS.to_string()),
        ];
        settings.extend(self.extra.iter().cloned());
        if let Some(key) = join_key {
            // In a 0600 file, as operators should hand it over: never on a command line.
            let file = self.dir.path().join("join.key");
            std::fs::write(&file, key).expect("writing the join key file");
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
            settings.push(("join_key_file", path(file)));
        }
        settings
    }

    /// Starts the XEM, with a join key (first start) or without (restart of an enrolled host).
    pub fn start(&mut self, join_key: Option<&str>) {
        // A XEM refuses a missing tools_dir; these agents offer no tools.
        std::fs::create_dir_all(self.tools_dir()).expect("creating the tools dir");
        let settings = self.settings(join_key);
        let args: Vec<OsString> = match self.config {
            XemConfig::Flags => {
                // An empty config file, so that a /etc/xerotier/xem.yaml on the test host is
                // never read.
                let empty = self.dir.path().join("empty.yaml");
                std::fs::write(&empty, "").expect("writing an empty XEM config");
                let mut args = vec!["--config".into(), empty.into_os_string()];
                for (key, value) in settings {
                    args.push(format!("--{}", key.replace('_', "-")).into());
                    args.push(value.into());
                }
                args
            }
            XemConfig::YamlFile => {
                let text: String =
                    settings.iter().map(|(key, value)| format!("{key}: {value:?}\n")).collect();
                std::fs::write(self.config_path(), text).expect("writing the XEM config");
                vec!["--config".into(), self.config_path().into_os_string()]
            }
        };
        self.spawn(args);
    }

    /// Starts again on the same directory, without a join key; the XEM must be stopped.
    pub fn restart(&mut self) {
        self.start(None);
    }

    /// Starts the XEM with `text` as its whole config file (`--config` and nothing else).
    pub fn start_with_config_text(&mut self, text: &str) {
        std::fs::write(self.config_path(), text).expect("writing the XEM config");
        self.spawn(vec!["--config".into(), self.config_path().into_os_string()]);
    }

    fn spawn(&mut self, args: Vec<OsString>) {
        assert!(self.child.is_none(), "XEM {} is already running", self.name);
        self.starts += 1;
        let mut command = Command::new(binary(XEM_BIN));
        command.args(&args);
        // Nothing from the environment the tests run in may configure the XEM (nor inject a
        // test fault).
        for (var, _) in std::env::vars_os() {
            let name = var.to_string_lossy();
            if name.starts_with("XEM_") || name.starts_with("XEROTIER_XEM_") {
                command.env_remove(var);
            }
        }
        command.env_remove("NOTIFY_SOCKET").env_remove("RUST_LOG");
        // Tools run as `nobody` (the suite runs as root, as CI does) in this XEM's own run dir;
        // through the environment, so configs written by a test need not repeat them.
        command.env("XEM_TOOL_USER", TOOL_USER).env("XEM_RUN_DIR", self.run_dir());
        if let Some(fault) = &self.fault {
            command.env("XEROTIER_XEM_TEST_FAULT", fault);
        }
        command
            .stdin(Stdio::null())
            .stdout(File::create(self.out_path(self.starts)).expect("XEM stdout file"))
            .stderr(File::create(self.err_path(self.starts)).expect("XEM stderr file"));
        self.child = Some(command.spawn().expect("spawning xerotier-xem"));
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the XEM is not running").id()
    }

    /// Waits for the XEM to exit by itself; panics (with its logs) if it runs past `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("the XEM is not running");
        match wait_for_exit(&mut child, timeout) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("XEM {} did not exit within {timeout:?}:\n{}", self.name, self.logs());
            }
        }
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn stop_with_sigterm(&mut self) -> ExitStatus {
        send_sigterm(self.pid());
        self.wait_exit(EXIT_DEADLINE)
    }

    /// SIGKILL (a crash or a host that went down): nothing is retired, nothing is said.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("the XEM is not running");
        child.kill().expect("killing the XEM");
        child.wait().expect("reaping the XEM");
    }

    /// Panics (with the logs) if the XEM exited.
    pub fn assert_running(&mut self) {
        let exited = self.child.as_mut().expect("the XEM was not started").try_wait();
        if let Ok(Some(status)) = exited {
            self.child = None;
            panic!("XEM {} exited ({status}):\n{}", self.name, self.logs());
        }
    }

    /// The stderr of the latest start.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.err_path(self.starts)).unwrap_or_default()
    }

    /// Everything the XEM printed, over all its starts.
    pub fn logs(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                format!(
                    "--- start {n} ---\n{}{}",
                    std::fs::read_to_string(self.out_path(n)).unwrap_or_default(),
                    std::fs::read_to_string(self.err_path(n)).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("")
    }

    /// `state/identity.json`, once the XEM has enrolled.
    pub fn identity(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.identity_path()).ok()?;
        Some(serde_json::from_str(&text).expect("identity.json is JSON"))
    }

    /// Waits until the XEM has enrolled (its identity is on disk); returns the agent id.
    /// Panics with the XEM's logs if it exits first.
    pub async fn wait_enrolled(&mut self) -> String {
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            if let Some(identity) = self.identity() {
                let id = identity["agent_id"].as_str().expect("agent_id").to_string();
                assert!(id.starts_with("agt_"), "agent id {id:?}");
                return id;
            }
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "XEM {} did not enroll within {STARTUP_DEADLINE:?}:\n{}",
                self.name,
                self.logs()
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The XEM's CURVE key pair, read from its key file (`curve.hex`, or `curve.hex.revoked`
    /// after a revocation retired it).
    pub fn curve_keys(&self, file: &Path) -> CurveKeyPair {
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        assert_eq!(text.trim().len(), 64, "{} holds a 32-byte hex secret", file.display());
        CurveKeyPair::from_secret_hex(text.trim()).expect("a CURVE secret")
    }
}

impl Drop for Xem {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() && self.starts > 0 {
            eprintln!("----- XEM {} log -----\n{}\n-----", self.name, self.logs());
        }
    }
}

/// A XEM enrolled with a fresh join key, its agent `active`: returns it with its agent id.
pub async fn enrolled_xem(router: &Router, name: &str) -> (Xem, String) {
    enrolled_xem_with(router, name, |_| {}).await
}

/// As [`enrolled_xem`], with `prepare` run before the first start (tools, credentials).
pub async fn enrolled_xem_with(
    router: &Router,
    name: &str,
    prepare: impl FnOnce(&Xem),
) -> (Xem, String) {
    enrolled_xem_configured(router, name, &[], prepare).await
}

/// As [`enrolled_xem_with`], with more config `settings` (key as in the YAML file, value).
pub async fn enrolled_xem_configured(
    router: &Router,
    name: &str,
    settings: &[(&'static str, &str)],
    prepare: impl FnOnce(&Xem),
) -> (Xem, String) {
    let key = router.mint_join_key(&format!("{name}-key")).await;
    let mut xem = Xem::new(router, name);
    for (setting, value) in settings {
        xem.set(setting, *value);
    }
    prepare(&xem);
    xem.start(Some(&key.token));
    let id = xem.wait_enrolled().await;
    router.wait_agent_status(&id, "active", AGENT_DEADLINE).await;
    (xem, id)
}

// ---------------------------------------------------------------------------------------------
// Enrollment over HTTP
// ---------------------------------------------------------------------------------------------

/// Fresh agent keys, as a XEM would create at its first start.
#[derive(Debug)]
pub struct AgentKeys {
    pub curve: CurveKeyPair,
    pub signing: SigningKeyPair,
}

impl AgentKeys {
    pub fn fresh() -> AgentKeys {
        AgentKeys {
            curve: CurveKeyPair::generate(&OsEntropy),
            signing: SigningKeyPair::generate(&OsEntropy),
        }
    }
}

/// The body of `POST /v1/enroll`.
pub fn enroll_body(join_key: &str, name: &str, keys: &AgentKeys) -> Value {
    json!({
        "join_key": join_key,
        "registration_name": name,
        "curve_public_key": keys.curve.public_z85(),
        "signing_public_key": keys.signing.public_hex(),
        "manifest": { "version": 1, "tools": [], "workspaces": [] },
        "lease_renewal_interval_ms": LEASE_MS,
    })
}

/// Enrolls over HTTP with fresh keys; the answer and the keys.
pub async fn enroll(router: &Router, join_key: &str, name: &str) -> (Resp, AgentKeys) {
    let keys = AgentKeys::fresh();
    let resp = router.post_enroll(&enroll_body(join_key, name, &keys)).await;
    (resp, keys)
}

// ---------------------------------------------------------------------------------------------
// Join tokens by hand
// ---------------------------------------------------------------------------------------------

pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn b64url_json(value: &Value) -> String {
    b64url(value.to_string().as_bytes())
}

/// The header and claims of a JWT, decoded (the signature is not checked).
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three parts: {token}");
    let decode = |part: &str| -> Value {
        let bytes = URL_SAFE_NO_PAD.decode(part).expect("base64url");
        serde_json::from_slice(&bytes).expect("JSON")
    };
    (decode(parts[0]), decode(parts[1]))
}

/// A JWT with `header` and `claims`, signed (EdDSA) by `key`.
pub fn eddsa_token(header: &Value, claims: &Value, key: &SigningKeyPair) -> String {
    let input = format!("{}.{}", b64url_json(header), b64url_json(claims));
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64url(&signature))
}

/// A JWT with `header` and `claims`, with an HMAC-SHA256 signature under `secret`.
pub fn hs256_token(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = format!("{}.{}", b64url_json(header), b64url_json(claims));
    format!("{input}.{}", b64url(&hmac_sha256(secret, input.as_bytes())))
}

/// HMAC-SHA256 (RFC 2104), for hand-made HS256 tokens.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

// ---------------------------------------------------------------------------------------------
// Raw mesh clients
// ---------------------------------------------------------------------------------------------

/// How a raw client's handshake with the mesh endpoint ended, as its socket monitor saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    Succeeded,
    /// The server refused the client's key (ZAP status code).
    FailedAuth(u32),
    /// The peers did not agree on the security mechanism or the protocol.
    FailedProtocol(u32),
    FailedNoDetail(u32),
    /// Nothing decisive within the deadline.
    TimedOut,
}

/// A ZeroMQ DEALER connected to the mesh endpoint outside any XEM: a CURVE client with keys of
/// the test's choosing, or a client without CURVE at all. Blocking; fine in a test.
pub struct RawMesh {
    socket: zmq::Socket,
    monitor: zmq::Socket,
    _context: zmq::Context,
}

impl std::fmt::Debug for RawMesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawMesh").finish_non_exhaustive()
    }
}

impl RawMesh {
    /// A CURVE client with `own` keys, for a server whose public key is `server_public_z85`.
    pub fn curve(addr: &str, own: &CurveKeyPair, server_public_z85: &str) -> RawMesh {
        Self::connect(addr, |socket| {
            socket.set_curve_serverkey(server_public_z85.as_bytes())?;
            socket.set_curve_publickey(own.public_z85().as_bytes())?;
            socket.set_curve_secretkey(own.secret_z85().expose_secret().as_bytes())
        })
    }

    /// A client without any security mechanism (ZMTP NULL).
    pub fn plain(addr: &str) -> RawMesh {
        Self::connect(addr, |_| Ok(()))
    }

    fn connect(addr: &str, configure: impl FnOnce(&zmq::Socket) -> zmq::Result<()>) -> RawMesh {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::DEALER).expect("a DEALER socket");
        configure(&socket).expect("configuring the raw client");
        socket.set_linger(0).expect("linger");
        let events = zmq::SocketEvent::HANDSHAKE_SUCCEEDED.to_raw()
            | zmq::SocketEvent::HANDSHAKE_FAILED_AUTH.to_raw()
            | zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL.to_raw()
            | zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL.to_raw();
        socket.monitor("inproc://e2e-raw-monitor", i32::from(events)).expect("socket monitor");
        let monitor = context.socket(zmq::PAIR).expect("a PAIR socket");
        monitor.connect("inproc://e2e-raw-monitor").expect("connecting the monitor");
        socket.connect(addr).expect("connecting the raw client");
        RawMesh { socket, monitor, _context: context }
    }

    /// Queues `frame` (encoded as the XEM would) for the router.
    pub fn send(&self, frame: &Frame) {
        self.socket
            .send(xerotier_proto::mesh::encode(frame), zmq::DONTWAIT)
            .expect("queueing a frame");
    }

    /// Queues raw bytes for the router.
    pub fn send_bytes(&self, bytes: &[u8]) {
        self.socket.send(bytes, zmq::DONTWAIT).expect("queueing bytes");
    }

    /// The first decisive handshake event within `timeout`.
    pub fn handshake(&self, timeout: Duration) -> Handshake {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Handshake::TimedOut;
            }
            let millis = i64::try_from(left.as_millis()).unwrap_or(i64::MAX).max(1);
            if self.monitor.poll(zmq::POLLIN, millis).expect("polling the monitor") == 0 {
                continue;
            }
            let frames = self.monitor.recv_multipart(0).expect("a monitor event");
            let first = &frames[0];
            let event = zmq::SocketEvent::from_raw(u16::from_le_bytes([first[0], first[1]]));
            let value = u32::from_le_bytes([first[2], first[3], first[4], first[5]]);
            match event {
                zmq::SocketEvent::HANDSHAKE_SUCCEEDED => return Handshake::Succeeded,
                zmq::SocketEvent::HANDSHAKE_FAILED_AUTH => return Handshake::FailedAuth(value),
                zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL => {
                    return Handshake::FailedProtocol(value);
                }
                zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL => {
                    return Handshake::FailedNoDetail(value);
                }
                _ => {}
            }
        }
    }

    /// A frame from the router within `timeout`, if any. The replica list the router sends
    /// after every hello is skipped (see [`RawMesh::recv_any`]), and so is the router mesh key
    /// set it sends after a hello until the agent acknowledges it (SPEC §9).
    pub fn recv(&self, timeout: Duration) -> Option<Frame> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_any(left)? {
                Frame::Replicas { .. } | Frame::RouterKeys { .. } => continue,
                frame => return Some(frame),
            }
        }
    }

    /// Any frame from the router within `timeout`, if any.
    pub fn recv_any(&self, timeout: Duration) -> Option<Frame> {
        let millis = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        if self.socket.poll(zmq::POLLIN, millis).expect("polling the raw client") == 0 {
            return None;
        }
        let bytes = self.socket.recv_bytes(0).expect("receiving");
        Some(xerotier_proto::mesh::decode(&bytes).expect("a frame from the router"))
    }
}

/// A Hello frame, as a XEM sends it on connect, claiming `agent_id`.
pub fn hello(agent_id: &str) -> Frame {
    Frame::Hello {
        agent_id: agent_id.to_string(),
        xem_version: "e2e-raw".to_string(),
        manifest_hash: "0".repeat(64),
        manifest_version: 1,
    }
}

/// A lease renewal claiming `agent_id`.
pub fn lease_renewal(agent_id: &str, seq: u64) -> Frame {
    Frame::LeaseRenewal {
        agent_id: agent_id.to_string(),
        seq,
        in_flight: Vec::new(),
        manifest_hash: "0".repeat(64),
        manifest_version: 1,
    }
}

// ---------------------------------------------------------------------------------------------
// The example tools
// ---------------------------------------------------------------------------------------------

/// `examples/tools`: the bundles the quickstart uses (`kubectl-get`, `noop`, `sleep`) and
/// their workspace.
pub fn examples_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/tools")
}

/// Copies a directory tree (tool bundles, a XEM's state).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Gives `xem` the example tools and a 0600 credential for their workspace.
pub fn prepare_examples(xem: &Xem) {
    use std::os::unix::fs::PermissionsExt;
    copy_dir(&examples_dir(), &xem.tools_dir());
    std::fs::create_dir_all(xem.credentials_dir()).unwrap();
    let file = xem.credentials_dir().join("kubernetes-prod.yaml");
    std::fs::write(&file, "current-context: e2e\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
}
