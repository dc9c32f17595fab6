//! The router's own CA: created once under `<state-dir>/tls/`, it issues the server certificate
//! for the configured names and issues a fresh one well before the current one expires.
//!
//! Files: `ca.pem` (public: what clients trust and agents pin), `ca.key` (0600), `server.pem`
//! (the server certificate followed by the CA certificate), `server.key` (0600) and
//! `server.json` (the names and expiry the server certificate was issued for, so renewal needs
//! no certificate parser).
//!
//! That is the standalone form. The router keeps its CA in its store instead, sealed
//! (SPEC §9): it hands the CA to [`ensure_issued`] in memory, and `<state-dir>/tls/` then holds
//! no CA key: `ca.pem` is the trust bundle clients read (the issuing CA first; during a CA
//! rotation the old and the new), and the server certificate is presented with whatever the
//! rotation adds after the CA (the new CA cross-signed by the old one, then the old CA), so
//! clients that still trust only the old CA accept it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{TlsError, files};

pub const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca.key";
const SERVER_CERT_FILE: &str = "server.pem";
const SERVER_KEY_FILE: &str = "server.key";
const SERVER_META_FILE: &str = "server.json";

/// The CA lives ten years (its rotation is a phased operation of its own).
const CA_VALIDITY_SECONDS: i64 = 10 * 365 * 86_400;
/// A server certificate lives 90 days…
pub const SERVER_VALIDITY_SECONDS: i64 = 90 * 86_400;
/// …and is replaced once fewer than 30 days are left.
pub const RENEW_BEFORE_SECONDS: i64 = 30 * 86_400;
/// Certificates start an hour in the past, so a client whose clock lags accepts them.
const BACKDATE_SECONDS: i64 = 3_600;

/// What the server presents: the chain (server certificate, then the CA) and its key.
#[derive(Debug)]
pub(crate) struct ServerMaterial {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub ca: CertificateDer<'static>,
    /// Unix seconds.
    pub not_after: i64,
    /// True when this call issued a new server certificate.
    pub issued: bool,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct ServerMeta {
    sans: Vec<String>,
    not_after: i64,
}

/// Loads the CA and server certificate in `dir`, creating the CA on first use and issuing a
/// server certificate when there is none, when it was issued for other names, or when it is
/// due for renewal at `now` (Unix seconds).
pub(crate) fn ensure(dir: &Path, sans: &[String], now: i64) -> Result<ServerMaterial, TlsError> {
    std::fs::create_dir_all(dir).map_err(TlsError::io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(TlsError::io(dir))?;
    let (ca_pem, ca_key) = load_or_create_ca(dir, now)?;
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .map_err(|e| TlsError::bad_file(&dir.join(CA_CERT_FILE), e))?;
    server_under(dir, sans, (&ca, ca_key), &[], now)
}

/// The issuing CA held in memory (the router's, from its store), the CAs clients are told to
/// trust after it, and what is presented after it.
#[derive(Debug)]
pub(crate) struct Issuing<'a> {
    pub ca: &'a CertificateDer<'static>,
    pub key_pem: &'a str,
    pub also_trusted: &'a [CertificateDer<'static>],
    pub extra: &'a [CertificateDer<'static>],
}

/// As [`ensure`] with a CA held in memory: writes the trust bundle to `ca.pem` when it
/// differs, and issues a server certificate under the CA unless the one in `dir` was issued by
/// it for these names and presents the same extra chain. No CA key is written.
pub(crate) fn ensure_issued(
    dir: &Path,
    sans: &[String],
    issuing: &Issuing<'_>,
    now: i64,
) -> Result<ServerMaterial, TlsError> {
    std::fs::create_dir_all(dir).map_err(TlsError::io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(TlsError::io(dir))?;
    let mut bundle = vec![issuing.ca.clone()];
    bundle.extend(issuing.also_trusted.iter().cloned());
    let bundle_pem = pem_all(&bundle);
    let ca_path = dir.join(CA_CERT_FILE);
    if std::fs::read(&ca_path).ok().as_deref() != Some(bundle_pem.as_bytes()) {
        files::write_public(&ca_path, bundle_pem.as_bytes())?;
    }
    let key =
        KeyPair::from_pem(issuing.key_pem).map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    server_under(dir, sans, (issuing.ca, key), issuing.extra, now)
}

/// The server certificate in `dir` if it was issued by `ca` for `sans`, is not due, and is
/// presented with `extra`; otherwise a new one.
fn server_under(
    dir: &Path,
    sans: &[String],
    (ca, ca_key): (&CertificateDer<'static>, KeyPair),
    extra: &[CertificateDer<'static>],
    now: i64,
) -> Result<ServerMaterial, TlsError> {
    let wanted = ServerMeta { sans: sans.to_vec(), not_after: 0 };
    if let Some(meta) = current_meta(dir)
        && meta.sans == wanted.sans
        && meta.not_after - now > RENEW_BEFORE_SECONDS
        && let Ok(material) = load_server(dir, ca, extra, meta.not_after)
    {
        return Ok(material);
    }
    issue_server(dir, sans, (ca, ca_key), extra, now)?;
    let meta = current_meta(dir)
        .ok_or_else(|| TlsError::bad_file(&dir.join(SERVER_META_FILE), "unreadable after write"))?;
    let mut material = load_server(dir, ca, extra, meta.not_after)?;
    material.issued = true;
    Ok(material)
}

/// The CA a standalone `dir` holds (its certificate, the first of `ca.pem`, and its key), if
/// it holds one: what a router imports into its store at its first start.
pub(crate) fn files_ca(dir: &Path) -> Result<Option<(CertificateDer<'static>, String)>, TlsError> {
    let (cert_path, key_path) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
    if !key_path.exists() {
        return Ok(None);
    }
    let cert = CertificateDer::from_pem_slice(&files::read(&cert_path)?)
        .map_err(|e| TlsError::bad_file(&cert_path, e))?;
    let key = String::from_utf8(files::read_key(&key_path)?)
        .map_err(|e| TlsError::bad_file(&key_path, e))?;
    Ok(Some((cert, key)))
}

/// Deletes the CA key file of `dir` (once the CA is sealed in the router's store); returns
/// whether there was one.
pub(crate) fn remove_ca_key(dir: &Path) -> Result<bool, TlsError> {
    let path = dir.join(CA_KEY_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(TlsError::io(&path)(err)),
    }
}

pub(crate) fn pem_all(certs: &[CertificateDer<'_>]) -> String {
    certs.iter().map(|c| pem(c)).collect()
}

/// A DER certificate as PEM text, base64 in 64-column lines.
pub fn pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn load_or_create_ca(dir: &Path, now: i64) -> Result<(String, KeyPair), TlsError> {
    let (cert_path, key_path) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => {
            let pem = String::from_utf8(files::read(&cert_path)?)
                .map_err(|e| TlsError::bad_file(&cert_path, e))?;
            let key_pem = String::from_utf8(files::read_key(&key_path)?)
                .map_err(|e| TlsError::bad_file(&key_path, e))?;
            let key = KeyPair::from_pem(&key_pem).map_err(|e| TlsError::bad_file(&key_path, e))?;
            Ok((pem, key))
        }
        (false, false) => create_ca(&cert_path, &key_path, now),
        (true, false) => Err(TlsError::IncompleteCa { dir: dir.into(), missing: CA_KEY_FILE }),
        (false, true) => Err(TlsError::IncompleteCa { dir: dir.into(), missing: CA_CERT_FILE }),
    }
}

fn create_ca(cert_path: &Path, key_path: &Path, now: i64) -> Result<(String, KeyPair), TlsError> {
    let key = KeyPair::generate()?;
    let cert = ca_params("Xerotier router CA", now)?.self_signed(&key)?;
    // The key first: a CA certificate without its key could never issue again.
    files::write_key(key_path, key.serialize_pem().as_bytes())?;
    files::write_public(cert_path, cert.pem().as_bytes())?;
    tracing::info!(file = %cert_path.display(), "created the router's private TLS CA");
    Ok((cert.pem(), key))
}

/// What a router CA certificate is: `common_name` distinguishes the CAs of successive
/// rotations (a cross-signed copy must carry the same name as the self-signed one).
pub(crate) fn ca_params(common_name: &str, now: i64) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Xerotier");
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = at(now - BACKDATE_SECONDS)?;
    params.not_after = at(now + CA_VALIDITY_SECONDS)?;
    Ok(params)
}

fn issue_server(
    dir: &Path,
    sans: &[String],
    (ca, ca_key): (&CertificateDer<'static>, KeyPair),
    extra: &[CertificateDer<'static>],
    now: i64,
) -> Result<(), TlsError> {
    let issuer = Issuer::from_ca_cert_der(ca, ca_key)
        .map_err(|e| TlsError::bad_file(&dir.join(CA_CERT_FILE), e))?;
    let mut params = CertificateParams::new(sans.to_vec())
        .map_err(|e| TlsError::BadName { name: sans.join(","), detail: e.to_string() })?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, sans.first().map(String::as_str).unwrap_or("localhost"));
    params.distinguished_name = name;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let not_after = now + SERVER_VALIDITY_SECONDS;
    params.not_before = at(now - BACKDATE_SECONDS)?;
    params.not_after = at(not_after)?;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    files::write_key(&dir.join(SERVER_KEY_FILE), key.serialize_pem().as_bytes())?;
    let chain = format!("{}{}{}", cert.pem(), pem(ca), pem_all(extra));
    files::write_public(&dir.join(SERVER_CERT_FILE), chain.as_bytes())?;
    let meta = ServerMeta { sans: sans.to_vec(), not_after };
    let meta = serde_json::to_vec(&meta).map_err(|e| TlsError::bad_file(dir, e))?;
    files::write_public(&dir.join(SERVER_META_FILE), &meta)?;
    tracing::info!(names = %sans.join(","), not_after, "issued the router's TLS server certificate");
    Ok(())
}

fn current_meta(dir: &Path) -> Option<ServerMeta> {
    let bytes = std::fs::read(dir.join(SERVER_META_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn load_server(
    dir: &Path,
    ca: &CertificateDer<'static>,
    extra: &[CertificateDer<'static>],
    not_after: i64,
) -> Result<ServerMaterial, TlsError> {
    let cert_path: PathBuf = dir.join(SERVER_CERT_FILE);
    let key_path = dir.join(SERVER_KEY_FILE);
    let chain = CertificateDer::pem_slice_iter(&files::read(&cert_path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::bad_file(&cert_path, e))?;
    // The cross-signed certificate is issued afresh by each process (a new signature over the
    // same name and key), so the extra chain is matched by length and its last certificate.
    if chain.len() != 2 + extra.len()
        || chain[1] != *ca
        || chain.last() != extra.last().or(Some(ca))
    {
        return Err(TlsError::bad_file(&cert_path, "not the server certificate and this CA"));
    }
    let key = PrivateKeyDer::from_pem_slice(&files::read_key(&key_path)?)
        .map_err(|e| TlsError::bad_file(&key_path, e))?;
    Ok(ServerMaterial { chain, key, ca: ca.clone(), not_after, issued: false })
}

fn at(unix_seconds: i64) -> Result<OffsetDateTime, TlsError> {
    OffsetDateTime::from_unix_timestamp(unix_seconds)
        .map_err(|_| TlsError::Issue(rcgen::Error::Time))
}
