//! The optional credentials watch (`credentials_watch: true`, SPEC 3.1): inotify on
//! `credentials_dir` reports a credential file *renamed into place* (`IN_MOVED_TO`), the way
//! an atomic replace ends; after a quiet [`DEBOUNCE`] the names go to the session, which
//! reloads those files through the same path as SIGHUP (report trigger `watch`).
//!
//! Writes in place (`IN_MODIFY`, `IN_CLOSE_WRITE`) are not watched: such a file may be half
//! written when the event arrives, and the reload re-reads only the renamed files, so a file
//! someone is still writing is never read because of the watch.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Renames closer together than this are one reload (an operator replacing several files).
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// A steady stream of renames still reloads this often.
const DEBOUNCE_AT_MOST: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
#[error("cannot watch credentials_dir {dir}: {source}")]
pub struct WatchError {
    dir: PathBuf,
    source: io::Error,
}

/// Watches `dir` for any of `refs` renamed into place, sending each debounced batch of names
/// to `replaced`, until `shutdown` (or the receiver is gone). Must be called within the tokio
/// runtime.
///
/// The inotify descriptor is read on a blocking thread (tokio's `AsyncFd` registration is an
/// `unsafe` API now, and this workspace forbids `unsafe`), which sleeps in `poll(2)` on it and
/// on a pipe; the async half drops the pipe's write end at shutdown, which wakes the thread to
/// end.
pub fn spawn(
    dir: &Path,
    refs: &[String],
    replaced: mpsc::Sender<BTreeSet<String>>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, WatchError> {
    let error = |source: Errno| WatchError { dir: dir.to_path_buf(), source: source.into() };
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(error)?;
    inotify
        .add_watch(dir, AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_ONLYDIR)
        .map_err(error)?;
    let (wake_read, wake_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(error)?;
    let refs: BTreeSet<String> = refs.iter().cloned().collect();
    let (renamed_tx, renamed_rx) = mpsc::channel(64);
    let reader = tokio::task::spawn_blocking(move || {
        read_until_woken(&inotify, &wake_read, &refs, &renamed_tx)
    });
    let dir = dir.to_path_buf();
    Ok(tokio::spawn(async move {
        debounce(renamed_rx, &replaced, &shutdown).await;
        drop(wake_write);
        let ended = match reader.await {
            Ok(ended) => ended,
            Err(err) => Err(io::Error::other(err)),
        };
        if let Err(err) = ended {
            tracing::error!(
                dir = %dir.display(), error = %err,
                "the credentials watch stopped; reload with `xerotier-xem reload`"
            );
        }
    }))
}

/// The blocking half: watched names, as inotify reports them, until the pipe is closed (or
/// the async half is gone).
fn read_until_woken(
    inotify: &Inotify,
    wake: &OwnedFd,
    refs: &BTreeSet<String>,
    renamed: &mpsc::Sender<BTreeSet<String>>,
) -> io::Result<()> {
    loop {
        let mut fds = [
            PollFd::new(inotify.as_fd(), PollFlags::POLLIN),
            PollFd::new(wake.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(err) => return Err(err.into()),
        }
        // Anything on the pipe (its write end closed: POLLHUP) means stop.
        if fds[1].any().unwrap_or(true) {
            return Ok(());
        }
        let events = match inotify.read_events() {
            Ok(events) => events,
            Err(Errno::EAGAIN | Errno::EINTR) => continue,
            Err(err) => return Err(err.into()),
        };
        let names = relevant(events, refs)?;
        if !names.is_empty() && renamed.blocking_send(names).is_err() {
            return Ok(());
        }
    }
}

/// The async half: a batch goes to the session once no rename came for [`DEBOUNCE`].
async fn debounce(
    mut renamed: mpsc::Receiver<BTreeSet<String>>,
    replaced: &mpsc::Sender<BTreeSet<String>>,
    shutdown: &CancellationToken,
) {
    loop {
        let Some(Some(mut names)) = shutdown.run_until_cancelled(renamed.recv()).await else {
            return;
        };
        let at_most = tokio::time::sleep(DEBOUNCE_AT_MOST);
        tokio::pin!(at_most);
        let mut reader_gone = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = &mut at_most => break,
                _ = tokio::time::sleep(DEBOUNCE) => break,
                more = renamed.recv() => match more {
                    Some(more) => names.extend(more),
                    None => {
                        reader_gone = true;
                        break;
                    }
                },
            }
        }
        tracing::info!(files = ?names, "credential files renamed into place; reloading them");
        if replaced.send(names).await.is_err() || reader_gone {
            return;
        }
    }
}

fn relevant(events: Vec<InotifyEvent>, refs: &BTreeSet<String>) -> io::Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for event in events {
        if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
            // Renames may have been lost; reloading everything could read a file being
            // written in place, so the operator is told instead.
            tracing::warn!(
                "credentials watch: events were lost (inotify queue overflow); run \
                 `xerotier-xem reload` if a credential file was replaced"
            );
        }
        if event.mask.contains(AddWatchFlags::IN_IGNORED) {
            return Err(io::Error::other("credentials_dir was removed or unmounted"));
        }
        if !event.mask.contains(AddWatchFlags::IN_MOVED_TO) {
            continue;
        }
        match event.name.and_then(|n| n.into_string().ok()) {
            Some(name) if refs.contains(&name) => {
                names.insert(name);
            }
            other => {
                tracing::debug!(name = ?other, "renamed into credentials_dir; not a credentials_ref")
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const NO_HANG: Duration = Duration::from_secs(5);

    fn staged(dir: &Path, name: &str, content: &str) -> PathBuf {
        let path = dir.join(format!(".{name}.new"));
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    #[tokio::test]
    async fn renames_into_place_are_reported_and_writes_in_place_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let refs = vec!["a.yaml".to_string(), "b.yaml".to_string()];
        let (tx, mut rx) = mpsc::channel(4);
        let shutdown = CancellationToken::new();
        let task = spawn(dir.path(), &refs, tx, shutdown.clone()).unwrap();

        // Written in place and left open, half done: nothing is reported. The bounded wait
        // is the point (proving an absence), five times the debounce.
        let mut half = std::fs::File::create(dir.path().join("b.yaml")).unwrap();
        half.write_all(b"apiVersion: v1\nus").unwrap();
        half.flush().unwrap();
        // Renamed into place, but not a credentials_ref: nothing either.
        std::fs::rename(staged(dir.path(), "other", "x"), dir.path().join("other.yaml")).unwrap();
        let quiet = tokio::time::timeout(DEBOUNCE * 5, rx.recv()).await;
        assert!(quiet.is_err(), "nothing to reload: {quiet:?}");

        // Renamed into place: reported (in one batch or two, depending on how the reader
        // thread was scheduled between the renames; `debounce` is tested below).
        std::fs::rename(staged(dir.path(), "a.yaml", "new a"), dir.path().join("a.yaml")).unwrap();
        std::fs::rename(staged(dir.path(), "b.yaml", "new b"), dir.path().join("b.yaml")).unwrap();
        let mut seen = BTreeSet::new();
        while seen.len() < 2 {
            seen.extend(tokio::time::timeout(NO_HANG, rx.recv()).await.unwrap().unwrap());
        }
        assert_eq!(seen, names(&["a.yaml", "b.yaml"]));
        drop(half);

        shutdown.cancel();
        tokio::time::timeout(NO_HANG, task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_missing_directory_is_an_error_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, _rx) = mpsc::channel(1);
        let missing = dir.path().join("nope");
        let err = spawn(&missing, &[], tx, CancellationToken::new()).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|n| n.to_string()).collect()
    }

    #[tokio::test]
    async fn renames_within_the_debounce_are_one_reload() {
        let (renamed_tx, renamed_rx) = mpsc::channel(8);
        let (replaced_tx, mut replaced_rx) = mpsc::channel(8);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move { debounce(renamed_rx, &replaced_tx, &stop).await });
        // Both queued before the debounce task first runs (a current-thread runtime): they
        // are one batch.
        renamed_tx.send(names(&["a.yaml"])).await.unwrap();
        renamed_tx.send(names(&["b.yaml"])).await.unwrap();
        let batch = tokio::time::timeout(NO_HANG, replaced_rx.recv()).await.unwrap();
        assert_eq!(batch, Some(names(&["a.yaml", "b.yaml"])));
        // Once a batch is out, the next rename starts another.
        renamed_tx.send(names(&["a.yaml"])).await.unwrap();
        let batch = tokio::time::timeout(NO_HANG, replaced_rx.recv()).await.unwrap();
        assert_eq!(batch, Some(names(&["a.yaml"])));
        shutdown.cancel();
        tokio::time::timeout(NO_HANG, task).await.unwrap().unwrap();
    }
}
