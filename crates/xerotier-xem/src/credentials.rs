//! The workspace credentials, held in memory and reloaded as a whole.
//!
//! A reload reads every file; one that is missing, unreadable, empty, not a regular file (a
//! symlink, FIFO, device, directory), owned by anyone but root or the XEM's own user, readable
//! or writable by group or others, or larger than [`MAX_CREDENTIAL_BYTES`] keeps its last good
//! version. The new set then replaces the old in one swap, so an invocation starting during a
//! reload sees either the old set or the new one, never a mix. Invocations hold an `Arc` of the
//! version they started with; a reload cannot change it.
//!
//! Every check is made on the open descriptor (`fstat`), not on the name: the name can be
//! swapped between a check and the read, the descriptor cannot. Files are opened relative to a
//! handle on `credentials_dir` with `O_NOFOLLOW` (a symlink is never followed, so it cannot lead
//! the XEM to read a file it was not configured to) and `O_NONBLOCK` (so a FIFO cannot hang a
//! reload waiting for a writer).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, open, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use parking_lot::{Mutex, RwLock};
use sha2::{Digest, Sha256};
use xerotier_proto::workspace_credentials::{CredentialFileReport, ReloadReport};
use zeroize::Zeroizing;

use crate::credential_expiry;

/// A credential file is a kubeconfig, a token, a key: kilobytes. Anything past this is not one
/// (or is an attempt to make the XEM hold a lot in memory), and is refused before it is read.
pub const MAX_CREDENTIAL_BYTES: u64 = 1024 * 1024;

/// A `credentials_ref` as the XEM accepts it: a plain file name directly under
/// `credentials_dir` — no `/`, not `.` or `..`, nothing hidden (staging files of an atomic
/// replace are usually dot files), no NUL.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains('/') && !name.contains('\0')
}

/// One version of a credential file's content.
pub struct CredentialVersion {
    pub bytes: Zeroizing<Vec<u8>>,
    pub sha256: String,
    /// 1 for the first content read, then one more for each change seen by a reload.
    pub generation: u64,
    pub mtime_ms: i64,
    /// The expiry the content carries, if the XEM can read one (`credential_expiry`).
    pub expires_at_ms: Option<i64>,
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

/// Which files a reload re-reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadScope {
    /// Every file (startup, SIGHUP).
    All,
    /// Only these; the others keep their version and their last report. The watch uses this so
    /// a reload caused by one file renamed into place never reads another file that someone is
    /// still writing in place.
    Only(BTreeSet<String>),
}

impl ReloadScope {
    fn includes(&self, credentials_ref: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(names) => names.contains(credentials_ref),
        }
    }
}

#[derive(Debug)]
pub struct CredentialStore {
    dir: PathBuf,
    refs: Vec<String>,
    /// Besides root, the one owner a credential file may have: the XEM's own (effective) user.
    own_uid: u32,
    current: RwLock<Arc<CredentialSet>>,
    /// Serializes reloads (SIGHUP twice in a row), so generations count up one at a time; holds
    /// each file's latest report, for the files a scoped reload does not re-read.
    reloading: Mutex<HashMap<String, CredentialFileReport>>,
}

/// What the file type bits of `st_mode` say, for an error message.
fn kind_of(st_mode: u32) -> &'static str {
    match SFlag::from_bits_truncate(st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFLNK => "a symbolic link",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFSOCK => "a socket",
        _ => "not a known file type",
    }
}

fn require_regular(stat: &FileStat, path: &Path) -> Result<(), String> {
    let kind = kind_of(stat.st_mode);
    if kind == "a regular file" {
        return Ok(());
    }
    Err(format!(
        "{} is {kind}, not a regular file; refused (install the credential as a regular 0600 file)",
        path.display()
    ))
}

/// Open `credentials_dir`, for the `openat` of each file.
fn open_dir(dir: &Path) -> Result<OwnedFd, String> {
    open(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| format!("credentials_dir {}: {}", dir.display(), e.desc()))
}

/// Reads one credential file from the open `credentials_dir`, checking it on its descriptor.
fn read_credential(
    dir: &OwnedFd,
    dir_path: &Path,
    name: &str,
    own_uid: u32,
) -> Result<(Zeroizing<Vec<u8>>, i64), String> {
    let path = dir_path.join(name);
    if !is_plain_file_name(name) {
        return Err(format!("{name:?} is not a plain file name under credentials_dir; refused"));
    }
    // A look before opening: opening a device can have effects of its own, so anything but a
    // regular file is refused unopened. Not the decisive check (the name may be swapped right
    // after); that is the fstat on the descriptor in `open_credential`.
    let seen = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| format!("{}: {}", path.display(), e.desc()))?;
    require_regular(&seen, &path)?;
    let (file, stat) = open_credential(dir, name, &path, own_uid)?;
    let size = u64::try_from(stat.st_size).unwrap_or(0);
    let bytes = read_bounded(file, size, &path)?;
    if bytes.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok((bytes, stat.st_mtime * 1000 + stat.st_mtime_nsec / 1_000_000))
}

/// Opens `name` in `dir` without following a symlink or waiting on a FIFO, and checks what was
/// opened: a regular file, owned by root or `own_uid`, private to its owner, not too large.
fn open_credential(
    dir: &OwnedFd,
    name: &str,
    path: &Path,
    own_uid: u32,
) -> Result<(File, FileStat), String> {
    let shown = path.display();
    let flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_CLOEXEC
        | OFlag::O_NOCTTY;
    let fd = openat(dir, name, flags, Mode::empty()).map_err(|e| match e {
        // O_NOFOLLOW met a symlink.
        Errno::ELOOP => format!("{shown} is a symbolic link, not a regular file; refused"),
        e => format!("{shown}: {}", e.desc()),
    })?;
    let stat = fstat(&fd).map_err(|e| format!("{shown}: {}", e.desc()))?;
    require_regular(&stat, path)?;
    if stat.st_uid != 0 && stat.st_uid != own_uid {
        return Err(format!(
            "{shown} is owned by uid {}; it must be owned by root or by the XEM's user (uid \
             {own_uid}); refused",
            stat.st_uid
        ));
    }
    let mode = stat.st_mode & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{shown} is readable or writable by group or others (mode {mode:o}); it must be 0600"
        ));
    }
    let size = u64::try_from(stat.st_size).unwrap_or(0);
    if size > MAX_CREDENTIAL_BYTES {
        return Err(format!(
            "{shown} is {size} bytes, larger than the {MAX_CREDENTIAL_BYTES} bytes a credential \
             file may hold; refused"
        ));
    }
    Ok((File::from(fd), stat))
}

/// Reads the `size` bytes fstat announced, into one buffer allocated up front (a growing buffer
/// would leave copies of the secret in freed memory). A file that turns out longer is being
/// written to while we read: refused, never read past `size`.
fn read_bounded(mut file: File, size: u64, path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    let len = usize::try_from(size).map_err(|_| format!("{} is too large", path.display()))?;
    let mut bytes = Zeroizing::new(vec![0u8; len + 1]);
    let mut filled = 0;
    while let Some(rest) = bytes.get_mut(filled..) {
        if rest.is_empty() {
            return Err(format!(
                "{} grew while it was read (is it being written in place?); refused, reload \
                 again once it is complete",
                path.display()
            ));
        }
        match file.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    bytes.truncate(filled);
    Ok(bytes)
}

impl CredentialStore {
    /// Nothing is read until the first [`Self::reload`].
    pub fn new(dir: PathBuf, refs: Vec<String>) -> Self {
        Self::owned_by(dir, refs, nix::unistd::geteuid().as_raw())
    }

    /// As [`Self::new`], accepting files owned by root or `own_uid`.
    fn owned_by(dir: PathBuf, refs: Vec<String>, own_uid: u32) -> Self {
        Self {
            dir,
            refs,
            own_uid,
            current: RwLock::new(Arc::default()),
            reloading: Mutex::new(HashMap::new()),
        }
    }

    /// The directory the files are read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file names read, one per `credentials_ref`.
    pub fn refs(&self) -> &[String] {
        &self.refs
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
        self.reload_scoped(trigger, &ReloadScope::All)
    }

    /// Re-reads the files in `scope` (blocking I/O), then swaps the whole set in at once. The
    /// report covers every file: those not re-read as the previous reload left them.
    pub fn reload_scoped(&self, trigger: &str, scope: &ReloadScope) -> ReloadReport {
        let mut last_reports = self.reloading.lock();
        let previous = self.current();
        let mut next = CredentialSet::new();
        let mut files = Vec::with_capacity(self.refs.len());
        let dir = open_dir(&self.dir);
        for credentials_ref in &self.refs {
            let old = previous.get(credentials_ref);
            if !scope.includes(credentials_ref)
                && let Some(report) = last_reports.get(credentials_ref)
            {
                if let Some(old) = old {
                    next.insert(credentials_ref.clone(), old.clone());
                }
                files.push(report.clone());
                continue;
            }
            let read = dir
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|dir| read_credential(dir, &self.dir, credentials_ref, self.own_uid));
            let (version, error) = match read {
                Ok((bytes, mtime_ms)) => {
                    let sha256 = hex::encode(Sha256::digest(bytes.as_slice()));
                    match old {
                        Some(old) if old.sha256 == sha256 => (Some(old.clone()), None),
                        _ => {
                            let generation = old.map_or(1, |o| o.generation + 1);
                            // Read once per new content; unchanged content keeps its reading.
                            let expires_at_ms = credential_expiry::expiry_of(&bytes);
                            (
                                Some(Arc::new(CredentialVersion {
                                    expires_at_ms,
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
            let report = CredentialFileReport {
                credentials_ref: credentials_ref.clone(),
                ok: error.is_none(),
                sha256: version.as_ref().map(|v| v.sha256.clone()),
                generation: version.as_ref().map_or(0, |v| v.generation),
                mtime_ms: version.as_ref().map(|v| v.mtime_ms),
                error,
                expires_at_ms: version.as_ref().and_then(|v| v.expires_at_ms),
            };
            last_reports.insert(credentials_ref.clone(), report.clone());
            files.push(report);
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
    use std::os::unix::fs::PermissionsExt;
    use std::sync::mpsc;
    use std::time::Duration;

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

    /// Bounds each test that could block: a reload that hangs fails the test instead of the
    /// test run.
    const NO_HANG: Duration = Duration::from_secs(5);

    /// A store whose `a.yaml` and `b.yaml` were read once: `a.yaml` holds "good".
    fn loaded(dir: &Path) -> CredentialStore {
        install(dir, "a.yaml", "good", 0o600);
        install(dir, "b.yaml", "bee", 0o600);
        let store = store(dir);
        assert!(store.reload("startup").ok);
        store
    }

    /// Reloads on another thread; the report, or a test failure if it takes past [`NO_HANG`].
    fn reload_within_deadline(store: &Arc<CredentialStore>) -> ReloadReport {
        let (tx, rx) = mpsc::channel();
        let store = store.clone();
        std::thread::spawn(move || {
            let _ = tx.send(store.reload("sighup"));
        });
        rx.recv_timeout(NO_HANG).expect("the reload hung")
    }

    /// Replaces `a.yaml` with `make`'s creation, reloads, and checks that the file is refused
    /// with `expected` in its error, that the last good version ("good", generation 1) stays
    /// in use, and that `b.yaml` was still read. Returns the error.
    fn assert_refused(dir: &Path, make: impl FnOnce(&Path), expected: &str) -> String {
        let store = Arc::new(loaded(dir));
        std::fs::remove_file(dir.join("a.yaml")).unwrap();
        make(&dir.join("a.yaml"));
        let report = reload_within_deadline(&store);
        assert!(!report.ok, "{report:?}");
        let a = &report.files[0];
        let error = a.error.clone().unwrap_or_default();
        assert!(!a.ok && error.contains(expected), "expected {expected:?}: {a:?}");
        assert_eq!(
            (a.generation, a.sha256.as_deref()),
            (1, Some(hex::encode(Sha256::digest(b"good")).as_str())),
            "the last good version is reported in use"
        );
        assert!(report.files[1].ok, "the other file is still read: {report:?}");
        assert_eq!(store.snapshot("a.yaml").unwrap().bytes.as_slice(), b"good");
        error
    }

    /// A root-owned 0600 file outside the credentials dir, with content the XEM must never
    /// take.
    fn outside_secret(content: &str) -> (tempfile::TempDir, PathBuf) {
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("shadow");
        std::fs::write(&target, content).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        (outside, target)
    }

    #[test]
    fn a_symlink_to_a_private_file_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        // The target would pass every check by itself (regular, 0600, our own or root's).
        let (_outside, target) = outside_secret("not-for-this-workspace");
        let error = assert_refused(
            dir.path(),
            |at| std::os::unix::fs::symlink(&target, at).unwrap(),
            "symbolic link",
        );
        assert!(!error.contains("not-for-this-workspace"));
        // And the descriptor-level check alone (the name swapped after the look before
        // opening): O_NOFOLLOW refuses it without reading.
        let fd = open_dir(dir.path()).unwrap();
        let err = open_credential(&fd, "a.yaml", &dir.path().join("a.yaml"), 0).unwrap_err();
        assert!(err.contains("symbolic link"), "{err}");
    }

    #[test]
    fn a_fifo_is_refused_without_hanging_the_reload() {
        let dir = tempfile::tempdir().unwrap();
        let mkfifo = |at: &Path| nix::unistd::mkfifo(at, Mode::from_bits_truncate(0o600)).unwrap();
        assert_refused(dir.path(), mkfifo, "a FIFO");
        // The descriptor-level path alone (a FIFO swapped in after the look): O_NONBLOCK means
        // the open returns at once, with no writer, and fstat refuses it.
        let (tx, rx) = mpsc::channel();
        let dir_path = dir.path().to_path_buf();
        std::thread::spawn(move || {
            let fd = open_dir(&dir_path).unwrap();
            let _ = tx.send(open_credential(&fd, "a.yaml", &dir_path.join("a.yaml"), 0).err());
        });
        let err = rx.recv_timeout(NO_HANG).expect("opening a FIFO hung").unwrap_or_default();
        assert!(err.contains("a FIFO"), "{err}");
    }

    #[test]
    fn devices_and_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let to_null = |at: &Path| std::os::unix::fs::symlink("/dev/null", at).unwrap();
        assert_refused(dir.path(), to_null, "symbolic link");
        let mkdir = |at: &Path| std::fs::create_dir(at).unwrap();
        assert_refused(dir.path(), mkdir, "a directory");
        let dir = tempfile::tempdir().unwrap();
        // A real character device (1, 3 is /dev/null) needs CAP_MKNOD.
        let null = nix::sys::stat::makedev(1, 3);
        let probe = dir.path().join("probe");
        match nix::sys::stat::mknod(&probe, SFlag::S_IFCHR, Mode::from_bits_truncate(0o600), null) {
            Ok(()) => {
                std::fs::remove_file(&probe).unwrap();
                let mknod = |at: &Path| {
                    let mode = Mode::from_bits_truncate(0o600);
                    nix::sys::stat::mknod(at, SFlag::S_IFCHR, mode, null).unwrap()
                };
                assert_refused(dir.path(), mknod, "a character device");
            }
            Err(err) => eprintln!("no character device test here (mknod: {err}); symlink only"),
        }
    }

    #[test]
    fn a_file_owned_by_another_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        if nix::unistd::geteuid().is_root() {
            // 65534 is `nobody`: neither root nor the XEM's user.
            let foreign = |at: &Path| {
                install(at.parent().unwrap(), "a.yaml", "planted", 0o600);
                std::os::unix::fs::chown(at, Some(65_534), None).unwrap();
            };
            let error = assert_refused(dir.path(), foreign, "owned by uid 65534");
            assert!(error.contains("uid 0"), "{error}");
        } else {
            // Unprivileged, we cannot give a file away; a store that runs as another user
            // sees our files as foreign instead.
            let own = nix::unistd::geteuid().as_raw();
            install(dir.path(), "a.yaml", "planted", 0o600);
            let store =
                CredentialStore::owned_by(dir.path().into(), vec!["a.yaml".into()], own + 1);
            let report = store.reload("startup");
            let error = report.files[0].error.clone().unwrap_or_default();
            assert!(error.contains(&format!("owned by uid {own}")), "{report:?}");
            assert!(store.snapshot("a.yaml").is_none());
        }
    }

    #[test]
    fn group_writable_and_oversized_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let writable = |at: &Path| install(at.parent().unwrap(), "a.yaml", "x", 0o620);
        assert_refused(dir.path(), writable, "mode 620");
        let huge = "x".repeat(usize::try_from(MAX_CREDENTIAL_BYTES).unwrap() + 1);
        let oversized = |at: &Path| install(at.parent().unwrap(), "a.yaml", &huge, 0o600);
        let error = assert_refused(dir.path(), oversized, "larger than the 1048576 bytes");
        assert!(error.len() < 300, "the content is not in the error");
        // Exactly at the limit is a credential.
        let dir = tempfile::tempdir().unwrap();
        let store = loaded(dir.path());
        install(dir.path(), "a.yaml", &huge[1..], 0o600);
        assert!(store.reload("sighup").ok);
    }

    #[test]
    fn a_file_that_grows_while_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.yaml");
        std::fs::write(&path, "longer than announced").unwrap();
        // As if fstat had seen 6 bytes and a writer appended since.
        let err = read_bounded(File::open(&path).unwrap(), 6, &path).unwrap_err();
        assert!(err.contains("grew while it was read"), "{err}");
        let read = read_bounded(File::open(&path).unwrap(), 21, &path).unwrap();
        assert_eq!(read.as_slice(), b"longer than announced");
    }

    #[test]
    fn names_that_leave_the_directory_are_never_opened() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("creds");
        std::fs::create_dir(&inner).unwrap();
        install(dir.path(), "outside.yaml", "outside", 0o600);
        let refs = ["../outside.yaml", "..", ".", "", "sub/x"].map(String::from).to_vec();
        let store = CredentialStore::new(inner, refs);
        let report = store.reload("startup");
        for file in &report.files {
            let error = file.error.as_deref().unwrap_or_default();
            assert!(error.contains("not a plain file name"), "{file:?}");
        }
        assert!(store.snapshot("../outside.yaml").is_none());
    }

    #[test]
    fn a_scoped_reload_reads_only_its_files_and_reports_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = loaded(dir.path());
        install(dir.path(), "a.yaml", "renamed into place", 0o600);
        // b.yaml being rewritten in place: half of it so far.
        std::fs::write(dir.path().join("b.yaml"), "be").unwrap();
        let only = ReloadScope::Only(BTreeSet::from(["a.yaml".to_string()]));
        let report = store.reload_scoped("watch", &only);
        assert!(report.ok && report.trigger == "watch", "{report:?}");
        assert_eq!((report.files[0].generation, report.files[1].generation), (2, 1));
        assert_eq!(store.snapshot("b.yaml").unwrap().bytes.as_slice(), b"bee", "not re-read");
        assert_eq!(
            report.files[1].sha256.as_deref(),
            Some(hex::encode(Sha256::digest(b"bee")).as_str())
        );
        // A refusal stays reported by later scoped reloads of other files.
        install(dir.path(), "b.yaml", "open", 0o644);
        assert!(!store.reload("sighup").ok);
        let report = store.reload_scoped("watch", &only);
        assert!(!report.ok && !report.files[1].ok && report.files[0].ok, "{report:?}");
    }
}
