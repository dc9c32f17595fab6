#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("zeromq: {0}")]
    Zmq(#[from] zmq::Error),
    #[error("libzmq was built without CURVE support; install Debian's libzmq5 (libsodium)")]
    NoCurve,
    #[error("the ZAP handler did not start: {0}")]
    ZapStart(String),
    #[error("cannot bind the mesh endpoint {addr}: {source}")]
    Bind { addr: String, source: zmq::Error },
    #[error("mesh thread failed to start: {0}")]
    Thread(String),
}
