//! What the router's HTTPS listener presents, and its replacement in place on reload.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use secrecy::{ExposeSecret, SecretString};

use crate::{
    CaMaterial, CaPlan, TlsError, ca_fingerprint, cert_der, cross_sign, files, private_ca,
};

/// Where the server certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// The operator's PEM files: the certificate chain (server certificate first) and its key.
    /// The last certificate of the chain is what join keys pin.
    Operator { cert: PathBuf, key: PathBuf },
    /// The router's own CA in `dir`, issuing for `sans`.
    Generated { dir: PathBuf, sans: Vec<String> },
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// A new certificate is presented from now on.
    Replaced { ca_pin: String },
    /// Nothing was due (a generated certificate far from expiry).
    Unchanged,
}

/// The certificate presented to every client; replaced whole on reload.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().clone())
    }
}

#[derive(Debug)]
struct State {
    ca_pin: String,
    /// Unix seconds; known for generated certificates only.
    not_after: Option<i64>,
}

/// The router's TLS server side.
#[derive(Debug)]
pub struct ServerTls {
    source: CertSource,
    current: Arc<Current>,
    config: Arc<ServerConfig>,
    state: Mutex<State>,
}

impl ServerTls {
    /// Loads (or, for [`CertSource::Generated`], creates or renews) the certificate. `now` is
    /// Unix seconds from the caller's clock.
    pub fn load(source: CertSource, now: i64) -> Result<Self, TlsError> {
        let (key, state) = read_source(&source, now)?;
        let current = Arc::new(Current(RwLock::new(Arc::new(key))));
        let mut config = ServerConfig::builder_with_provider(crate::provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self { source, current, config: Arc::new(config), state: Mutex::new(state) })
    }

    /// Reads the operator's files again, or renews the generated certificate if it is due. On
    /// error the certificate presented so far stays in place.
    pub fn reload(&self, now: i64) -> Result<Reloaded, TlsError> {
        if let CertSource::Generated { .. } = &self.source
            && !self.renewal_due(now)
        {
            return Ok(Reloaded::Unchanged);
        }
        let (key, state) = read_source(&self.source, now)?;
        *self.current.0.write() = Arc::new(key);
        let ca_pin = state.ca_pin.clone();
        *self.state.lock() = state;
        Ok(Reloaded::Replaced { ca_pin })
    }

    /// True when a generated certificate should be replaced (never for operator files: their
    /// owner renews them and sends SIGHUP).
    pub fn renewal_due(&self, now: i64) -> bool {
        matches!(self.source, CertSource::Generated { .. })
            && self
                .state
                .lock()
                .not_after
                .is_some_and(|end| end - now <= private_ca::RENEW_BEFORE_SECONDS)
    }

    /// The rustls configuration for the listener (it follows reloads).
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// `sha256:<hex>` of the CA certificate clients should trust: what join keys pin.
    pub fn ca_pin(&self) -> String {
        self.state.lock().ca_pin.clone()
    }

    /// Whether the certificate is the router's own (its private CA), not the operator's.
    pub fn is_generated(&self) -> bool {
        matches!(self.source, CertSource::Generated { .. })
    }

    /// The CA that issues the generated server certificate (`None` for the operator's files).
    pub fn generated_ca(&self) -> Result<Option<CaMaterial>, TlsError> {
        let CertSource::Generated { dir, .. } = &self.source else { return Ok(None) };
        let (cert, key) = private_ca::read_ca(dir)?;
        Ok(Some(CaMaterial { cert_pem: private_ca::pem(&cert), key_pem: SecretString::from(key) }))
    }

    /// Issues the generated server certificate under `plan` (a CA rotation's phase) and
    /// presents it from now on; the CA files follow, so a restart presents the same. Returns
    /// whether anything changed (nothing when the files already match `plan`). Refused for
    /// the operator's files, which their owner rotates.
    pub fn adopt_ca(&self, plan: &CaPlan<'_>, now: i64) -> Result<bool, TlsError> {
        let CertSource::Generated { dir, .. } = &self.source else {
            return Err(TlsError::OperatorCertificate);
        };
        let issuing = cert_der(&plan.issuing.cert_pem)?;
        let mut bundle = vec![issuing.clone()];
        for other in &plan.also_trusted {
            bundle.push(cert_der(other)?);
        }
        let (held_ca, held_key) = private_ca::read_ca(dir)?;
        let held_bundle = private_ca::read_bundle(dir)?;
        let held_extra = private_ca::chain_extra(dir)?;
        let extra_fits = match plan.cross_signed_by {
            None => held_extra.is_empty(),
            Some(old) => held_extra.len() == 2 && held_extra[1] == cert_der(&old.cert_pem)?,
        };
        if held_ca == issuing
            && held_key == *plan.issuing.key_pem.expose_secret()
            && held_bundle == bundle
            && extra_fits
        {
            return Ok(false);
        }
        let extra = match plan.cross_signed_by {
            None => Vec::new(),
            Some(old) => vec![cross_sign(plan.issuing, old)?, cert_der(&old.cert_pem)?],
        };
        private_ca::replace_ca(dir, &bundle, plan.issuing.key_pem.expose_secret(), &extra)?;
        let (key, state) = read_source(&self.source, now)?;
        *self.current.0.write() = Arc::new(key);
        *self.state.lock() = state;
        Ok(true)
    }

    /// When the presented certificate expires (Unix seconds), when known.
    pub fn not_after(&self) -> Option<i64> {
        self.state.lock().not_after
    }
}

fn read_source(source: &CertSource, now: i64) -> Result<(CertifiedKey, State), TlsError> {
    match source {
        CertSource::Generated { dir, sans } => {
            let material = private_ca::ensure(dir, sans, now)?;
            let key = certified(material.chain, material.key, dir)?;
            let state =
                State { ca_pin: ca_fingerprint(&material.ca), not_after: Some(material.not_after) };
            Ok((key, state))
        }
        CertSource::Operator { cert, key } => {
            let chain = CertificateDer::pem_slice_iter(&files::read(cert)?)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsError::bad_file(cert, e))?;
            let Some(anchor) = chain.last().cloned() else {
                return Err(TlsError::bad_file(cert, "no certificate in the file"));
            };
            let private = PrivateKeyDer::from_pem_slice(&files::read_key(key)?)
                .map_err(|e| TlsError::bad_file(key, e))?;
            let certified = certified(chain, private, key)?;
            Ok((certified, State { ca_pin: ca_fingerprint(&anchor), not_after: None }))
        }
    }
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    key_path: &std::path::Path,
) -> Result<CertifiedKey, TlsError> {
    CertifiedKey::from_der(chain, key, &crate::provider()).map_err(|e| {
        TlsError::bad_file(key_path, format!("the key does not fit the certificate: {e}"))
    })
}
