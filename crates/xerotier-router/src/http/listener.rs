//! Accepting connections: HTTPS (or, with `--insecure-http`, plain HTTP on loopback), TLS
//! handshakes off the accept loop with a deadline and a bound on how many run at once, the
//! peer address on every request (`ConnectInfo<SocketAddr>`), and a graceful drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// A client must finish its TLS handshake within this, or its connection is closed.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; the accept loop waits for a slot (a slow-handshake flood
/// cannot grow the router's memory without bound).
const MAX_HANDSHAKES: usize = 512;

/// Serves `app` on `listener` until `stop` is cancelled, then waits for the open connections
/// to finish their requests (the caller bounds that wait). `tls` is `None` only for
/// `--insecure-http`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    app: axum::Router,
    stop: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let acceptor = tls.map(TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Some(Ok(slot)) = stop.run_until_cancelled(slots.clone().acquire_owned()).await else {
            break;
        };
        let Some(accepted) = stop.run_until_cancelled(listener.accept()).await else { break };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors, typically: back off instead of spinning.
                tracing::warn!(error = %err, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                None => {
                    drop(slot);
                    connection(tcp, peer, app, watcher).await;
                }
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(tcp));
                    let stream = handshake.await;
                    drop(slot);
                    match stream {
                        Ok(Ok(stream)) => connection(stream, peer, app, watcher).await,
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Serves HTTP/1.1 or HTTP/2 on one established connection.
async fn connection<S>(stream: S, peer: SocketAddr, app: axum::Router, watcher: Watcher)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = app.map_request(move |mut request: http::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    });
    let builder = Builder::new(TokioExecutor::new());
    let connection =
        builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    if let Err(err) = watcher.watch(connection.into_owned()).await {
        tracing::debug!(%peer, error = %err, "connection ended with an error");
    }
}
