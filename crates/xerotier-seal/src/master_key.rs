//! The master key: 32 random bytes, kept in a file as 64 hex characters and a newline, 0600,
//! owned by the user the router runs as (or a systemd credential, which systemd makes so).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use xerotier_core::Entropy;
use zeroize::Zeroizing;

/// Bytes in a master key.
pub const MASTER_KEY_LEN: usize = 32;
/// Hex characters in a master key file (without the newline).
const HEX_LEN: usize = MASTER_KEY_LEN * 2;
/// A file longer than this is not a master key; read no further.
const MAX_FILE_LEN: u64 = 256;
/// Domain of the key id, so the id is never a hash any other part of the system computes.
const KEK_ID_DOMAIN: &[u8] = b"xerotier-seal/kek-id/v1\0";

/// Why a master key file was refused. Never carries any of the file's content.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("master key file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("master key file {path} is a symbolic link; give the file itself")]
    Symlink { path: PathBuf },
    #[error("master key file {path} is not a regular file")]
    NotRegular { path: PathBuf },
    #[error(
        "master key file {path} is readable by group or others (mode {mode:o}); \
         run `chmod 600 {path}`"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error(
        "master key file {path} is owned by uid {owner}, not by the user this process runs as \
         (uid {uid})"
    )]
    WrongOwner { path: PathBuf, owner: u32, uid: u32 },
    #[error("master key file {path} is empty")]
    Empty { path: PathBuf },
    #[error(
        "master key file {path} is too short ({len} characters); a master key is 64 hex \
         characters (32 random bytes)"
    )]
    TooShort { path: PathBuf, len: usize },
    #[error(
        "master key file {path} is too long ({len} characters); a master key is 64 hex \
         characters (32 random bytes)"
    )]
    TooLong { path: PathBuf, len: u64 },
    #[error("master key file {path} is not hex; a master key is 64 hex characters")]
    NotHex { path: PathBuf },
    #[error("master key file {path} already exists; refusing to overwrite a key")]
    Exists { path: PathBuf },
}

/// A key-encryption key. Its bytes are zeroed on drop and never shown by `Debug`.
#[derive(Clone)]
pub struct MasterKey {
    bytes: Zeroizing<[u8; MASTER_KEY_LEN]>,
    id: String,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl PartialEq for MasterKey {
    /// Same id, same key (a 64-bit collision between two keys an operator holds is not a
    /// concern); compares no secret bytes.
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl MasterKey {
    /// A new random key.
    pub fn generate(entropy: &dyn Entropy) -> Self {
        let mut bytes = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        entropy.fill(bytes.as_mut());
        Self::from_bytes(bytes)
    }

    pub fn from_bytes(bytes: Zeroizing<[u8; MASTER_KEY_LEN]>) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(KEK_ID_DOMAIN);
        hasher.update(bytes.as_ref());
        let id = hex::encode(&hasher.finalize()[..8]);
        Self { bytes, id }
    }

    /// Parses the file form: 64 hex characters, surrounding whitespace (the newline) ignored.
    /// `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, MasterKeyError> {
        let path = || path.to_path_buf();
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(MasterKeyError::Empty { path: path() });
        }
        if trimmed.len() < HEX_LEN {
            return Err(MasterKeyError::TooShort { path: path(), len: trimmed.len() });
        }
        if trimmed.len() > HEX_LEN {
            return Err(MasterKeyError::TooLong { path: path(), len: trimmed.len() as u64 });
        }
        let mut bytes = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        hex::decode_to_slice(trimmed, bytes.as_mut())
            .map_err(|_| MasterKeyError::NotHex { path: path() })?;
        Ok(Self::from_bytes(bytes))
    }

    /// Reads a master key file, refusing a symbolic link, anything but a regular file, a file
    /// group or others may read, one owned by another user, and any content but 64 hex
    /// characters. The checks are made on the opened descriptor (`O_NOFOLLOW`), so the file
    /// checked is the file read.
    pub fn load(path: &Path) -> Result<Self, MasterKeyError> {
        Self::load_checked(path, true)
    }

    /// Reads a master key that systemd passed as a credential (`LoadCredential=`): as
    /// [`MasterKey::load`], except the mode and owner. systemd gives the service's user read
    /// access with an ACL (the group bits then show the ACL mask, e.g. 0440, owner root) or by
    /// ownership, in a read-only directory only that service (and root) can enter; the checks
    /// meant for a file an operator placed would refuse it for no reason.
    pub fn load_credential(path: &Path) -> Result<Self, MasterKeyError> {
        Self::load_checked(path, false)
    }

    fn load_checked(path: &Path, check_access: bool) -> Result<Self, MasterKeyError> {
        let io = |source| MasterKeyError::Io { path: path.to_path_buf(), source };
        let mut file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc_flags::O_NOFOLLOW | libc_flags::O_NONBLOCK)
            .open(path)
        {
            Ok(file) => file,
            Err(err) if err.raw_os_error() == Some(libc_flags::ELOOP) => {
                return Err(MasterKeyError::Symlink { path: path.to_path_buf() });
            }
            Err(err) => return Err(io(err)),
        };
        let meta = file.metadata().map_err(io)?;
        if !meta.file_type().is_file() {
            return Err(MasterKeyError::NotRegular { path: path.to_path_buf() });
        }
        let mode = meta.permissions().mode() & 0o777;
        if check_access && mode & 0o077 != 0 {
            return Err(MasterKeyError::TooOpen { path: path.to_path_buf(), mode });
        }
        let uid = rustix::process::geteuid().as_raw();
        if check_access && meta.uid() != uid {
            return Err(MasterKeyError::WrongOwner {
                path: path.to_path_buf(),
                owner: meta.uid(),
                uid,
            });
        }
        if meta.len() > MAX_FILE_LEN {
            return Err(MasterKeyError::TooLong { path: path.to_path_buf(), len: meta.len() });
        }
        let mut raw = Zeroizing::new(Vec::with_capacity(MAX_FILE_LEN as usize));
        (&mut file).take(MAX_FILE_LEN + 1).read_to_end(&mut raw).map_err(io)?;
        let text = std::str::from_utf8(&raw)
            .map_err(|_| MasterKeyError::NotHex { path: path.to_path_buf() })?;
        Self::parse(text, path)
    }

    /// Writes a new random key to `path` (0600 from its creation, never over an existing file).
    pub fn create_file(path: &Path, entropy: &dyn Entropy) -> Result<Self, MasterKeyError> {
        let key = Self::generate(entropy);
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc_flags::O_NOFOLLOW)
            .open(path)
        {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                return Err(MasterKeyError::Exists { path: path.to_path_buf() });
            }
            Err(source) => return Err(MasterKeyError::Io { path: path.to_path_buf(), source }),
        };
        let io = |source| MasterKeyError::Io { path: path.to_path_buf(), source };
        file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        file.write_all(key.file_text().expose_secret().as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(key)
    }

    /// The file form: 64 lowercase hex characters and a newline.
    pub fn file_text(&self) -> SecretString {
        SecretString::from(format!("{}\n", hex::encode(self.bytes.as_ref())))
    }

    /// 16 hex characters naming this key; safe to show.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn bytes(&self) -> &[u8; MASTER_KEY_LEN] {
        &self.bytes
    }
}

/// The open(2) flags and errno used here, from the platform's own definitions.
mod libc_flags {
    use rustix::fs::OFlags;

    // The flag bits are small positive numbers on every platform: the casts lose nothing.
    #[allow(clippy::cast_possible_wrap)]
    pub const O_NOFOLLOW: i32 = OFlags::NOFOLLOW.bits() as i32;
    #[allow(clippy::cast_possible_wrap)]
    pub const O_NONBLOCK: i32 = OFlags::NONBLOCK.bits() as i32;
    pub const ELOOP: i32 = rustix::io::Errno::LOOP.raw_os_error();
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use xerotier_core::SeededEntropy;

    use super::*;

    fn write(path: &Path, text: &str, mode: u32) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn created_file_is_0600_and_loads_back_as_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let key = MasterKey::create_file(&path, &SeededEntropy::new(1)).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 65);
        assert!(text.ends_with('\n'));
        let loaded = MasterKey::load(&path).unwrap();
        assert_eq!(loaded, key);
        assert_eq!(loaded.id().len(), 16);
        assert!(matches!(
            MasterKey::create_file(&path, &SeededEntropy::new(2)),
            Err(MasterKeyError::Exists { .. })
        ));
    }

    #[test]
    fn debug_shows_the_id_and_never_the_bytes() {
        let key = MasterKey::generate(&SeededEntropy::new(3));
        let shown = format!("{key:?}");
        let hex = key.file_text().expose_secret().trim().to_string();
        assert!(shown.contains(key.id()), "{shown}");
        assert!(!shown.contains(&hex), "{shown}");
        assert!(!shown.contains(&hex[..16]), "{shown}");
    }

    #[test]
    fn unsafe_or_malformed_files_are_refused_with_a_message_and_no_content() {
        let dir = tempfile::tempdir().unwrap();
        let good = MasterKey::generate(&SeededEntropy::new(4)).file_text();
        let good = good.expose_secret();

        let open = dir.path().join("open.key");
        write(&open, good, 0o644);
        let err = MasterKey::load(&open).unwrap_err();
        assert!(matches!(err, MasterKeyError::TooOpen { mode: 0o644, .. }), "{err}");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        write(&open, good, 0o640);
        assert!(matches!(MasterKey::load(&open), Err(MasterKeyError::TooOpen { .. })));

        let target = dir.path().join("target.key");
        write(&target, good, 0o600);
        let link = dir.path().join("link.key");
        symlink(&target, &link).unwrap();
        let err = MasterKey::load(&link).unwrap_err();
        assert!(matches!(err, MasterKeyError::Symlink { .. }), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");

        let sub = dir.path().join("a-dir");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(MasterKey::load(&sub), Err(MasterKeyError::NotRegular { .. })));

        let missing = dir.path().join("missing.key");
        assert!(matches!(MasterKey::load(&missing), Err(MasterKeyError::Io { .. })));

        type Expected = fn(&MasterKeyError) -> bool;
        let cases: [(&str, Expected); 5] = [
            ("", |e| matches!(e, MasterKeyError::Empty { .. })),
            ("\n", |e| matches!(e, MasterKeyError::Empty { .. })),
            ("abcd\n", |e| matches!(e, MasterKeyError::TooShort { len: 4, .. })),
            (&"ab".repeat(33), |e| matches!(e, MasterKeyError::TooLong { len: 66, .. })),
            (&"zz".repeat(32), |e| matches!(e, MasterKeyError::NotHex { .. })),
        ];
        for (i, (text, expected)) in cases.iter().enumerate() {
            let path = dir.path().join(format!("bad-{i}.key"));
            write(&path, text, 0o600);
            let err = MasterKey::load(&path).unwrap_err();
            assert!(expected(&err), "{text:?}: {err}");
            if text.len() > 8 {
                assert!(!err.to_string().contains(text.trim()), "content leaked: {err}");
            }
        }
        let huge = dir.path().join("huge.key");
        write(&huge, &"a".repeat(10_000), 0o600);
        assert!(matches!(MasterKey::load(&huge), Err(MasterKeyError::TooLong { .. })));
    }

    #[test]
    fn a_systemd_credential_is_read_whatever_its_acl_mask_but_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::generate(&SeededEntropy::new(6));
        let path = dir.path().join("xerotier-master-key");
        write(&path, key.file_text().expose_secret(), 0o440);
        assert!(matches!(MasterKey::load(&path), Err(MasterKeyError::TooOpen { .. })));
        assert_eq!(MasterKey::load_credential(&path).unwrap(), key);
        let link = dir.path().join("link");
        symlink(&path, &link).unwrap();
        assert!(matches!(MasterKey::load_credential(&link), Err(MasterKeyError::Symlink { .. })));
        write(&path, "short", 0o400);
        assert!(matches!(MasterKey::load_credential(&path), Err(MasterKeyError::TooShort { .. })));
    }

    #[test]
    fn uppercase_hex_and_no_newline_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::generate(&SeededEntropy::new(5));
        let path = dir.path().join("upper.key");
        write(&path, &key.file_text().expose_secret().trim().to_uppercase(), 0o600);
        assert_eq!(MasterKey::load(&path).unwrap(), key);
    }
}
