//! The router's TLS material and how agents recognise it.
//!
//! - [`ServerTls`]: what the router's HTTPS listener presents. Either the operator's certificate
//!   and key (re-read on reload) or a private CA this crate creates under the state directory,
//!   with a server certificate it issues for the configured names and renews before expiry.
//! - [`ca_fingerprint`]: the pin a join key carries (`sha256:<hex>` of the CA certificate).
//! - [`pinned_client_config`]: a client configuration that trusts exactly the CA with a given
//!   pin, so an agent enrolling with a join key talks to the router that minted it and no one
//!   else, whatever CAs the host trusts.

mod anchored;
mod error;
mod files;
mod fingerprint;
mod pinned;
mod private_ca;
mod rotation;
mod server;

pub use anchored::{AnchorChoice, AnchoredVerifier};
pub use error::TlsError;
pub use fingerprint::{ca_fingerprint, is_fingerprint};
pub use pinned::{pinned_client_config, pinned_client_config_any};
pub use private_ca::{
    CA_CERT_FILE, RENEW_BEFORE_SECONDS, SERVER_VALIDITY_SECONDS, pem as certificate_pem,
};
pub use rotation::{CaMaterial, CaPlan, cert_der, certificate_not_after, cross_sign, new_ca};
pub use server::{CertSource, Reloaded, ServerTls, files_ca, remove_files_ca_key};

/// The one crypto provider every configuration here is built on (rustls may be compiled with
/// more than one, and then refuses to guess).
pub(crate) fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
