//! A client-side certificate check under one trust anchor that the caller chooses from the
//! presented chain: the join key's pinned CA (the XEM's enrollment), or the chain's own last
//! certificate, recorded for the operator to confirm (`xeroctl config add --fetch-ca`). The
//! server certificate is then verified (name, validity, signature) under that anchor alone.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// Which certificate of a presented chain the server certificate must verify under.
pub trait AnchorChoice: std::fmt::Debug + Send + Sync {
    /// `Ok(None)`: the server certificate itself is the one trusted (a pinned leaf).
    fn choose(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<Option<CertificateDer<'static>>, rustls::Error>;
}

/// A [`ServerCertVerifier`] that trusts exactly the anchor its [`AnchorChoice`] picks.
#[derive(Debug)]
pub struct AnchoredVerifier<C> {
    choice: C,
    provider: Arc<CryptoProvider>,
}

impl<C: AnchorChoice> AnchoredVerifier<C> {
    pub fn new(choice: C) -> Self {
        Self { choice, provider: crate::provider() }
    }

    pub fn choice(&self) -> &C {
        &self.choice
    }
}

impl<C: AnchorChoice> ServerCertVerifier for AnchoredVerifier<C> {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(anchor) = self.choice.choose(end_entity, intermediates)? else {
            return Ok(ServerCertVerified::assertion());
        };
        let mut roots = RootCertStore::empty();
        roots.add(anchor)?;
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
