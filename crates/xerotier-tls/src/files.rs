//! The private CA's files: public ones 0644, keys 0600, each written atomically.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::TlsError;

/// Writes a certificate (public) atomically, mode 0644.
pub(crate) fn write_public(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    xerotier_credentials::write_file_atomically(path, contents, 0o644)
        .map_err(|err| TlsError::bad_file(path, err))
}

/// Writes a private key atomically, mode 0600.
pub(crate) fn write_key(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    xerotier_credentials::write_secret_file(path, contents)
        .map_err(|err| TlsError::bad_file(path, err))
}

/// Reads a private key file, refusing one every user on the host can read.
pub(crate) fn read_key(path: &Path) -> Result<Vec<u8>, TlsError> {
    let meta = fs::metadata(path).map_err(TlsError::io(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o004 != 0 {
        return Err(TlsError::KeyTooOpen { path: path.to_path_buf(), mode });
    }
    fs::read(path).map_err(TlsError::io(path))
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(TlsError::io(path))
}
