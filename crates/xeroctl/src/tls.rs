//! Trusting the router's TLS: `--ca-file` (only that CA is trusted), and the fingerprint that
//! identifies a CA certificate (`sha256:<lowercase hex of the DER>`).

use std::path::Path;

use anyhow::Context as _;

use crate::exit;

/// The PEM CA certificates at `path`, to be the only ones trusted: one CA, or the bundle of
/// the old and the new during a rotation of the router's CA.
pub fn load_ca(path: &Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("reading the CA certificate {}", path.display()))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(exit::usage(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    reqwest::Certificate::from_pem_bundle(&pem)
        .with_context(|| format!("{} is not a PEM certificate", path.display()))
}

/// `sha256:<lowercase hex>` of a certificate's DER bytes: how a CA is named to the operator,
/// the same as the pin a join key carries.
pub use xerotier_tls::ca_fingerprint as fingerprint;

/// A DER certificate as PEM text (the router writes its `ca.pem` with the same function).
pub use xerotier_tls::certificate_pem as pem;

/// Whether `expected` (as given to `--ca-fingerprint`) names the certificate `fingerprint`.
pub fn fingerprint_matches(expected: &str, fingerprint: &str) -> bool {
    let expected = expected.trim().to_ascii_lowercase().replace(':', "");
    let actual = fingerprint.replace(':', "");
    let expected =
        if expected.starts_with("sha256") { expected } else { format!("sha256{expected}") };
    expected == actual
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_sha256_of_the_der_in_lowercase_hex() {
        assert_eq!(
            fingerprint(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_fingerprint_matches_with_or_without_prefix_and_in_any_case() {
        let f = fingerprint(b"abc");
        assert!(fingerprint_matches(&f, &f));
        assert!(fingerprint_matches(&f.to_uppercase().replace("SHA256", "sha256"), &f));
        assert!(fingerprint_matches(f.trim_start_matches("sha256:"), &f));
        assert!(!fingerprint_matches(&fingerprint(b"abd"), &f));
        assert!(!fingerprint_matches("sha256:", &f));
    }

    #[test]
    fn pem_wraps_base64_at_64_columns() {
        let text = pem(&[0u8; 100]);
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(text.ends_with("-----END CERTIFICATE-----\n"));
        assert!(text.lines().all(|l| l.len() <= 64));
    }
}
