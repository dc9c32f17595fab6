use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use secrecy::SecretString;

#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is readable by group or others (mode {mode:o}); it must be 0600")]
    TooOpen { path: PathBuf, mode: u32 },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SecretFileError + '_ {
    move |source| SecretFileError::Io { path: path.to_path_buf(), source }
}

/// Writes `contents` to `path` with mode 0600, atomically: a temp file in the same directory,
/// fsync, rename over the target, fsync the directory. A crash leaves the old file or the new
/// one, never a torn or world-readable one.
pub fn write_secret_file(path: &Path, contents: &[u8]) -> Result<(), SecretFileError> {
    write_file_atomically(path, contents, 0o600)
}

/// As [`write_secret_file`], with `mode` (0644 for a certificate anyone may read). The mode is
/// the file's from its creation, so no reader ever sees it wider.
pub fn write_file_atomically(
    path: &Path,
    contents: &[u8],
    mode: u32,
) -> Result<(), SecretFileError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        // The mode given at open is filtered by the umask; set it explicitly.
        file.set_permissions(fs::Permissions::from_mode(mode)).map_err(io_err(&tmp))?;
        file.write_all(contents).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, path).map_err(io_err(path))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads a secret file, refusing one that group or others can read.
pub fn read_secret_file(path: &Path) -> Result<SecretString, SecretFileError> {
    let meta = fs::metadata(path).map_err(io_err(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::TooOpen { path: path.to_path_buf(), mode });
    }
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    Ok(SecretString::from(text.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn written_file_is_0600_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bootstrap.key");
        write_secret_file(&path, b"xero_secret\n").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_secret_file(&path).unwrap().expose_secret(), "xero_secret");
        write_secret_file(&path, b"second").unwrap();
        assert_eq!(read_secret_file(&path).unwrap().expose_secret(), "second");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file left behind");
    }

    #[test]
    fn group_readable_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        fs::write(&path, "x").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            read_secret_file(&path),
            Err(SecretFileError::TooOpen { mode: 0o640, .. })
        ));
    }
}
