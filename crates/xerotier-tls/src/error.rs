use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {detail}")]
    BadFile { path: PathBuf, detail: String },
    #[error(
        "{path} is readable by every user (mode {mode:o}); a TLS private key must not be: \
         chmod 600 (or 640 with a group) it"
    )]
    KeyTooOpen { path: PathBuf, mode: u32 },
    #[error(
        "the private CA in {dir} is incomplete ({missing} is missing); agents pin that CA, so \
         restore the file from a backup, or delete the whole directory to create a new CA and \
         mint new join keys"
    )]
    IncompleteCa { dir: PathBuf, missing: &'static str },
    #[error("issuing a certificate: {0}")]
    Issue(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("invalid TLS name {name:?}: {detail}")]
    BadName { name: String, detail: String },
    #[error(
        "the router presents the operator's certificate (--tls-cert); its owner rotates it by \
         replacing the files and sending SIGHUP"
    )]
    OperatorCertificate,
    #[error("not a usable CA certificate or key: {0}")]
    BadCertificate(String),
    #[error("invalid CA fingerprint {0:?}: expected sha256: and 64 lowercase hex digits")]
    BadFingerprint(String),
}

impl TlsError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
        move |source| TlsError::Io { path: path.to_path_buf(), source }
    }

    pub(crate) fn bad_file(path: &std::path::Path, detail: impl std::fmt::Display) -> TlsError {
        TlsError::BadFile { path: path.to_path_buf(), detail: detail.to_string() }
    }
}
