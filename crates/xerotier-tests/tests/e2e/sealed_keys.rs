//! The router's secrets sealed at rest (SPEC §9, issue 14 part 1), on both backends: without its
//! master key, or with the wrong one, or with one anyone could read, the router refuses to
//! start and says why; `rewrap` moves the store to a new key; and a copy of the database (the
//! SQLite file and its WAL, a `pg_dump`) holds none of the router's private key bytes in any
//! encoding.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use base64::Engine as _;
use secrecy::ExposeSecret;
use xerotier_core::{OsEntropy, SharedEntropy};
use xerotier_credentials::CurveKeyPair;
use xerotier_seal::{MasterKey, Sealer, is_sealed};
use xerotier_store::{SEALED_COLUMNS, Store};

use crate::harness::{EXIT_DEADLINE, ROUTER_BIN, Router, backends, binary, wait_for_exit};

/// The router's exit status for a missing or wrong master key (documented in the README).
const EXIT_MASTER_KEY: i32 = 78;

fn sealer(path: &Path) -> Sealer {
    let entropy: SharedEntropy = Arc::new(OsEntropy);
    Sealer::new(MasterKey::load(path).expect("loading a master key"), entropy)
}

fn new_key(dir: &Path, name: &str) -> (PathBuf, MasterKey) {
    let path = dir.join(name);
    let key = MasterKey::create_file(&path, &OsEntropy).unwrap();
    (path, key)
}

/// The router's secrets as the store has them: (store name, sealed text).
async fn stored(url: &str) -> Vec<(String, String)> {
    let store = Store::connect(url).await.unwrap();
    let values = store.sealed_values(SEALED_COLUMNS).await.unwrap();
    store.close().await;
    values.into_iter().map(|v| (v.column.secret_name(&v.key), v.text)).collect()
}

/// The router's private keys, opened with the master key as the test holds it: (name, hex).
async fn opened(url: &str, key: &Path) -> Vec<(String, String)> {
    let sealer = sealer(key);
    let mut out = Vec::new();
    for (name, text) in stored(url).await {
        assert!(is_sealed(&text), "{name} is stored in clear");
        let opened = sealer.open_str(&name, &text).unwrap();
        out.push((name, opened.expose_secret().to_string()));
    }
    out
}

/// The DER inside a PEM text.
fn pem_der(pem: &str) -> Vec<u8> {
    use base64::Engine as _;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(body).expect("PEM base64")
}

fn assert_refused(router: &mut Router, key: Option<&Path>, expected: &str) {
    let (status, output) = router.run_refused(key);
    assert_eq!(status.code(), Some(EXIT_MASTER_KEY), "[{}] {output}", router.backend);
    assert!(output.contains(expected), "[{}] wanted {expected:?} in:\n{output}", router.backend);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_refuses_to_start_without_its_master_key_and_says_why() {
    for backend in backends().await {
        let mut router = Router::start(&backend).await;
        router.stop_with_sigterm();
        let scratch = tempfile::tempdir().unwrap();

        assert_refused(&mut router, None, "no master key: give --master-key-file");

        let (wrong, wrong_key) = new_key(scratch.path(), "wrong.key");
        let right = MasterKey::load(&router.master_key_path()).unwrap();
        assert_refused(
            &mut router,
            Some(&wrong),
            &format!(
                "the store's secrets are sealed under master key {}; this router was given {}",
                right.id(),
                wrong_key.id()
            ),
        );

        let open = scratch.path().join("open.key");
        std::fs::copy(router.master_key_path(), &open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_refused(&mut router, Some(&open), "is readable by group or others (mode 644)");

        let link = scratch.path().join("link.key");
        symlink(router.master_key_path(), &link).unwrap();
        assert_refused(&mut router, Some(&link), "is a symbolic link");

        let short = scratch.path().join("short.key");
        std::fs::write(&short, "abcdef\n").unwrap();
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_refused(&mut router, Some(&short), "too short");

        // None of the refusals changed anything: the right key still starts it.
        router.restart().await;
        assert_eq!(router.api().get("/healthz", None).await.status, 200);
    }
}

/// Runs `xerotier-router rewrap` on the router's store.
fn rewrap(router: &Router, old: &Path, new: &Path) -> (i32, String) {
    let mut command = Command::new(binary(ROUTER_BIN));
    command
        .arg("rewrap")
        .arg("--old-master-key-file")
        .arg(old)
        .arg("--new-master-key-file")
        .arg(new)
        .arg("--state-dir")
        .arg(router.state_dir());
    if !router.store_url().starts_with("sqlite:") {
        command.arg("--database-url").arg(router.store_url());
    }
    let mut child = command
        .env_remove("XEROTIER_ROUTER_DATABASE_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_exit(&mut child, EXIT_DEADLINE).expect("rewrap finishes");
    let out = child.wait_with_output().unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrap_moves_every_secret_to_the_new_key_or_changes_nothing() {
    for backend in backends().await {
        let mut router = Router::start(&backend).await;
        router.stop_with_sigterm();
        let scratch = tempfile::tempdir().unwrap();
        let old = scratch.path().join("old.key");
        std::fs::copy(router.master_key_path(), &old).unwrap();
        let url = router.store_url();
        let before = stored(&url).await;
        let secrets = opened(&url, &old).await;
        // Mesh and join-signing keys, in router_secrets and in router_keys, and the TLS CA.
        assert_eq!(secrets.len(), 5, "[{}] mesh, join-signing and TLS CA keys", backend.name);

        // Refused, changing nothing: a wrong old key, the same key twice.
        let (wrong, _) = new_key(scratch.path(), "wrong.key");
        let (new, new_id) = new_key(scratch.path(), "new.key");
        let (code, out) = rewrap(&router, &wrong, &new);
        assert_ne!(code, 0, "[{}] {out}", backend.name);
        assert!(
            out.contains("sealed under master key") && out.contains("nothing was changed"),
            "{out}"
        );
        let (code, out) = rewrap(&router, &old, &old);
        assert_ne!(code, 0, "{out}");
        assert!(out.contains("are the same key"), "{out}");
        assert_eq!(
            stored(&url).await,
            before,
            "[{}] a refused rewrap changed the store",
            backend.name
        );

        let (code, out) = rewrap(&router, &old, &new);
        assert_eq!(code, 0, "[{}] {out}", backend.name);
        assert!(out.contains("router_secrets.secret_hex: 2 of 2 values rewrapped"), "{out}");
        assert!(out.contains("router_keys.secret_sealed: 3 of 3 values rewrapped"), "{out}");
        assert!(out.contains(&format!("sealed under master key {}", new_id.id())), "{out}");
        for (_, hex) in &secrets {
            assert!(!out.contains(hex.as_str()), "rewrap printed a secret");
        }
        assert_eq!(opened(&url, &new).await, secrets, "[{}] same keys, new seal", backend.name);

        // The old key no longer starts the router; the new one does.
        assert_refused(
            &mut router,
            Some(&old),
            &format!("this router was given {}", {
                MasterKey::load(&old).unwrap().id().to_string()
            }),
        );
        std::fs::remove_file(router.master_key_path()).unwrap();
        std::fs::copy(&new, router.master_key_path()).unwrap();
        router.restart().await;
        assert!(router.get_json("/v1/management/api-keys").await["data"].is_array());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_an_older_router_stored_in_clear_are_sealed_in_place_at_start() {
    for backend in backends().await {
        let mut router = Router::start(&backend).await;
        router.stop_with_sigterm();
        let url = router.store_url();
        let secrets = opened(&url, &router.master_key_path()).await;
        // What an older router left: the same keys, in clear.
        let store = Store::connect(&url).await.unwrap();
        let clear: std::collections::HashMap<_, _> = secrets.iter().cloned().collect();
        store
            .rewrite_sealed(SEALED_COLUMNS, |v| {
                Ok::<_, std::io::Error>(clear.get(&v.column.secret_name(&v.key)).cloned())
            })
            .await
            .unwrap();
        store.close().await;
        assert!(stored(&url).await.iter().all(|(_, text)| !is_sealed(text)));

        router.restart().await;
        assert!(
            router.logs().contains("sealed router secrets an older router had stored in clear")
        );
        assert_eq!(opened(&url, &router.master_key_path()).await, secrets, "[{}]", backend.name);
        for (_, hex) in &secrets {
            assert!(!router.logs().contains(hex.as_str()), "a secret reached the log");
        }
    }
}

/// Every encoding of a private key a careless store could hold it in. `secret` is the key as
/// the router holds it: hex, or PEM for the TLS CA's key.
fn encodings(name: &str, secret: &str) -> Vec<(String, Vec<u8>)> {
    let hex = &if secret.starts_with("-----BEGIN") {
        ::hex::encode(pem_der(secret))
    } else {
        secret.to_string()
    };
    let raw = ::hex::decode(hex).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = vec![
        ("raw".to_string(), raw.clone()),
        ("hex".to_string(), hex.to_lowercase().into_bytes()),
        ("HEX".to_string(), hex.to_uppercase().into_bytes()),
        ("base64".to_string(), b64.encode(&raw).into_bytes()),
        (
            "base64 unpadded".to_string(),
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(&raw).into_bytes(),
        ),
        (
            "base64url".to_string(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw).into_bytes(),
        ),
    ];
    // A PEM key (the TLS CA's) is base64 in 64-column lines: its second line is all key.
    let full = b64.encode(&raw);
    if full.len() >= 128 {
        out.push(("PEM line".to_string(), full.as_bytes()[64..128].to_vec()));
    }
    if secret.starts_with("-----BEGIN") {
        out.push(("PEM".to_string(), secret.as_bytes().to_vec()));
    }
    if name.ends_with("mesh_curve") {
        let z85 = CurveKeyPair::from_secret_hex(hex).unwrap().secret_z85();
        out.push(("z85".to_string(), z85.expose_secret().as_bytes().to_vec()));
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The encodings of `secrets` found in `haystack`.
fn found(haystack: &[u8], secrets: &[(String, String)]) -> Vec<String> {
    let mut hits = Vec::new();
    for (name, hex) in secrets {
        for (encoding, needle) in encodings(name, hex) {
            if contains(haystack, &needle) {
                hits.push(format!("{name} as {encoding}"));
            }
        }
    }
    hits
}

fn read_if_exists(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

fn pg_dump(url: &str) -> Vec<u8> {
    let candidates = ["pg_dump".to_string()].into_iter().chain(
        std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|d| d.path().join("bin/pg_dump").display().to_string()),
    );
    for bin in candidates {
        if let Ok(out) = Command::new(&bin).arg("--dbname").arg(url).output()
            && out.status.success()
        {
            return out.stdout;
        }
    }
    panic!("pg_dump of the test database failed (is pg_dump installed?)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_private_key_byte_is_in_the_database_files_or_a_pg_dump() {
    for backend in backends().await {
        let mut router = Router::start(&backend).await;
        let url = router.store_url();
        let secrets = opened(&url, &router.master_key_path()).await;
        // router_secrets (mesh, join signing) and their rows in router_keys, and the TLS CA.
        assert_eq!(secrets.len(), 5);
        assert!(secrets.iter().any(|(name, _)| name.contains("tls-")), "{secrets:?}");
        let sealed = stored(&url).await;

        // The search finds what is there: every encoding of every key planted in clear.
        let scratch = tempfile::tempdir().unwrap();
        let planted = scratch.path().join("planted");
        let mut clear = b"header".to_vec();
        for (name, hex) in &secrets {
            for (_, bytes) in encodings(name, hex) {
                clear.extend_from_slice(&bytes);
                clear.extend_from_slice(b"\n--\n");
            }
        }
        std::fs::write(&planted, &clear).unwrap();
        let expected: usize = secrets.iter().map(|(n, h)| encodings(n, h).len()).sum();
        assert_eq!(found(&std::fs::read(&planted).unwrap(), &secrets).len(), expected);

        let mut copies: Vec<(String, Vec<u8>)> = Vec::new();
        if backend.is_sqlite() {
            let db = router.state_dir().join("router.db");
            // While it runs (the WAL holds the latest pages), then after it stopped.
            for phase in ["running", "stopped"] {
                if phase == "stopped" {
                    router.stop_with_sigterm();
                }
                for suffix in ["", "-wal", "-shm"] {
                    let path = PathBuf::from(format!("{}{suffix}", db.display()));
                    copies.push((format!("{phase} {}", path.display()), read_if_exists(&path)));
                }
            }
        } else {
            copies.push(("pg_dump".to_string(), pg_dump(&url)));
        }
        let all: Vec<u8> = copies.iter().flat_map(|(_, b)| b.clone()).collect();
        // ... and it reads these copies: the sealed values are in them, as stored.
        for (name, text) in &sealed {
            assert!(
                contains(&all, text.as_bytes()),
                "[{}] {name}'s sealed value not found",
                backend.name
            );
        }
        for (what, bytes) in &copies {
            let hits = found(bytes, &secrets);
            assert!(hits.is_empty(), "[{}] {what} holds {hits:?}", backend.name);
        }
        eprintln!(
            "[{}] searched {} bytes in {} copies for {} encodings: none found",
            backend.name,
            all.len(),
            copies.len(),
            expected
        );
    }
}
