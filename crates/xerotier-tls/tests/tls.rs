//! The private CA, reloads and the pinned client, with real rustls handshakes in memory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use rustls::{ClientConnection, ServerConnection};
use rustls_pki_types::ServerName;
use xerotier_core::ManualClock;
use xerotier_tls::{
    CA_CERT_FILE, CertSource, RENEW_BEFORE_SECONDS, Reloaded, SERVER_VALIDITY_SECONDS, ServerTls,
    TlsError, ca_fingerprint, pinned_client_config,
};

const NOW: i64 = 1_800_000_000;

fn pinned(pin: &str, now: i64) -> Result<rustls::ClientConfig, TlsError> {
    pinned_client_config(pin, Arc::new(ManualClock::new(now * 1000)))
}

fn generated(dir: &std::path::Path) -> CertSource {
    CertSource::Generated {
        dir: dir.to_path_buf(),
        sans: vec!["localhost".into(), "127.0.0.1".into(), "router.example".into()],
    }
}

/// Runs a full handshake between `client` and the server in memory; the client's error, if any.
fn handshake(server: &ServerTls, client: rustls::ClientConfig, name: &str) -> Result<(), String> {
    let name = ServerName::try_from(name.to_string()).unwrap();
    let mut client = ClientConnection::new(Arc::new(client), name).unwrap();
    let mut server = ServerConnection::new(server.config()).unwrap();
    for _ in 0..20 {
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            server.read_tls(&mut buf.as_slice()).unwrap();
            if let Err(err) = server.process_new_packets() {
                return Err(format!("server: {err}"));
            }
        }
        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            client.read_tls(&mut buf.as_slice()).unwrap();
            client.process_new_packets().map_err(|e| e.to_string())?;
        }
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
    }
    Err("handshake did not finish".into())
}

fn ca_pin_on_disk(dir: &std::path::Path) -> String {
    let pem = std::fs::read(dir.join(CA_CERT_FILE)).unwrap();
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
    ca_fingerprint(&der)
}

#[test]
fn the_private_ca_is_created_once_with_private_keys_0600() {
    let dir = tempfile::tempdir().unwrap();
    let tls_dir = dir.path().join("tls");
    let tls = ServerTls::load(generated(&tls_dir), NOW).unwrap();
    assert_eq!(tls.ca_pin(), ca_pin_on_disk(&tls_dir));
    assert_eq!(tls.not_after(), Some(NOW + SERVER_VALIDITY_SECONDS));
    for (file, mode) in [("ca.key", 0o600), ("server.key", 0o600), ("ca.pem", 0o644)] {
        let meta = std::fs::metadata(tls_dir.join(file)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
    }
    assert_eq!(std::fs::metadata(&tls_dir).unwrap().permissions().mode() & 0o777, 0o700);
    let again = ServerTls::load(generated(&tls_dir), NOW + 60).unwrap();
    assert_eq!(again.ca_pin(), tls.ca_pin(), "a restart keeps the CA agents pinned");
    assert_eq!(again.not_after(), tls.not_after(), "and the server certificate");
}

#[test]
fn a_pinned_client_accepts_the_router_for_each_name_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let tls = ServerTls::load(generated(dir.path()), NOW).unwrap();
    for name in ["localhost", "127.0.0.1", "router.example"] {
        handshake(&tls, pinned(&tls.ca_pin(), NOW).unwrap(), name).unwrap();
    }
    let err = handshake(&tls, pinned(&tls.ca_pin(), NOW).unwrap(), "other.example").unwrap_err();
    assert!(err.contains("NotValidForName") || err.contains("not valid"), "{err}");

    // A man in the middle with a CA of its own: the pin is not in its chain.
    let other_dir = tempfile::tempdir().unwrap();
    let impostor = ServerTls::load(generated(other_dir.path()), NOW).unwrap();
    assert_ne!(impostor.ca_pin(), tls.ca_pin(), "every router has its own CA");
    let err = handshake(&impostor, pinned(&tls.ca_pin(), NOW).unwrap(), "localhost").unwrap_err();
    assert!(err.contains("does not contain the CA pinned"), "{err}");
}

#[test]
fn malformed_pins_are_refused() {
    for pin in ["", "sha256:", "md5:00", &format!("sha256:{}", "G".repeat(64))] {
        assert!(matches!(pinned(pin, NOW), Err(TlsError::BadFingerprint(_))), "{pin}");
    }
}

#[test]
fn the_server_certificate_is_renewed_before_expiry_under_the_same_ca() {
    let dir = tempfile::tempdir().unwrap();
    let tls = ServerTls::load(generated(dir.path()), NOW).unwrap();
    let pin = tls.ca_pin();
    let early = NOW + SERVER_VALIDITY_SECONDS - RENEW_BEFORE_SECONDS - 10;
    assert!(!tls.renewal_due(early));
    assert_eq!(tls.reload(early).unwrap(), Reloaded::Unchanged);
    let due = NOW + SERVER_VALIDITY_SECONDS - RENEW_BEFORE_SECONDS + 10;
    assert!(tls.renewal_due(due));
    assert_eq!(tls.reload(due).unwrap(), Reloaded::Replaced { ca_pin: pin.clone() });
    assert_eq!(tls.not_after(), Some(due + SERVER_VALIDITY_SECONDS));
    handshake(&tls, pinned(&pin, due).unwrap(), "localhost").unwrap();
}

#[test]
fn new_names_get_a_new_server_certificate_under_the_same_ca() {
    let dir = tempfile::tempdir().unwrap();
    let first = ServerTls::load(generated(dir.path()), NOW).unwrap();
    let more = CertSource::Generated {
        dir: dir.path().to_path_buf(),
        sans: vec!["localhost".into(), "127.0.0.1".into(), "new.example".into()],
    };
    let second = ServerTls::load(more, NOW + 5).unwrap();
    assert_eq!(second.ca_pin(), first.ca_pin());
    handshake(&second, pinned(&first.ca_pin(), NOW).unwrap(), "new.example").unwrap();
}

#[test]
fn a_half_deleted_ca_is_refused_not_silently_replaced() {
    let dir = tempfile::tempdir().unwrap();
    ServerTls::load(generated(dir.path()), NOW).unwrap();
    std::fs::remove_file(dir.path().join("ca.key")).unwrap();
    let err = ServerTls::load(generated(dir.path()), NOW).unwrap_err();
    assert!(matches!(err, TlsError::IncompleteCa { missing: "ca.key", .. }), "{err}");
}

#[test]
fn operator_files_are_reloaded_in_place_and_bad_ones_leave_the_old_certificate() {
    // The operator's material here is made by another private CA, copied to plain files.
    let issuer = tempfile::tempdir().unwrap();
    ServerTls::load(generated(issuer.path()), NOW).unwrap();
    let ops = tempfile::tempdir().unwrap();
    let (cert, key) = (ops.path().join("tls.crt"), ops.path().join("tls.key"));
    std::fs::copy(issuer.path().join("server.pem"), &cert).unwrap();
    std::fs::copy(issuer.path().join("server.key"), &key).unwrap();
    let source = CertSource::Operator { cert: cert.clone(), key: key.clone() };
    let tls = ServerTls::load(source, NOW).unwrap();
    assert_eq!(tls.ca_pin(), ca_pin_on_disk(issuer.path()), "the chain's last certificate");
    handshake(&tls, pinned(&tls.ca_pin(), NOW).unwrap(), "localhost").unwrap();

    // A broken file on reload: refused, and the old certificate keeps serving.
    std::fs::write(&cert, b"not a certificate").unwrap();
    assert!(tls.reload(NOW).is_err());
    handshake(&tls, pinned(&tls.ca_pin(), NOW).unwrap(), "localhost").unwrap();

    // A new certificate from another CA: presented from the reload on.
    let next = tempfile::tempdir().unwrap();
    ServerTls::load(generated(next.path()), NOW).unwrap();
    std::fs::copy(next.path().join("server.pem"), &cert).unwrap();
    std::fs::copy(next.path().join("server.key"), &key).unwrap();
    let pin = ca_pin_on_disk(next.path());
    assert_eq!(tls.reload(NOW).unwrap(), Reloaded::Replaced { ca_pin: pin.clone() });
    handshake(&tls, pinned(&pin, NOW).unwrap(), "localhost").unwrap();
}

#[test]
fn a_world_readable_key_or_a_mismatched_pair_is_refused() {
    let issuer = tempfile::tempdir().unwrap();
    ServerTls::load(generated(issuer.path()), NOW).unwrap();
    let other = tempfile::tempdir().unwrap();
    ServerTls::load(generated(other.path()), NOW).unwrap();
    let ops = tempfile::tempdir().unwrap();
    let (cert, key) = (ops.path().join("tls.crt"), ops.path().join("tls.key"));
    std::fs::copy(issuer.path().join("server.pem"), &cert).unwrap();
    std::fs::copy(issuer.path().join("server.key"), &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let source = CertSource::Operator { cert: cert.clone(), key: key.clone() };
    assert!(matches!(ServerTls::load(source.clone(), NOW), Err(TlsError::KeyTooOpen { .. })));
    std::fs::copy(other.path().join("server.key"), &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = ServerTls::load(source, NOW).unwrap_err();
    assert!(err.to_string().contains("does not fit"), "{err}");
}
