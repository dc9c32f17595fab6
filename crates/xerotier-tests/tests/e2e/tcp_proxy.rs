//! A TCP proxy between `xeroctl` and a router, for tests of what a client does when its
//! connection breaks: every connection open now can be cut, new ones refused for a while, and
//! the upstream moved (a restarted router listens on a new port). It runs on a thread and
//! runtime of its own, so a test blocked on a synchronous `xeroctl` run never stalls it.

use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

#[derive(Debug, Default)]
struct State {
    upstream: String,
    refusing: bool,
    connections: Vec<JoinHandle<()>>,
    accepted: usize,
}

/// A proxy on `127.0.0.1:<port>` to a router; stops when dropped.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// `host:port` of a base URL such as `https://127.0.0.1:8080`.
pub fn authority(base_url: &str) -> String {
    base_url.split("://").nth(1).unwrap_or(base_url).trim_end_matches('/').to_string()
}

impl TcpProxy {
    /// A proxy to the router at `base_url`.
    pub fn start(base_url: &str) -> TcpProxy {
        let state =
            Arc::new(Mutex::new(State { upstream: authority(base_url), ..State::default() }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let addr = listener.local_addr().expect("proxy address");
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let shared = state.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("the proxy's runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("tokio listener");
                tokio::select! {
                    () = accept_loop(listener, shared) => {}
                    _ = stopped => {}
                }
            });
        });
        TcpProxy { addr, state, stop: Some(stop), thread: Some(thread) }
    }

    /// The proxy's URL with `base_url`'s scheme: what xeroctl is pointed at.
    pub fn base_url(&self, base_url: &str) -> String {
        let scheme = base_url.split("://").next().unwrap_or("http");
        format!("{scheme}://{}", self.addr)
    }

    /// Sends new connections to the router at `base_url` (after a restart).
    pub fn set_upstream(&self, base_url: &str) {
        self.state.lock().upstream = authority(base_url);
    }

    /// Closes every connection open now.
    pub fn cut(&self) {
        for connection in self.state.lock().connections.drain(..) {
            connection.abort();
        }
    }

    /// While `refusing`, new connections are closed as soon as they are accepted.
    pub fn refuse(&self, refusing: bool) {
        self.state.lock().refusing = refusing;
    }

    /// How many connections were accepted so far (refused ones included).
    pub fn accepted(&self) -> usize {
        self.state.lock().accepted
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<Mutex<State>>) {
    while let Ok((client, _)) = listener.accept().await {
        let (upstream, refusing) = {
            let mut state = state.lock();
            state.accepted += 1;
            (state.upstream.clone(), state.refusing)
        };
        if refusing {
            drop(client);
            continue;
        }
        let connection = tokio::spawn(relay(client, upstream));
        let mut state = state.lock();
        state.connections.retain(|c| !c.is_finished());
        state.connections.push(connection);
    }
}

async fn relay(mut client: TcpStream, upstream: String) {
    if let Ok(mut server) = TcpStream::connect(&upstream).await {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
