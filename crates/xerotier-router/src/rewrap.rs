//! `xerotier-router rewrap`: re-encrypt every sealed secret in the store under a new master key,
//! offline, in one transaction. All values move to the new key or none does.

use xerotier_seal::{SealError, Sealer, is_sealed};
use xerotier_store::{RewriteError, Rewritten, SEALED_COLUMNS, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RewrapError {
    #[error(
        "the old and the new master key are the same key ({0}); give a new key \
         (`xerotier-router new-master-key PATH`)"
    )]
    SameKey(String),
    #[error("{0}; nothing was changed")]
    Refused(SealError),
    #[error("store: {0}; nothing was changed")]
    Store(#[from] StoreError),
}

/// What a rewrap did: per column, the values moved to the new key, and of them how many had
/// been stored in clear by an older router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewrapReport {
    pub columns: Vec<Rewritten>,
    pub were_clear: usize,
}

/// Opens every sealed value with `old` and seals it again under `new` (a value still in clear is
/// sealed under `new`), in one transaction; any value `old` does not open refuses the whole.
pub async fn rewrap(
    store: &Store,
    old: &Sealer,
    new: &Sealer,
) -> Result<RewrapReport, RewrapError> {
    if old.kek_id() == new.kek_id() {
        return Err(RewrapError::SameKey(old.kek_id().to_string()));
    }
    let mut were_clear = 0;
    let columns = store
        .rewrite_sealed(SEALED_COLUMNS, |value| {
            let name = value.column.secret_name(&value.key);
            if is_sealed(&value.text) {
                let plain = old.open(&name, &value.text)?;
                new.seal(&name, &plain).map(Some)
            } else {
                were_clear += 1;
                new.seal(&name, value.text.as_bytes()).map(Some)
            }
        })
        .await
        .map_err(|err| match err {
            RewriteError::Store(err) => RewrapError::Store(err),
            RewriteError::Refused(err) => RewrapError::Refused(err),
        })?;
    Ok(RewrapReport { columns, were_clear })
}
