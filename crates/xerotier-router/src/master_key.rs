//! The master key this router seals its secrets under, and the one exit status that says it is
//! missing or wrong (so a service manager can stop restarting a router that cannot start).

use xerotier_seal::{MasterKey, MasterKeyError, SealError};

use crate::config::{MASTER_KEY_CREDENTIAL, MasterKeySource};

/// The router's exit status when its master key is missing, unreadable, refused (mode, owner,
/// symlink, content) or not the key the store's secrets are sealed under (sysexits' EX_CONFIG).
pub const EXIT_MASTER_KEY: u8 = 78;

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyFailure {
    #[error(
        "no master key: give --master-key-file PATH (or master_key_file: in the config file), \
         or the systemd credential {MASTER_KEY_CREDENTIAL} (LoadCredential=); \
         `xerotier-router new-master-key PATH` makes one"
    )]
    Missing,
    #[error(transparent)]
    File(#[from] MasterKeyError),
    #[error("{0}; start it with the master key the store was sealed under")]
    WrongKey(SealError),
}

/// Loads the master key from where it was given, or says why there is none.
pub fn load(source: Option<&MasterKeySource>) -> Result<MasterKey, MasterKeyFailure> {
    match source.ok_or(MasterKeyFailure::Missing)? {
        MasterKeySource::File(path) => Ok(MasterKey::load(path)?),
        MasterKeySource::SystemdCredential(path) => Ok(MasterKey::load_credential(path)?),
    }
}

/// Whether `err` (anywhere in its chain) is a master key failure: the router then exits with
/// [`EXIT_MASTER_KEY`].
pub fn is_master_key_failure(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.is::<MasterKeyFailure>()
            || matches!(cause.downcast_ref::<SealError>(), Some(SealError::WrongKey { .. }))
    })
}
