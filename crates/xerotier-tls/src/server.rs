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

/// The CA held in memory that issues a generated certificate (the router's, from its store),
/// with what a CA rotation adds.
#[derive(Debug, Clone)]
struct Held {
    issuing: CaMaterial,
    issuing_der: CertificateDer<'static>,
    also_trusted: Vec<CertificateDer<'static>>,
    /// The certificates presented after the issuing CA: empty, or (a CA rotation's
    /// `update_servers`) the issuing CA cross-signed by the old one, then the old CA.
    extra: Vec<CertificateDer<'static>>,
}

/// The router's TLS server side.
#[derive(Debug)]
pub struct ServerTls {
    source: CertSource,
    current: Arc<Current>,
    config: Arc<ServerConfig>,
    state: Mutex<State>,
    /// `Some` when the generated certificate is issued by a CA held in memory.
    held: Mutex<Option<Held>>,
}

impl ServerTls {
    /// Loads (or, for [`CertSource::Generated`], creates or renews) the certificate. `now` is
    /// Unix seconds from the caller's clock.
    pub fn load(source: CertSource, now: i64) -> Result<Self, TlsError> {
        Self::build(source, None, now)
    }

    /// A generated certificate for `sans` issued by `ca`, held in memory (the router's CA from
    /// its store): `dir` receives the trust bundle (`ca.pem`) and the server certificate and its
    /// key, never the CA's key.
    pub fn from_ca(
        dir: PathBuf,
        sans: Vec<String>,
        ca: CaMaterial,
        now: i64,
    ) -> Result<Self, TlsError> {
        let issuing_der = cert_der(&ca.cert_pem)?;
        let held = Held { issuing: ca, issuing_der, also_trusted: Vec::new(), extra: Vec::new() };
        Self::build(CertSource::Generated { dir, sans }, Some(held), now)
    }

    fn build(source: CertSource, held: Option<Held>, now: i64) -> Result<Self, TlsError> {
        let (key, state) = read_source(&source, held.as_ref(), now)?;
        let current = Arc::new(Current(RwLock::new(Arc::new(key))));
        let mut config = ServerConfig::builder_with_provider(crate::provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            source,
            current,
            config: Arc::new(config),
            state: Mutex::new(state),
            held: Mutex::new(held),
        })
    }

    /// Reads the operator's files again, or renews the generated certificate if it is due. On
    /// error the certificate presented so far stays in place.
    pub fn reload(&self, now: i64) -> Result<Reloaded, TlsError> {
        if let CertSource::Generated { .. } = &self.source
            && !self.renewal_due(now)
        {
            return Ok(Reloaded::Unchanged);
        }
        let held = self.held.lock().clone();
        let (key, state) = read_source(&self.source, held.as_ref(), now)?;
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
        if let Some(held) = &*self.held.lock() {
            return Ok(Some(held.issuing.clone()));
        }
        match &self.source {
            CertSource::Generated { dir, .. } => files_ca(dir),
            CertSource::Operator { .. } => Ok(None),
        }
    }

    /// Issues the generated server certificate under `plan` (a CA rotation's phase) and
    /// presents it from now on; `ca.pem` becomes the plan's trust bundle. Returns whether
    /// anything changed (nothing when `plan` is the one in force). Refused for the operator's
    /// files, which their owner rotates.
    pub fn adopt_ca(&self, plan: &CaPlan<'_>, now: i64) -> Result<bool, TlsError> {
        if !self.is_generated() {
            return Err(TlsError::OperatorCertificate);
        }
        let issuing_der = cert_der(&plan.issuing.cert_pem)?;
        let also_trusted =
            plan.also_trusted.iter().map(|pem| cert_der(pem)).collect::<Result<Vec<_>, _>>()?;
        let cross_by = plan.cross_signed_by.map(|old| cert_der(&old.cert_pem)).transpose()?;
        if let Some(held) = &*self.held.lock()
            && held.issuing_der == issuing_der
            && held.issuing.key_pem.expose_secret() == plan.issuing.key_pem.expose_secret()
            && held.also_trusted == also_trusted
            // The cross-signed certificate differs at every signing: the old CA after it names
            // what it was cross-signed by.
            && held.extra.last() == cross_by.as_ref()
        {
            return Ok(false);
        }
        let extra = match (plan.cross_signed_by, cross_by) {
            (Some(old), Some(old_der)) => vec![cross_sign(plan.issuing, old)?, old_der],
            _ => Vec::new(),
        };
        let held = Held { issuing: plan.issuing.clone(), issuing_der, also_trusted, extra };
        let (key, state) = read_source(&self.source, Some(&held), now)?;
        *self.current.0.write() = Arc::new(key);
        *self.state.lock() = state;
        *self.held.lock() = Some(held);
        Ok(true)
    }

    /// When the presented certificate expires (Unix seconds), when known.
    pub fn not_after(&self) -> Option<i64> {
        self.state.lock().not_after
    }
}

/// The CA a standalone certificate directory holds (`ca.pem` and `ca.key`), if it holds one:
/// what a router imports into its store at its first start.
pub fn files_ca(dir: &std::path::Path) -> Result<Option<CaMaterial>, TlsError> {
    Ok(private_ca::files_ca(dir)?.map(|(cert, key)| CaMaterial {
        cert_pem: private_ca::pem(&cert),
        key_pem: SecretString::from(key),
    }))
}

/// Deletes the CA key file of a certificate directory once the CA is kept elsewhere (sealed in
/// the router's store); returns whether there was one.
pub fn remove_files_ca_key(dir: &std::path::Path) -> Result<bool, TlsError> {
    private_ca::remove_ca_key(dir)
}

fn read_source(
    source: &CertSource,
    held: Option<&Held>,
    now: i64,
) -> Result<(CertifiedKey, State), TlsError> {
    match source {
        CertSource::Generated { dir, sans } => {
            let material = match held {
                Some(held) => private_ca::ensure_issued(
                    dir,
                    sans,
                    &private_ca::Issuing {
                        ca: &held.issuing_der,
                        key_pem: held.issuing.key_pem.expose_secret(),
                        also_trusted: &held.also_trusted,
                        extra: &held.extra,
                    },
                    now,
                )?,
                None => private_ca::ensure(dir, sans, now)?,
            };
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
