//! API keys: issue, list, rotate with a grace window, revoke. Every mutation is audited in the
//! same transaction.

pub mod handlers;
mod service;

pub use service::{ApiKey, ApiKeyService, BOOTSTRAP_KEY_FILE, BOOTSTRAP_KEY_NAME, IssuedKey};
