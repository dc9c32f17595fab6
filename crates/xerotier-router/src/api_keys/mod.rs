//! API keys: issue, list, rotate with a grace window, revoke. Every mutation is audited in the
//! same transaction.

mod handlers;
mod service;

pub use handlers::*;
pub use service::{ApiKeyService, BOOTSTRAP_KEY_FILE, BOOTSTRAP_KEY_NAME};
