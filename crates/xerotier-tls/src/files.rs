//! Writing the private CA's files: public ones 0644, keys 0600, each atomically.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::TlsError;

/// Writes a certificate (public) atomically, mode 0644.
pub(crate) fn write_public(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(TlsError::io(&tmp))?;
        file.set_permissions(fs::Permissions::from_mode(0o644)).map_err(TlsError::io(&tmp))?;
        file.write_all(contents).map_err(TlsError::io(&tmp))?;
        file.sync_all().map_err(TlsError::io(&tmp))?;
        fs::rename(&tmp, path).map_err(TlsError::io(path))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(TlsError::io(dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
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
