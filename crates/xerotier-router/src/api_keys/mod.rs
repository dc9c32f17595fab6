//! API keys: issue, list, rotate with a grace window, revoke. Every mutation is audited in the
//! same transaction.

mod grace_end;
mod grace_uses;
pub mod handlers;
mod service;

pub use grace_end::GraceEndOutcome;
pub use grace_uses::GraceUseCounter;
pub use service::{ApiKey, ApiKeyService, BOOTSTRAP_KEY_FILE, BOOTSTRAP_KEY_NAME, IssuedKey};
