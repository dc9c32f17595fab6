//! Secret material and how it is handled.
//!
//! Secrets live in [`secrecy`] wrappers (redacted `Debug`, zeroized on drop), are stored only as
//! verifiers, are compared in constant time, and reach disk only through [`write_secret_file`].

mod api_key;
mod secret_file;

pub use api_key::{ApiKeyValue, ApiKeyValueError, IssuedSecret, Verifier};
pub use secret_file::{SecretFileError, read_secret_file, write_secret_file};
