//! Wire types shared by the router and its clients.
//!
//! Everything here is plain data with serde and OpenAPI derives; no I/O, no policy. A change to a
//! type here is a change to the public API.

pub mod agents;
pub mod api_keys;
pub mod audit;
pub mod error;
pub mod events;
pub mod formats;
pub mod health;
pub mod invocation;
pub mod join_keys;
pub mod mesh;
pub mod operations;
pub mod page;
pub mod pauses;
pub mod posture;
pub mod rotation;
pub mod router;
pub mod router_keys;
pub mod schema;
pub mod scope;
pub mod status;
pub mod tools;
pub mod webhooks;
pub mod workspace_credentials;

pub use error::{ErrorBody, ErrorCode, ErrorEnvelope};
pub use page::Page;
pub use scope::{Scope, ScopeParseError, Scopes};

/// The header that carries the API key, as `Bearer xero_…`.
pub const AUTHORIZATION: &str = "authorization";
/// The header every response carries.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
