//! The router's own key material: the mesh CURVE key pair and the join-key signing key. Kept in
//! the store so that every replica of one database presents the same mesh identity and verifies
//! the same join keys, and kept there *sealed* under the master key (`xerotier-seal`), which
//! the store never holds: a copy of the database (a backup, a `pg_dump`, the SQLite file) does
//! not give the router's keys away.

use secrecy::ExposeSecret;
use xerotier_core::{Clock, Entropy};
use xerotier_credentials::{CurveKeyPair, JoinTokenSigner, SigningKeyPair};
use xerotier_seal::{SealError, Sealer, is_sealed};
use xerotier_store::{ROUTER_SECRETS, RewriteError, SEALED_COLUMNS, Store};

#[derive(Debug)]
pub struct RouterIdentity {
    pub mesh_keys: CurveKeyPair,
    pub join_signer: JoinTokenSigner,
    /// The join-signing key pair the signer was built from, for the import into `router_keys`.
    pub join_signing_keys: SigningKeyPair,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("store: {0}")]
    Store(#[from] xerotier_store::StoreError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("stored router key {name} is unusable: {detail}")]
    Corrupt { name: &'static str, detail: String },
}

impl From<RewriteError<SealError>> for IdentityError {
    fn from(err: RewriteError<SealError>) -> Self {
        match err {
            RewriteError::Store(err) => Self::Store(err),
            RewriteError::Refused(err) => Self::Seal(err),
        }
    }
}

/// The store names of the two secrets.
const MESH_CURVE: &str = "mesh_curve";
const JOIN_SIGNING: &str = "join_signing";

impl RouterIdentity {
    /// Seals in place what an older router wrote in clear, then loads (or creates, sealed) the
    /// two keys. A master key other than the one the store is sealed under fails here, before
    /// anything is written.
    pub async fn load_or_create(
        store: &Store,
        clock: &dyn Clock,
        entropy: &dyn Entropy,
        sealer: &Sealer,
    ) -> Result<Self, IdentityError> {
        seal_in_place(store, sealer).await?;
        let now = clock.now_millis();
        let candidate = CurveKeyPair::generate(entropy);
        let hex = stored_secret(store, sealer, MESH_CURVE, &candidate.secret_hex(), now).await?;
        let mesh_keys = CurveKeyPair::from_secret_hex(hex.expose_secret())
            .map_err(|e| IdentityError::Corrupt { name: MESH_CURVE, detail: e.to_string() })?;
        let candidate = SigningKeyPair::generate(entropy);
        let hex = stored_secret(store, sealer, JOIN_SIGNING, &candidate.secret_hex(), now).await?;
        let signing = SigningKeyPair::from_secret_hex(hex.expose_secret())
            .map_err(|e| IdentityError::Corrupt { name: JOIN_SIGNING, detail: e.to_string() })?;
        let join_signer = JoinTokenSigner::new(&signing)
            .map_err(|e| IdentityError::Corrupt { name: JOIN_SIGNING, detail: e.to_string() })?;
        Ok(Self { mesh_keys, join_signer, join_signing_keys: signing })
    }
}

/// The secret `name` of `router_secrets`, opened: `candidate` (sealed now) if this call created
/// it, else the one a router (maybe another replica) created first.
async fn stored_secret(
    store: &Store,
    sealer: &Sealer,
    name: &'static str,
    candidate: &secrecy::SecretString,
    now: xerotier_core::UnixMillis,
) -> Result<secrecy::SecretString, IdentityError> {
    let secret_name = ROUTER_SECRETS.secret_name(name);
    let sealed = sealer.seal_str(&secret_name, candidate.expose_secret())?;
    let stored = store.router_secret(name, &sealed, now).await?;
    Ok(sealer.open_str(&secret_name, &stored)?)
}

/// In one transaction: checks that every sealed value in the store opens under `sealer` and
/// seals the ones an older router wrote in clear. Refuses (changing nothing) when any value
/// does not open. Returns how many were sealed; logs the count, never a value.
pub async fn seal_in_place(store: &Store, sealer: &Sealer) -> Result<usize, IdentityError> {
    let report = store
        .rewrite_sealed(SEALED_COLUMNS, |value| {
            let name = value.column.secret_name(&value.key);
            if is_sealed(&value.text) {
                sealer.open(&name, &value.text).map(|_| None)
            } else {
                sealer.seal(&name, value.text.as_bytes()).map(Some)
            }
        })
        .await?;
    let sealed: usize = report.iter().map(|r| r.changed).sum();
    for done in report.iter().filter(|r| r.changed > 0) {
        tracing::warn!(
            table = done.column.table,
            sealed = done.changed,
            kek_id = sealer.kek_id(),
            "sealed router secrets an older router had stored in clear"
        );
    }
    Ok(sealed)
}
