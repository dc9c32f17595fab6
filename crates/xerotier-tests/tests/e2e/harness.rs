//! Test support: the router, XEM and CLI binaries, a running router per test and backend, an
//! HTTP client, a `xeroctl` runner, and deadline-based polling. The XEM process and raw mesh
//! clients are in `fleet_harness`.

use std::fs::File;
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tempfile::TempDir;
use xerotier_core::OsEntropy;
use xerotier_testkit::TestDb;

/// How long a router may take to start answering `/healthz`.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(20);
/// How long a process may take to exit after SIGTERM, or a `xeroctl` call to finish.
pub const EXIT_DEADLINE: Duration = Duration::from_secs(15);
/// Interval between two probes of a polled condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

pub const ROUTER_BIN: &str = "xerotier-router";
pub const XEROCTL_BIN: &str = "xeroctl";
pub const XEM_BIN: &str = "xerotier-xem";
/// The router's master key, in the test's directory (beside, not in, the state dir).
pub const MASTER_KEY_FILE: &str = "master.key";

// ---------------------------------------------------------------------------------------------
// Polling
// ---------------------------------------------------------------------------------------------

/// Probes until `probe` answers `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Waits for `child` to exit, polling; `None` when it is still running at the deadline.
pub fn wait_for_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() >= deadline => return None,
            Ok(None) => std::thread::sleep(POLL_INTERVAL),
            Err(err) => panic!("waiting for process {}: {err}", child.id()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Binaries
// ---------------------------------------------------------------------------------------------

/// How to get the binaries the suite runs, for the message when one is missing.
pub const BUILD_HINT: &str = "run `cargo build --workspace --bins --features \
                              xerotier-xem/test-faults` first, or use scripts/test.sh";

/// Where the workspace binaries are: `XEROTIER_E2E_BIN_DIR` when set, else the profile
/// directory of this test binary (`<target dir>/[<triple>/]<profile>/deps/e2e-…` →
/// `…/<profile>/`), where `cargo build` of the same profile puts them. Going from the test
/// binary rather than from `CARGO_TARGET_DIR` follows any target dir (and `--target`,
/// `--release`, `--cargo-profile`) the suite was built with, under `cargo test` and nextest.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XEROTIER_E2E_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("path of the test binary");
    let deps = exe.parent().expect("the test binary's directory");
    deps.parent().expect("the target profile directory").to_path_buf()
}

/// The path of a workspace binary (`xerotier-router`, `xerotier-xem`, `xeroctl`), as the last
/// `cargo build` left it. The suite never builds: Cargo only builds the binaries of the package
/// under test for its integration tests, and this package has none, so they are built first
/// (`scripts/test.sh` does it). Panics with how to build them when one is missing.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(path.is_file(), "{} does not exist: {BUILD_HINT}", path.display());
    path
}

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

/// A state store for one router: the embedded SQLite file in the state dir (the router's
/// default, no `--database-url`), or a fresh PostgreSQL database.
#[derive(Debug)]
pub struct Backend {
    pub name: &'static str,
    db: Option<TestDb>,
}

impl Backend {
    pub fn database_url(&self) -> Option<&str> {
        self.db.as_ref().map(TestDb::url)
    }

    pub fn is_sqlite(&self) -> bool {
        self.db.is_none()
    }
}

/// SQLite always; PostgreSQL when `XEROTIER_TEST_POSTGRES_URL` is set (a loud warning when it
/// is not, a failure when `XEROTIER_REQUIRE_POSTGRES=1`).
pub async fn backends() -> Vec<Backend> {
    let mut all = vec![Backend { name: "sqlite", db: None }];
    if let Some(db) = TestDb::postgres().await {
        all.push(Backend { name: "postgres", db: Some(db) });
    }
    all
}

// ---------------------------------------------------------------------------------------------
// The router
// ---------------------------------------------------------------------------------------------

/// How to start a router.
#[derive(Debug, Clone)]
pub struct RouterOptions {
    pub log_level: String,
    pub log_format: Option<String>,
    /// `--mesh-bind`; `None` is `tcp://127.0.0.1:0`, a fresh port at every start. Agents keep
    /// the mesh address they enrolled with, so a test that restarts the router under live
    /// agents gives a fixed port (see [`closed_port`]).
    pub mesh_bind: Option<String>,
    /// `--listen`; `None` is `127.0.0.1:0`, a fresh port at every start. Agents keep the
    /// router URL they enrolled with (for a signed key fetch), so a test that restarts the
    /// router and needs it gives a fixed port.
    pub listen: Option<String>,
    /// More flags, e.g. `--join-key-max-ttl-seconds 60`.
    pub extra_args: Vec<String>,
    /// Environment for the router process (set after the test's own `XEROTIER_ROUTER_*` are
    /// removed), e.g. a test fault.
    pub env: Vec<(String, String)>,
    /// The CA clients trust, when not the router's own (`<state dir>/tls/ca.pem`): for a
    /// router serving the operator's certificate.
    pub ca_file: Option<PathBuf>,
}

impl Default for RouterOptions {
    fn default() -> Self {
        Self {
            log_level: "info".to_string(),
            log_format: None,
            mesh_bind: None,
            listen: None,
            extra_args: vec![],
            env: vec![],
            ca_file: None,
        }
    }
}

impl RouterOptions {
    /// The mesh endpoint on a port chosen now, the same at every start of the router.
    pub fn fixed_mesh_port() -> RouterOptions {
        RouterOptions {
            mesh_bind: Some(format!("tcp://127.0.0.1:{}", closed_port())),
            ..RouterOptions::default()
        }
    }

    /// The mesh endpoint and the HTTP API on ports chosen now, the same at every start.
    pub fn fixed_ports() -> RouterOptions {
        RouterOptions {
            listen: Some(format!("127.0.0.1:{}", closed_port())),
            ..RouterOptions::fixed_mesh_port()
        }
    }
}

/// A running `xerotier-router` process on a temporary state dir; killed on drop.
#[derive(Debug)]
pub struct Router {
    pub backend: &'static str,
    dir: TempDir,
    database_url: Option<String>,
    options: RouterOptions,
    child: Option<Child>,
    starts: usize,
    addr: String,
    admin_key: String,
    /// For a replica: the admin key of the router that bootstrapped the shared store.
    shared_admin_key: Option<String>,
    api: Api,
}

impl Router {
    pub async fn start(backend: &Backend) -> Router {
        Self::start_with(backend, RouterOptions::default()).await
    }

    pub async fn start_with(backend: &Backend, options: RouterOptions) -> Router {
        let dir = tempfile::Builder::new().prefix("xerotier-e2e-").tempdir().expect("tempdir");
        xerotier_seal::MasterKey::create_file(&dir.path().join(MASTER_KEY_FILE), &OsEntropy)
            .expect("creating the router's master key");
        let mut router = Router {
            backend: backend.name,
            dir,
            database_url: backend.database_url().map(str::to_string),
            options,
            child: None,
            starts: 0,
            addr: String::new(),
            admin_key: String::new(),
            shared_admin_key: None,
            api: Api::new(String::new(), None),
        };
        router.launch().await;
        router
    }

    /// A second router on the same PostgreSQL database, with a state dir of its own. The store
    /// is bootstrapped already, so it must not create (or write) a bootstrap key of its own.
    pub async fn replica(&self) -> Router {
        self.replica_with(self.options.clone()).await
    }

    /// [`Router::replica`] started with `options` of its own (e.g. a test fault in its `env`).
    pub async fn replica_with(&self, options: RouterOptions) -> Router {
        let url = self.database_url.clone().expect("replicas share a PostgreSQL database");
        self.replica_on(url, options).await
    }

    /// A replica that reaches the shared database at `database_url` (through a proxy the test
    /// can cut, say).
    pub async fn replica_via(&self, database_url: String) -> Router {
        self.replica_on(database_url, self.options.clone()).await
    }

    async fn replica_on(&self, database_url: String, options: RouterOptions) -> Router {
        let dir = tempfile::Builder::new().prefix("xerotier-e2e-").tempdir().expect("tempdir");
        // Every replica of one store seals under the same master key.
        std::fs::copy(self.master_key_path(), dir.path().join(MASTER_KEY_FILE))
            .expect("sharing the master key with the replica");
        let mut replica = Router {
            backend: self.backend,
            dir,
            database_url: Some(database_url),
            options,
            child: None,
            starts: 0,
            addr: String::new(),
            admin_key: String::new(),
            shared_admin_key: Some(self.admin_key.clone()),
            api: Api::new(String::new(), None),
        };
        replica.launch().await;
        replica
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The master key file this router (and its replicas, each with a copy) is started with.
    pub fn master_key_path(&self) -> PathBuf {
        self.dir.path().join(MASTER_KEY_FILE)
    }

    pub fn bootstrap_key_path(&self) -> PathBuf {
        self.state_dir().join("bootstrap.key")
    }

    fn log_path(&self, start: usize) -> PathBuf {
        self.dir.path().join(format!("router-{start}.log"))
    }

    /// The arguments a router on this state dir and store is started with.
    pub fn command(&self) -> Command {
        self.command_with_master_key(Some(&self.master_key_path()))
    }

    /// [`Router::command`] with another master key file, or none.
    pub fn command_with_master_key(&self, master_key: Option<&Path>) -> Command {
        let mut command = Command::new(binary(ROUTER_BIN));
        if let Some(path) = master_key {
            command.arg("--master-key-file").arg(path);
        }
        command
            .arg("--listen")
            .arg(self.options.listen.as_deref().unwrap_or("127.0.0.1:0"))
            .arg("--state-dir")
            .arg(self.state_dir());
        // Port 0 for the CURVE mesh endpoint too (unless the test fixed one): routers of
        // parallel tests must not collide.
        command
            .arg("--mesh-bind")
            .arg(self.options.mesh_bind.as_deref().unwrap_or("tcp://127.0.0.1:0"));
        command.args(&self.options.extra_args);
        if let Some(url) = &self.database_url {
            command.arg("--database-url").arg(url);
        }
        command.arg("--log-level").arg(&self.options.log_level);
        if let Some(format) = &self.options.log_format {
            command.arg("--log-format").arg(format);
        }
        // Nothing from the environment the tests run in may configure the router.
        for (var, _) in std::env::vars_os() {
            if var.to_string_lossy().starts_with("XEROTIER_ROUTER_") {
                command.env_remove(var);
            }
        }
        command.envs(self.options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command
            .env_remove("NOTIFY_SOCKET")
            .env_remove("NO_COLOR")
            .env_remove("CREDENTIALS_DIRECTORY");
        command.stdin(Stdio::null());
        command
    }

    async fn launch(&mut self) {
        assert!(self.child.is_none(), "the router is already running");
        let addr_file = self.state_dir().join("http.addr");
        let _ = std::fs::remove_file(&addr_file);
        let _ = std::fs::remove_file(self.state_dir().join("mesh.addr"));
        self.starts += 1;
        let log_path = self.log_path(self.starts);
        let log = File::create(&log_path).expect("creating the router log");
        let mut command = self.command();
        command.stdout(log.try_clone().expect("cloning the log handle")).stderr(log);
        self.child = Some(command.spawn().expect("spawning xerotier-router"));

        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                panic!(
                    "[{}] the router exited during startup ({status}):\n{}",
                    self.backend,
                    self.logs()
                );
            }
            if let Ok(text) = std::fs::read_to_string(&addr_file) {
                let addr = text.trim().to_string();
                if !addr.is_empty() {
                    // The CA exists before the address file is written.
                    let probe = client_builder(self.ca_file().as_deref())
                        .timeout(Duration::from_secs(2))
                        .build()
                        .expect("HTTP client");
                    let healthy = probe
                        .get(format!("{}://{addr}/healthz", self.scheme()))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().as_u16() == 200);
                    if healthy {
                        self.addr = addr;
                        break;
                    }
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "[{}] the router did not answer /healthz within {STARTUP_DEADLINE:?}:\n{}",
                    self.backend,
                    self.logs()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        self.admin_key = match &self.shared_admin_key {
            Some(key) => {
                assert!(
                    !self.bootstrap_key_path().exists(),
                    "[{}] a router on an already bootstrapped store wrote a bootstrap key",
                    self.backend
                );
                key.clone()
            }
            None => std::fs::read_to_string(self.bootstrap_key_path())
                .expect("reading bootstrap.key")
                .trim()
                .to_string(),
        };
        assert!(self.admin_key.starts_with("xero_"), "bootstrap.key holds {:?}", self.admin_key);
        self.api = Api::new(self.base_url(), self.ca_file().as_deref());
        eprintln!(
            "[{}] router started (#{}) at {} on {}",
            self.backend,
            self.starts,
            self.base_url(),
            self.dir.path().display()
        );
    }

    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme(), self.addr)
    }

    /// False only for a router started with `--insecure-http`.
    pub fn is_tls(&self) -> bool {
        !self.options.extra_args.iter().any(|a| a == "--insecure-http")
    }

    fn scheme(&self) -> &'static str {
        if self.is_tls() { "https" } else { "http" }
    }

    /// The router's generated CA (`<state dir>/tls/ca.pem`); `None` for plain HTTP.
    pub fn ca_file(&self) -> Option<PathBuf> {
        let own = || self.state_dir().join("tls").join("ca.pem");
        self.is_tls().then(|| self.options.ca_file.clone().unwrap_or_else(own))
    }

    pub fn admin_key(&self) -> &str {
        &self.admin_key
    }

    pub fn api(&self) -> &Api {
        &self.api
    }

    /// The mesh address the running router wrote to `<state dir>/mesh.addr`, `tcp://…`.
    pub fn mesh_addr(&self) -> String {
        let text = std::fs::read_to_string(self.state_dir().join("mesh.addr"))
            .expect("reading mesh.addr (written at start)");
        let addr = text.trim().to_string();
        assert!(addr.starts_with("tcp://127.0.0.1:"), "mesh.addr holds {addr:?}");
        addr
    }

    /// Everything the router printed (stdout and stderr), over all its starts.
    pub fn logs(&self) -> String {
        (1..=self.starts)
            .map(|n| std::fs::read_to_string(self.log_path(n)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("")
    }

    /// Sends SIGTERM and waits for the exit; panics if it does not come within the deadline.
    pub fn stop_with_sigterm(&mut self) -> ExitStatus {
        match self.sigterm_within(EXIT_DEADLINE) {
            Ok((status, _)) => status,
            Err(hung) => panic!("[{}] {hung}:\n{}", self.backend, self.logs()),
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit: its status and how long it took.
    /// A router still running then is killed; the error says so, with the threads it still had
    /// (names from `/proc`, e.g. ZeroMQ's `ZMQbg/…`).
    pub fn sigterm_within(&mut self, timeout: Duration) -> Result<(ExitStatus, Duration), String> {
        let mut child = self.child.take().expect("the router is not running");
        let sent = Instant::now();
        send_sigterm(child.id());
        if let Some(status) = wait_for_exit(&mut child, timeout) {
            return Ok((status, sent.elapsed()));
        }
        let threads = thread_names(child.id());
        let _ = child.kill();
        let _ = child.wait();
        Err(format!(
            "the router did not exit within {timeout:?} of SIGTERM (killed); its threads then: \
             {threads:?}"
        ))
    }

    /// Sends SIGHUP (what `systemctl reload` sends).
    pub fn send_sighup(&self) {
        let pid = self.child.as_ref().expect("the router is not running").id();
        let status = Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap();
        assert!(status.success(), "kill -HUP {pid} failed: {status}");
    }

    /// Kills the router with SIGKILL (a crash) and reaps it.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("the router is not running");
        child.kill().expect("killing the router");
        child.wait().expect("reaping the router");
    }

    /// Starts another router process on this state dir and store (with its own log), and
    /// waits for it to exit: for checks that a second router is refused. Panics if it keeps
    /// running past the deadline.
    pub fn run_second_process(&mut self) -> (ExitStatus, String) {
        let command = self.command();
        let what = "a second router on the same store kept running";
        self.run_to_exit(command, what)
    }

    /// Starts a router process on this state dir and store with `master_key` (or none), and
    /// waits for it to exit: for checks that a router is refused at start. Its status and
    /// output; panics if it keeps running past the deadline.
    pub fn run_refused(&mut self, master_key: Option<&Path>) -> (ExitStatus, String) {
        assert!(self.child.is_none(), "stop the router first");
        let command = self.command_with_master_key(master_key);
        self.run_to_exit(command, "the router started and kept running")
    }

    /// Runs `command` with its own log until it exits: its status and output. Panics with
    /// `what` and the output if it keeps running past the startup deadline.
    fn run_to_exit(&mut self, mut command: Command, what: &str) -> (ExitStatus, String) {
        self.starts += 1;
        let log_path = self.log_path(self.starts);
        let log = File::create(&log_path).expect("creating the router's log");
        command.stdout(log.try_clone().expect("cloning the log handle")).stderr(log);
        let mut child = command.spawn().expect("spawning xerotier-router");
        let status = wait_for_exit(&mut child, STARTUP_DEADLINE);
        let output = std::fs::read_to_string(&log_path).unwrap_or_default();
        match status {
            Some(status) => (status, output),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("[{}] {what}:\n{output}", self.backend)
            }
        }
    }

    /// The store URL the router uses: its PostgreSQL database, or the SQLite file in its state
    /// dir.
    pub fn store_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!("sqlite://{}?mode=rwc", self.state_dir().join("router.db").display())
        })
    }

    /// Stops the router (SIGTERM) if it runs, and starts it again on the same state dir and
    /// store. The admin key is read again from `bootstrap.key`.
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            let status = self.stop_with_sigterm();
            assert!(status.success(), "[{}] router exited with {status} on SIGTERM", self.backend);
        }
        self.launch().await;
    }

    /// [`Router::restart`] with `env` for the router process in place of the options' own
    /// (a clock offset, say), kept for later restarts.
    pub async fn restart_with_env(&mut self, env: Vec<(String, String)>) {
        self.options.env = env;
        self.restart().await;
    }

    // --- Shortcuts over the HTTP API, with the admin key -------------------------------------

    /// `GET path` with the admin key; panics unless the answer is 200; its JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let resp = self.api.get(path, Some(self.admin_key())).await;
        resp.assert_status(200);
        resp.json()
    }

    /// `POST path` with the admin key and `body`; the answer, whatever it is.
    pub async fn post_json(&self, path: &str, body: &Value) -> Resp {
        self.api.post(path, Some(self.admin_key()), body).await
    }

    /// Creates a key over HTTP; panics unless the answer is 201.
    pub async fn create_key(&self, name: &str, scopes: &[&str]) -> Issued {
        let body = json!({ "name": name, "scopes": scopes });
        let resp = self.post_json("/v1/management/api-keys", &body).await;
        resp.assert_status(201);
        let issued = Issued::from_json(&resp.json());
        assert_eq!(issued.name, name);
        issued
    }

    pub async fn revoke_key(&self, id: &str) -> Resp {
        self.post_json(&format!("/v1/management/api-keys/{id}/revoke"), &json!({})).await
    }

    pub async fn show_key(&self, id: &str) -> Value {
        self.get_json(&format!("/v1/management/api-keys/{id}")).await
    }

    /// All keys (revoked too), walking every page.
    pub async fn all_keys(&self) -> Vec<Value> {
        self.collect_pages("/v1/management/api-keys?include_revoked=true").await
    }

    /// All audit records matching `filter` (a query string without `?`), walking every page.
    pub async fn audit(&self, filter: &str) -> Vec<Value> {
        if filter.is_empty() {
            self.collect_pages("/v1/management/audit").await
        } else {
            self.collect_pages(&format!("/v1/management/audit?{filter}")).await
        }
    }

    /// Every item of a paginated listing (`path` with or without a query), walking the pages.
    pub async fn collect_pages(&self, path: &str) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut url = format!("{path}{sep}limit=500");
            if let Some(after) = &after {
                url.push_str(&format!("&after={after}"));
            }
            let page = self.get_json(&url).await;
            items.extend(page["data"].as_array().expect("page data").iter().cloned());
            match page["next_after"].as_str() {
                Some(next) if page["has_more"] == json!(true) => after = Some(next.to_string()),
                _ => return items,
            }
        }
    }

    /// The id of the bootstrap admin key (the actor of everything done with the admin key).
    pub async fn admin_key_id(&self) -> String {
        let keys = self.all_keys().await;
        let bootstrap = keys.iter().find(|k| k["name"] == "bootstrap").expect("the bootstrap key");
        bootstrap["id"].as_str().expect("key id").to_string()
    }

    // --- Fleet shortcuts ----------------------------------------------------------------------

    /// `POST /v1/management/join-keys` with `body` as is.
    pub async fn post_join_key(&self, body: &Value) -> Resp {
        self.post_json("/v1/management/join-keys", body).await
    }

    /// Mints a join key for this router's mesh address (from `mesh.addr`) that grants the
    /// example tools' workspace (`kubernetes-prod`), as an operator would for that agent;
    /// panics unless 201.
    pub async fn mint_join_key(&self, name: &str) -> JoinKey {
        self.mint_join_key_with(json!({ "name": name, "workspaces": [EXAMPLE_WORKSPACE] })).await
    }

    /// Mints a join key with `body` (the `router_addr` of `mesh.addr` is added when absent).
    pub async fn mint_join_key_with(&self, mut body: Value) -> JoinKey {
        if body.get("router_addr").is_none() {
            body["router_addr"] = json!(self.mesh_addr());
        }
        let resp = self.post_join_key(&body).await;
        resp.assert_status(201);
        JoinKey::from_json(&resp.json())
    }

    pub async fn revoke_join_key(&self, id: &str) -> Resp {
        self.post_json(&format!("/v1/management/join-keys/{id}/revoke"), &json!({})).await
    }

    pub async fn join_key(&self, id: &str) -> Value {
        self.get_json(&format!("/v1/management/join-keys/{id}")).await
    }

    /// All join keys, terminal ones too.
    pub async fn all_join_keys(&self) -> Vec<Value> {
        self.collect_pages("/v1/management/join-keys?include_terminal=true").await
    }

    pub async fn agent(&self, id: &str) -> Value {
        self.get_json(&format!("/v1/management/agents/{id}")).await
    }

    /// All agents, revoked ones too.
    pub async fn all_agents(&self) -> Vec<Value> {
        self.collect_pages("/v1/management/agents?include_revoked=true").await
    }

    /// Polls the agent until its `status` is `status`; returns the agent as last seen.
    pub async fn wait_agent_status(&self, id: &str, status: &str, timeout: Duration) -> Value {
        eventually(&format!("[{}] agent {id} to be {status}", self.backend), timeout, || async {
            let agent = self.agent(id).await;
            (agent["status"] == status).then_some(agent)
        })
        .await
    }

    pub async fn revoke_agent(&self, id: &str) -> Resp {
        self.post_json(&format!("/v1/management/agents/{id}/revoke-credentials"), &json!({})).await
    }

    /// `POST /v1/enroll` (no API key) with `body` as is.
    pub async fn post_enroll(&self, body: &Value) -> Resp {
        self.api.post("/v1/enroll", None, body).await
    }

    /// The value of the `/metrics` sample `series` (`name{labels}` exactly as printed), 0 when
    /// the router has not printed it yet (a counter that never moved).
    pub async fn metric(&self, series: &str) -> f64 {
        let resp = self.api.get("/metrics", None).await;
        resp.assert_status(200);
        metric_value(&resp.text, series)
    }

    /// Whether `value` is accepted on `/v1/exec/tools` (200) or refused (401, `invalid_api_key`).
    pub async fn exec_status(&self, value: &str) -> u16 {
        let resp = self.api.get("/v1/exec/tools", Some(value)).await;
        match resp.status {
            200 => {}
            401 => resp.assert_error(401, "invalid_api_key"),
            other => {
                panic!("[{}] unexpected {other} on /v1/exec/tools: {}", self.backend, resp.text)
            }
        }
        resp.status
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let exited = match self.child.take() {
            Some(mut child) => {
                let exited = child.try_wait().ok().flatten();
                let _ = child.kill();
                let _ = child.wait();
                exited
            }
            None => None,
        };
        // A failing test shows what the router had to say.
        if std::thread::panicking() {
            if let Some(status) = exited {
                eprintln!("[{}] the router had exited by itself: {status}", self.backend);
            }
            eprintln!("----- [{}] router log -----\n{}\n-----", self.backend, self.logs());
        }
    }
}

pub fn send_sigterm(pid: u32) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .expect("running kill -TERM");
    assert!(status.success(), "kill -TERM {pid} failed: {status}");
}

/// The names of the threads of process `pid` (Linux `/proc`), by thread count: `name×count`.
pub fn thread_names(pid: u32) -> Vec<String> {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            *counts.entry(name.trim().to_string()).or_default() += 1;
        }
    }
    counts.into_iter().map(|(name, n)| format!("{name}×{n}")).collect()
}

/// A key as `POST /v1/management/api-keys` (or `…/rotate`) returned it.
#[derive(Debug, Clone)]
pub struct Issued {
    pub id: String,
    pub name: String,
    pub value: String,
    pub key: Value,
}

impl Issued {
    pub fn from_json(body: &Value) -> Issued {
        let value = body["value"].as_str().expect("issued key value").to_string();
        assert!(value.starts_with("xero_"), "issued value {value:?}");
        Issued {
            id: body["key"]["id"].as_str().expect("issued key id").to_string(),
            name: body["key"]["name"].as_str().expect("issued key name").to_string(),
            value,
            key: body["key"].clone(),
        }
    }
}

/// The workspace `examples/tools` declares.
pub const EXAMPLE_WORKSPACE: &str = "kubernetes-prod";

/// A join key as `POST /v1/management/join-keys` returned it.
#[derive(Debug, Clone)]
pub struct JoinKey {
    pub id: String,
    pub token: String,
    pub view: Value,
}

impl JoinKey {
    pub fn from_json(body: &Value) -> JoinKey {
        let token = body["token"].as_str().expect("join key token").to_string();
        assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
        let id = body["join_key"]["id"].as_str().expect("join key id").to_string();
        assert!(id.starts_with("jk_"), "join key id {id:?}");
        assert_eq!(body["join_key"]["state"], "active", "a new key is active: {body}");
        JoinKey { id, token, view: body["join_key"].clone() }
    }
}

/// The value of the Prometheus sample `series` in `text`, 0 when absent.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse::<f64>().expect("a numeric sample"))
        })
        .unwrap_or(0.0)
}

/// The 64 hex characters after the last `_` of a key value: the secret proper.
pub fn secret_part(value: &str) -> &str {
    value.rsplit_once('_').map(|(_, s)| s).expect("a xero_ value has a secret part")
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// An HTTP client for one router.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
}

/// An answer, read in full.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Api {
    /// A client for `base`; over HTTPS it trusts the CA in `ca_file` alone.
    pub fn new(base: String, ca_file: Option<&Path>) -> Api {
        let http =
            client_builder(ca_file).timeout(Duration::from_secs(30)).build().expect("HTTP client");
        Api { http, base }
    }

    /// A request builder for anything the shortcuts below do not cover.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    pub async fn send(builder: reqwest::RequestBuilder) -> Resp {
        let response = builder.send().await.expect("sending the request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("reading the answer");
        Resp { status, headers, text }
    }

    pub async fn get(&self, path: &str, key: Option<&str>) -> Resp {
        Self::send(with_key(self.request(Method::GET, path), key)).await
    }

    pub async fn post(&self, path: &str, key: Option<&str>, body: &Value) -> Resp {
        Self::send(with_key(self.request(Method::POST, path), key).json(body)).await
    }
}

/// A client builder that trusts the CA in `ca_file` (a router's `tls/ca.pem`) and nothing else,
/// or a plain one without it (an `--insecure-http` router).
pub fn client_builder(ca_file: Option<&Path>) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // One CA, or the old and the new during a rotation of the router's CA.
            let bundle = reqwest::Certificate::from_pem_bundle(&pem).expect("the router's CA");
            let builder = builder.tls_built_in_root_certs(false);
            bundle.into_iter().fold(builder, |b, ca| b.add_root_certificate(ca))
        }
        None => builder,
    }
}

pub fn with_key(builder: reqwest::RequestBuilder, key: Option<&str>) -> reqwest::RequestBuilder {
    match key {
        Some(key) => builder.bearer_auth(key),
        None => builder,
    }
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {:?}", self.text))
    }

    pub fn request_id(&self) -> String {
        self.headers
            .get("x-request-id")
            .unwrap_or_else(|| panic!("no X-Request-ID on a {} answer: {}", self.status, self.text))
            .to_str()
            .expect("X-Request-ID is text")
            .to_string()
    }

    pub fn assert_status(&self, status: u16) {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text);
    }

    /// Asserts the status and that the body is exactly the error envelope
    /// `{"error":{"message","type","code","param"}}` with this `code`.
    pub fn assert_error(&self, status: u16, code: &str) {
        self.assert_status(status);
        let body = self.json();
        let object = body.as_object().expect("error body is an object");
        assert_eq!(object.len(), 1, "envelope has only `error`: {body}");
        let error =
            body["error"].as_object().unwrap_or_else(|| panic!("no `error` object: {body}"));
        let mut keys: Vec<_> = error.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["code", "message", "param", "type"], "envelope fields: {body}");
        assert_eq!(error["code"], json!(code), "error code: {body}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "message: {body}");
        assert!(error["type"].as_str().is_some_and(|t| !t.is_empty()), "type: {body}");
        assert!(error["param"].is_null() || error["param"].is_string(), "param: {body}");
        assert!(!self.request_id().is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// xeroctl
// ---------------------------------------------------------------------------------------------

/// One `xeroctl` invocation's environment. The config file is always one in a fresh temporary
/// directory, so the user's own config is never read.
#[derive(Debug)]
pub struct Xeroctl {
    dir: TempDir,
    base_url: Option<String>,
    api_key: Option<String>,
    ca_file: Option<PathBuf>,
}

/// What a `xeroctl` run printed.
#[derive(Debug)]
pub struct CliOutput {
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// `xeroctl` against `router` with the admin key.
pub fn xeroctl(router: &Router, args: &[&str]) -> CliOutput {
    Xeroctl::for_router(router).run(args)
}

/// `xeroctl` against `router` with `key`.
pub fn xeroctl_with_key(router: &Router, key: &str, args: &[&str]) -> CliOutput {
    Xeroctl::for_router(router).api_key(Some(key)).run(args)
}

impl Xeroctl {
    /// No router URL, no key, an empty config: only what the test adds.
    pub fn bare() -> Xeroctl {
        let dir = tempfile::Builder::new().prefix("xeroctl-e2e-").tempdir().expect("tempdir");
        Xeroctl { dir, base_url: None, api_key: None, ca_file: None }
    }

    pub fn for_router(router: &Router) -> Xeroctl {
        Xeroctl::bare()
            .base_url(Some(&router.base_url()))
            .api_key(Some(router.admin_key()))
            .ca_file(router.ca_file().as_deref())
    }

    /// `XEROCTL_CA_FILE`.
    pub fn ca_file(mut self, path: Option<&Path>) -> Xeroctl {
        self.ca_file = path.map(Path::to_path_buf);
        self
    }

    pub fn base_url(mut self, url: Option<&str>) -> Xeroctl {
        self.base_url = url.map(str::to_string);
        self
    }

    pub fn api_key(mut self, key: Option<&str>) -> Xeroctl {
        self.api_key = key.map(str::to_string);
        self
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("xeroctl").join("config.toml")
    }

    /// The command for `args`, with only this runner's environment and config.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(binary(XEROCTL_BIN));
        command.args(args);
        for var in [
            "XEROCTL_BASE_URL",
            "XEROCTL_API_KEY",
            "XEROCTL_CONTEXT",
            "XEROCTL_CONFIG",
            "XEROCTL_CA_FILE",
            "NO_COLOR",
        ] {
            command.env_remove(var);
        }
        // Even without XEROCTL_CONFIG nothing of the user's could be found.
        command.env("HOME", self.dir.path()).env("XDG_CONFIG_HOME", self.dir.path());
        command.env("XEROCTL_CONFIG", self.config_path());
        if let Some(url) = &self.base_url {
            command.env("XEROCTL_BASE_URL", url);
        }
        if let Some(key) = &self.api_key {
            command.env("XEROCTL_API_KEY", key);
        }
        if let Some(ca) = &self.ca_file {
            command.env("XEROCTL_CA_FILE", ca);
        }
        command
    }

    /// Runs `args` with standard input from nowhere (no terminal), as scripts and CI do.
    pub fn run(&self, args: &[&str]) -> CliOutput {
        self.run_with_stdin(args, Stdio::null())
    }

    /// Runs `args` with standard input on a pseudo-terminal on which `typed` is typed (a
    /// confirmation answer, say); stdout and stderr still go to files, so they are not
    /// terminals.
    pub fn run_on_terminal(&self, args: &[&str], typed: &str) -> CliOutput {
        let pty = nix::pty::openpty(None, None).expect("opening a pseudo-terminal");
        let mut keyboard = File::from(pty.master);
        keyboard.write_all(typed.as_bytes()).expect("typing on the pseudo-terminal");
        let out = self.run_with_stdin(args, Stdio::from(pty.slave));
        drop(keyboard);
        out
    }

    fn run_with_stdin(&self, args: &[&str], stdin: Stdio) -> CliOutput {
        let mut command = self.command(args);
        let out_path = self.dir.path().join("stdout");
        let err_path = self.dir.path().join("stderr");
        command
            .stdin(stdin)
            .stdout(File::create(&out_path).expect("stdout file"))
            .stderr(File::create(&err_path).expect("stderr file"));
        let mut child = command.spawn().expect("spawning xeroctl");
        let status = wait_for_exit(&mut child, EXIT_DEADLINE).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("xeroctl {args:?} did not finish within {EXIT_DEADLINE:?}")
        });
        CliOutput {
            args: args.iter().map(|a| a.to_string()).collect(),
            status,
            stdout: std::fs::read_to_string(&out_path).expect("reading stdout"),
            stderr: std::fs::read_to_string(&err_path).expect("reading stderr"),
        }
    }

    /// Starts `args` in the background (a follower, a watch), its output going to files that
    /// can be read while it runs.
    pub fn spawn(&self, args: &[&str]) -> RunningXeroctl {
        let mut command = self.command(args);
        let dir = tempfile::Builder::new().prefix("xeroctl-run-").tempdir().expect("tempdir");
        let out_path = dir.path().join("stdout");
        let err_path = dir.path().join("stderr");
        command
            .stdin(Stdio::null())
            .stdout(File::create(&out_path).expect("stdout file"))
            .stderr(File::create(&err_path).expect("stderr file"));
        let child = command.spawn().expect("spawning xeroctl");
        RunningXeroctl {
            args: args.iter().map(|a| a.to_string()).collect(),
            child: Some(child),
            _dir: dir,
            out_path,
            err_path,
        }
    }
}

/// A `xeroctl` running in the background; killed on drop.
#[derive(Debug)]
pub struct RunningXeroctl {
    args: Vec<String>,
    child: Option<Child>,
    _dir: TempDir,
    out_path: PathBuf,
    err_path: PathBuf,
}

impl RunningXeroctl {
    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out_path).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err_path).unwrap_or_default()
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Waits for it to exit (panics past the deadline); what it printed.
    pub fn wait(mut self) -> CliOutput {
        let mut child = self.child.take().expect("running");
        let status = wait_for_exit(&mut child, EXIT_DEADLINE).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("xeroctl {:?} did not finish within {EXIT_DEADLINE:?}", self.args)
        });
        CliOutput { args: self.args.clone(), status, stdout: self.stdout(), stderr: self.stderr() }
    }
}

impl Drop for RunningXeroctl {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl CliOutput {
    /// Asserts exit code 0.
    pub fn success(self) -> CliOutput {
        assert!(
            self.status.success(),
            "xeroctl {:?} failed ({}):\nstdout: {}\nstderr: {}",
            self.args,
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts a non-zero exit code.
    pub fn failure(self) -> CliOutput {
        assert!(
            !self.status.success() && self.status.code().is_some(),
            "xeroctl {:?} should have failed ({}):\nstdout: {}\nstderr: {}",
            self.args,
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("xeroctl {:?} -o json printed no JSON ({e}):\n{}", self.args, self.stdout)
        })
    }

    /// stdout and stderr together.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// The value of a `key: value` line of table output (`fields`); panics unless exactly one.
    pub fn field(&self, key: &str) -> String {
        let prefix = format!("{key}:");
        let values: Vec<&str> =
            self.stdout.lines().filter_map(|l| l.strip_prefix(&prefix)).map(str::trim).collect();
        assert_eq!(values.len(), 1, "one `{key}:` line expected:\n{}", self.stdout);
        values[0].to_string()
    }

    /// The table rows (lines of stdout) that mention `needle`.
    pub fn rows_with(&self, needle: &str) -> Vec<&str> {
        self.stdout.lines().filter(|l| l.contains(needle)).collect()
    }

    /// The one table row that mentions `needle`, split into its cells.
    pub fn row(&self, needle: &str) -> Vec<String> {
        let rows = self.rows_with(needle);
        assert_eq!(rows.len(), 1, "one row with {needle:?} expected:\n{}", self.stdout);
        table_cells(rows[0])
    }

    /// The header row of table output: the line holding every one of `columns`, as cells.
    pub fn header(&self, columns: &[&str]) -> Vec<String> {
        let line = self
            .stdout
            .lines()
            .find(|l| columns.iter().all(|c| l.contains(c)))
            .unwrap_or_else(|| panic!("no header with {columns:?}:\n{}", self.stdout));
        table_cells(line)
    }

    /// The `value: xero_…` line of `keys create`/`keys rotate` table output.
    pub fn issued_value(&self) -> String {
        let values: Vec<&str> =
            self.stdout.lines().filter_map(|l| l.strip_prefix("value: ")).map(str::trim).collect();
        assert_eq!(values.len(), 1, "one `value:` line expected:\n{}", self.stdout);
        assert!(values[0].starts_with("xero_"), "value {:?}", values[0]);
        values[0].to_string()
    }
}

/// The cells of one table line: split on the border characters and runs of two or more
/// spaces (cells themselves hold at most single spaces), empty cells dropped.
pub fn table_cells(line: &str) -> Vec<String> {
    line.split(['│', '|', '┆'])
        .flat_map(|part| part.split("  "))
        .map(str::trim)
        .filter(|cell| !cell.is_empty())
        .map(str::to_string)
        .collect()
}

/// A TCP port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a probe port");
    let port = listener.local_addr().expect("probe address").port();
    drop(listener);
    port
}
