//! A client that trusts exactly one CA, named by its fingerprint (kubeadm's
//! `--discovery-token-ca-cert-hash`): the agent learns the pin from the join key it was handed,
//! so whatever CAs its host trusts, and whoever sits on the path, it enrolls only with the
//! router that minted the key.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::time_provider::TimeProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use xerotier_core::SharedClock;

use crate::{TlsError, ca_fingerprint, is_fingerprint};

/// A client configuration that accepts a server only if the chain it presents contains the
/// certificate with fingerprint `pin`, and the server certificate is valid for the name
/// connected to under that certificate as the only trust anchor (or is that certificate).
/// Certificate validity is judged at `clock`'s time.
pub fn pinned_client_config(pin: &str, clock: SharedClock) -> Result<ClientConfig, TlsError> {
    if !is_fingerprint(pin) {
        return Err(TlsError::BadFingerprint(pin.to_string()));
    }
    let provider = crate::provider();
    let verifier = Arc::new(PinnedCa { pin: pin.to_string(), provider: provider.clone() });
    Ok(ClientConfig::builder_with_details(provider, Arc::new(ClockTime(clock)))
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// rustls reads the time through the injected clock.
#[derive(Debug)]
struct ClockTime(SharedClock);

impl TimeProvider for ClockTime {
    fn current_time(&self) -> Option<UnixTime> {
        let seconds = u64::try_from(self.0.now_millis() / 1000).ok()?;
        Some(UnixTime::since_unix_epoch(std::time::Duration::from_secs(seconds)))
    }
}

#[derive(Debug)]
struct PinnedCa {
    pin: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if ca_fingerprint(end_entity) == self.pin {
            // The pinned certificate is the server certificate itself.
            return Ok(ServerCertVerified::assertion());
        }
        let Some(anchor) = intermediates.iter().find(|c| ca_fingerprint(c) == self.pin) else {
            return Err(rustls::Error::General(
                "the server's certificate chain does not contain the CA pinned by the join key \
                 (a different server, or a man in the middle)"
                    .into(),
            ));
        };
        let mut roots = RootCertStore::empty();
        roots.add(anchor.clone().into_owned())?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
