//! The workspace credentials, held in memory and reloaded as a whole.
//!
//! A reload reads every file; one that is missing, unreadable, empty or readable by group or
//! others keeps its last good version. The new set then replaces the old in one swap, so an
//! invocation starting during a reload sees either the old set or the new one, never a mix.
//! Invocations hold an `Arc` of the version they started with; a reload cannot change it.

use std::collections::HashMap;
use std::fmt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use sha2::{Digest, Sha256};
use xerotier_proto::workspace_credentials::{CredentialFileReport, ReloadReport};
use zeroize::Zeroizing;

/// One version of a credential file's content.
pub struct CredentialVersion {
    pub bytes: Zeroizing<Vec<u8>>,
    pub sha256: String,
    /// 1 for the first content read, then one more for each change seen by a reload.
    pub generation: u64,
    pub mtime_ms: i64,
}

impl fmt::Debug for CredentialVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialVersion")
            .field("sha256", &self.sha256)
            .field("generation", &self.generation)
            .field("mtime_ms", &self.mtime_ms)
            .finish_non_exhaustive()
    }
}

type CredentialSet = HashMap<String, Arc<CredentialVersion>>;

#[derive(Debug)]
pub struct CredentialStore {
    dir: PathBuf,
    refs: Vec<String>,
    current: RwLock<Arc<CredentialSet>>,
    /// Serializes reloads (SIGHUP twice in a row), so generations count up one at a time.
    reloading: Mutex<()>,
}

fn read_credential(path: &Path) -> Result<(Zeroizing<Vec<u8>>, i64), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} is readable by group or others (mode {mode:o}); it must be 0600",
            path.display()
        ));
    }
    let bytes =
        Zeroizing::new(std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?);
    if bytes.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok((bytes, meta.mtime() * 1000 + meta.mtime_nsec() / 1_000_000))
}

impl CredentialStore {
    /// Nothing is read until the first [`Self::reload`].
    pub fn new(dir: PathBuf, refs: Vec<String>) -> Self {
        Self { dir, refs, current: RwLock::new(Arc::default()), reloading: Mutex::new(()) }
    }

    fn current(&self) -> Arc<CredentialSet> {
        self.current.read().clone()
    }

    /// The version in use of one file, to hold for a whole invocation.
    pub fn snapshot(&self, credentials_ref: &str) -> Option<Arc<CredentialVersion>> {
        self.current().get(credentials_ref).cloned()
    }

    /// Re-reads every file (blocking I/O), then swaps the whole set in at once.
    pub fn reload(&self, trigger: &str) -> ReloadReport {
        let _one_at_a_time = self.reloading.lock();
        let previous = self.current();
        let mut next = CredentialSet::new();
        let mut files = Vec::with_capacity(self.refs.len());
        for credentials_ref in &self.refs {
            let old = previous.get(credentials_ref);
            let (version, error) = match read_credential(&self.dir.join(credentials_ref)) {
                Ok((bytes, mtime_ms)) => {
                    let sha256 = hex::encode(Sha256::digest(bytes.as_slice()));
                    match old {
                        Some(old) if old.sha256 == sha256 => (Some(old.clone()), None),
                        _ => {
                            let generation = old.map_or(1, |o| o.generation + 1);
                            (
                                Some(Arc::new(CredentialVersion {
                                    bytes,
                                    sha256,
                                    generation,
                                    mtime_ms,
                                })),
                                None,
                            )
                        }
                    }
                }
                Err(error) => (old.cloned(), Some(error)),
            };
            files.push(CredentialFileReport {
                credentials_ref: credentials_ref.clone(),
                ok: error.is_none(),
                sha256: version.as_ref().map(|v| v.sha256.clone()),
                generation: version.as_ref().map_or(0, |v| v.generation),
                mtime_ms: version.as_ref().map(|v| v.mtime_ms),
                error,
            });
            if let Some(version) = version {
                next.insert(credentials_ref.clone(), version);
            }
        }
        let swapped = Arc::new(next);
        *self.current.write() = swapped;
        ReloadReport { trigger: trigger.to_string(), ok: files.iter().all(|f| f.ok), files }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Like `install -m MODE`: a new file renamed over the old one.
    fn install(dir: &Path, name: &str, content: &str, mode: u32) {
        let staged = dir.join(format!(".{name}.staged"));
        std::fs::write(&staged, content).unwrap();
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::rename(staged, dir.join(name)).unwrap();
    }

    fn store(dir: &Path) -> CredentialStore {
        CredentialStore::new(dir.to_path_buf(), vec!["a.yaml".into(), "b.yaml".into()])
    }

    #[test]
    fn a_replaced_file_gets_a_new_generation_and_held_snapshots_keep_theirs() {
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), "a.yaml", "one", 0o600);
        install(dir.path(), "b.yaml", "bee", 0o600);
        let store = store(dir.path());
        let first = store.reload("startup");
        assert!(first.ok, "{first:?}");
        let held = store.snapshot("a.yaml").unwrap();
        assert_eq!((held.generation, held.bytes.as_slice()), (1, b"one".as_slice()));

        install(dir.path(), "a.yaml", "two", 0o600);
        let second = store.reload("sighup");
        assert!(second.ok);
        assert_eq!(second.files[0].generation, 2);
        assert_eq!(
            second.files[0].sha256.as_deref(),
            Some(hex::encode(Sha256::digest(b"two")).as_str())
        );
        assert_eq!(second.files[1].generation, 1, "unchanged content keeps its generation");
        assert_eq!(held.bytes.as_slice(), b"one", "a snapshot taken earlier is untouched");
        assert_eq!(store.snapshot("a.yaml").unwrap().bytes.as_slice(), b"two");
        assert!(!format!("{held:?}").contains("one"), "contents never reach Debug");
    }

    #[test]
    fn an_open_file_is_refused_and_the_last_good_version_stays() {
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), "a.yaml", "good", 0o600);
        install(dir.path(), "b.yaml", "bee", 0o600);
        let store = store(dir.path());
        store.reload("startup");
        install(dir.path(), "a.yaml", "leaked", 0o644);
        let report = store.reload("sighup");
        assert!(!report.ok);
        let a = &report.files[0];
        assert!(!a.ok && a.error.as_deref().unwrap().contains("mode 644"), "{a:?}");
        assert_eq!(a.generation, 1);
        assert!(report.files[1].ok, "other files are still reloaded");
        assert_eq!(store.snapshot("a.yaml").unwrap().bytes.as_slice(), b"good");

        // Fixed, the next reload takes it.
        install(dir.path(), "a.yaml", "fixed", 0o600);
        let report = store.reload("sighup");
        assert!(report.ok);
        assert_eq!(report.files[0].generation, 2);
    }

    #[test]
    fn missing_and_empty_files_are_reported_and_give_no_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), "b.yaml", "", 0o600);
        let store = store(dir.path());
        let report = store.reload("startup");
        assert!(!report.ok);
        assert!(report.files[0].error.as_deref().unwrap().contains("a.yaml"));
        assert!(report.files[1].error.as_deref().unwrap().contains("empty"));
        assert_eq!((report.files[0].generation, report.files[0].sha256.as_deref()), (0, None));
        assert!(store.snapshot("a.yaml").is_none() && store.snapshot("b.yaml").is_none());
        std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
        std::fs::create_dir(dir.path().join("b.yaml")).unwrap();
        assert!(store.reload("sighup").files[1].error.as_deref().unwrap().contains("regular file"));
    }
}
