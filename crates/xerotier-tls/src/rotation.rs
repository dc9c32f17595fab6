//! The material of a router CA rotation (SPEC §9, issue 14): a new CA, and the new CA
//! cross-signed by the old one, which the server presents while clients may still trust only
//! the old CA (`update_servers`), so that switching the server certificate breaks no client.

use rcgen::{CertificateParams, Issuer, KeyPair};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use secrecy::{ExposeSecret, SecretString};

use crate::{TlsError, private_ca};

/// A CA certificate (PEM) and its private key (PEM).
#[derive(Debug, Clone)]
pub struct CaMaterial {
    pub cert_pem: String,
    pub key_pem: SecretString,
}

/// A new router CA named `common_name`, valid from `now` (Unix seconds) for ten years.
pub fn new_ca(common_name: &str, now: i64) -> Result<CaMaterial, TlsError> {
    let key = KeyPair::generate()?;
    let cert = private_ca::ca_params(common_name, now)?.self_signed(&key)?;
    Ok(CaMaterial { cert_pem: cert.pem(), key_pem: SecretString::from(key.serialize_pem()) })
}

/// The first certificate of a PEM text, as DER.
pub fn cert_der(pem: &str) -> Result<CertificateDer<'static>, TlsError> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| TlsError::BadCertificate(e.to_string()))
}

/// When the first certificate of a PEM text expires (its notAfter, Unix seconds).
pub fn certificate_not_after(pem: &str) -> Result<i64, TlsError> {
    let der = cert_der(pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    Ok(cert.validity().not_after.timestamp())
}

/// `new`'s certificate issued again by `old`: same subject, same key, so a server certificate
/// `new` issued verifies under either CA.
pub fn cross_sign(new: &CaMaterial, old: &CaMaterial) -> Result<CertificateDer<'static>, TlsError> {
    let params = same_ca_params(&cert_der(&new.cert_pem)?)?;
    let new_key = KeyPair::from_pem(new.key_pem.expose_secret())
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let old_key = KeyPair::from_pem(old.key_pem.expose_secret())
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let issuer = Issuer::from_ca_cert_pem(&old.cert_pem, old_key)
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    Ok(params.signed_by(&new_key, &issuer)?.der().clone())
}

/// The parameters of a router CA certificate already issued (its name and validity), to issue
/// it again under another CA. Router CAs carry exactly the names `private_ca::ca_params` gives.
fn same_ca_params(der: &CertificateDer<'_>) -> Result<CertificateParams, TlsError> {
    let bad = |e: String| TlsError::BadCertificate(e);
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| bad(e.to_string()))?;
    let name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| bad("the CA certificate has no common name".into()))?;
    let mut params = private_ca::ca_params(name, 0)?;
    let validity = cert.validity();
    params.not_before = validity.not_before.to_datetime();
    params.not_after = validity.not_after.to_datetime();
    Ok(params)
}

/// What a generated server certificate is issued under during (and after) a CA rotation.
#[derive(Debug)]
pub struct CaPlan<'a> {
    /// The CA that issues the server certificate.
    pub issuing: &'a CaMaterial,
    /// Other CAs clients are told to trust (the bundle in `ca.pem`, after the issuing one).
    pub also_trusted: Vec<&'a str>,
    /// In `update_servers`: the old CA, under which the new one is cross-signed and presented.
    pub cross_signed_by: Option<&'a CaMaterial>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;

    use rustls::RootCertStore;
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls_pki_types::{ServerName, UnixTime};

    use super::*;

    fn verify(anchor: &CertificateDer<'static>, chain: &[CertificateDer<'static>]) -> bool {
        let mut roots = RootCertStore::empty();
        roots.add(anchor.clone()).unwrap();
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), crate::provider())
                .build()
                .unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_800_000_000));
        verifier.verify_server_cert(&chain[0], &chain[1..], &name, &[], now).is_ok()
    }

    #[test]
    fn a_server_certificate_of_the_new_ca_verifies_under_the_old_ca_only_with_the_cross_signed_one()
    {
        let now = 1_800_000_000 - 60;
        let old = new_ca("Xerotier router CA", now).unwrap();
        let new = new_ca("Xerotier router CA 2", now).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cross = cross_sign(&new, &old).unwrap();
        let (old_der, new_der) =
            (cert_der(&old.cert_pem).unwrap(), cert_der(&new.cert_pem).unwrap());
        let issuing = private_ca::Issuing {
            ca: &new_der,
            key_pem: new.key_pem.expose_secret(),
            also_trusted: std::slice::from_ref(&old_der),
            extra: &[cross.clone(), old_der.clone()],
        };
        let material =
            private_ca::ensure_issued(dir.path(), &["localhost".into()], &issuing, now).unwrap();
        assert!(!dir.path().join("ca.key").exists(), "the CA key stays in memory");
        let bundle = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
        assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2, "ca.pem is the bundle");
        // Issued once: the same CA and chain find the certificate already there.
        let again =
            private_ca::ensure_issued(dir.path(), &["localhost".into()], &issuing, now).unwrap();
        assert!(material.issued && !again.issued);
        assert_eq!(material.chain.len(), 4, "leaf, new CA, cross-signed new CA, old CA");
        assert!(verify(&new_der, &material.chain), "a client with the new CA");
        assert!(verify(&old_der, &material.chain), "a client with only the old CA");
        let without_cross = [material.chain[0].clone(), material.chain[1].clone()];
        assert!(!verify(&old_der, &without_cross), "the old CA alone does not vouch for the new");
        let stranger = cert_der(&new_ca("Someone else", now).unwrap().cert_pem).unwrap();
        assert!(!verify(&stranger, &material.chain));
    }

    #[test]
    fn a_new_ca_expires_ten_years_after_its_start_and_garbage_is_refused() {
        let now = 1_800_000_000;
        let ca = new_ca("xerotier test CA", now).unwrap();
        let not_after = certificate_not_after(&ca.cert_pem).unwrap();
        let ten_years = 10 * 365 * 86_400;
        assert!((not_after - (now + ten_years)).abs() <= 5 * 86_400, "{not_after}");
        assert!(certificate_not_after("not a certificate").is_err());
        let truncated = &ca.cert_pem[..ca.cert_pem.len() / 2];
        assert!(certificate_not_after(truncated).is_err());
    }
}
