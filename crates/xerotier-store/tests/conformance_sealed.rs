//! Sealed columns, on both backends: a rewrite changes every value or none; SQLite files are
//! the owner's only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::os::unix::fs::PermissionsExt;

use xerotier_store::{ROUTER_SECRETS, RewriteError, SEALED_COLUMNS, Store, sqlite_path};
use xerotier_testkit::{TestDb, per_backend};

async fn open(db: &TestDb) -> Store {
    let store = Store::connect(db.url()).await.unwrap();
    store.router_secret("mesh_curve", "clear-a", 1).await.unwrap();
    store.router_secret("join_signing", "clear-b", 1).await.unwrap();
    store
}

#[derive(Debug, thiserror::Error)]
#[error("refused {0}")]
struct Refused(String);

per_backend!(a_rewrite_changes_every_value_or_none, open, |db, store| {
    assert!(SEALED_COLUMNS.contains(&ROUTER_SECRETS));
    assert_eq!(ROUTER_SECRETS.secret_name("mesh_curve"), "router_secrets.mesh_curve");
    let before = store.sealed_values(SEALED_COLUMNS).await.unwrap();
    let keys: Vec<_> = before.iter().map(|v| v.key.as_str()).collect();
    assert_eq!(keys, ["join_signing", "mesh_curve"], "{}", db.backend);

    // The second value is refused: the first one's new text must not stay.
    let refused = store
        .rewrite_sealed(SEALED_COLUMNS, |v| {
            if v.key == "mesh_curve" {
                Err(Refused(v.key.clone()))
            } else {
                Ok(Some(format!("new-{}", v.text)))
            }
        })
        .await;
    assert!(matches!(refused, Err(RewriteError::Refused(Refused(ref k))) if k == "mesh_curve"));
    assert_eq!(store.sealed_values(SEALED_COLUMNS).await.unwrap(), before, "{}", db.backend);

    let report = store
        .rewrite_sealed(SEALED_COLUMNS, |v| {
            Ok::<_, Refused>((v.key == "mesh_curve").then(|| format!("new-{}", v.text)))
        })
        .await
        .unwrap();
    assert_eq!((report[0].rows, report[0].changed), (2, 1), "{}", db.backend);
    assert_eq!(store.router_secret("mesh_curve", "x", 2).await.unwrap(), "new-clear-a");
    assert_eq!(store.router_secret("join_signing", "x", 2).await.unwrap(), "clear-b");
});

#[tokio::test]
async fn sqlite_files_are_created_0600_and_narrowed_when_wider() {
    let db = TestDb::sqlite();
    let store = open(&db).await;
    let path = sqlite_path(db.url()).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600, "the database file");
    for suffix in ["-wal", "-shm"] {
        let side = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        assert!(side.exists(), "{} exists while the store is open", side.display());
        assert_eq!(mode(&side), 0o600, "{}", side.display());
    }
    store.close().await;

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = Store::connect(db.url()).await.unwrap();
    assert_eq!(mode(&path), 0o600, "an older, wider file is narrowed at connect");
    store.close().await;
}
