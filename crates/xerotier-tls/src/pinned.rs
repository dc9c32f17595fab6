//! A client that trusts exactly one CA, named by its fingerprint (kubeadm's
//! `--discovery-token-ca-cert-hash`): the agent learns the pin from the join key it was handed,
//! so whatever CAs its host trusts, and whoever sits on the path, it enrolls only with the
//! router that minted the key.

use std::sync::Arc;

use rustls::ClientConfig;
use rustls::time_provider::TimeProvider;
use rustls_pki_types::{CertificateDer, UnixTime};
use xerotier_core::SharedClock;

use crate::anchored::{AnchorChoice, AnchoredVerifier};
use crate::{TlsError, ca_fingerprint, is_fingerprint};

/// A client configuration that accepts a server only if the chain it presents contains the
/// certificate with fingerprint `pin`, and the server certificate is valid for the name
/// connected to under that certificate as the only trust anchor (or is that certificate).
/// Certificate validity is judged at `clock`'s time.
pub fn pinned_client_config(pin: &str, clock: SharedClock) -> Result<ClientConfig, TlsError> {
    pinned_client_config_any(&[pin.to_string()], clock)
}

/// [`pinned_client_config`] for any of `pins` (the CAs a router told its agents to trust
/// during and after a CA rotation). At least one pin is required.
pub fn pinned_client_config_any(
    pins: &[String],
    clock: SharedClock,
) -> Result<ClientConfig, TlsError> {
    if pins.is_empty() {
        return Err(TlsError::BadFingerprint(String::new()));
    }
    if let Some(bad) = pins.iter().find(|pin| !is_fingerprint(pin)) {
        return Err(TlsError::BadFingerprint(bad.clone()));
    }
    let verifier = Arc::new(AnchoredVerifier::new(Pinned(pins.to_vec())));
    Ok(ClientConfig::builder_with_details(crate::provider(), Arc::new(ClockTime(clock)))
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

/// The certificate of the chain whose fingerprint is one of the pins.
#[derive(Debug)]
struct Pinned(Vec<String>);

impl AnchorChoice for Pinned {
    fn choose(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<Option<CertificateDer<'static>>, rustls::Error> {
        let pinned = |cert: &CertificateDer<'_>| self.0.contains(&ca_fingerprint(cert));
        if pinned(end_entity) {
            // The pinned certificate is the server certificate itself.
            return Ok(None);
        }
        match intermediates.iter().find(|c| pinned(c)) {
            Some(anchor) => Ok(Some(anchor.clone().into_owned())),
            None => Err(rustls::Error::General(
                "the server's certificate chain does not contain the CA pinned by the join key \
                 (a different server, or a man in the middle)"
                    .into(),
            )),
        }
    }
}
