//! Sealing secrets at rest under a master key (a key-encryption key) that the store never holds.
//!
//! A sealed value is text, so any store column that holds text can hold one:
//! `xs1:<kek-id>:<base64(nonce || ciphertext || tag)>`, XChaCha20-Poly1305 with a fresh random
//! 24-byte nonce for every write (drawn from the injected [`Entropy`]; 192 bits make a random
//! nonce safe for any number of writes under one long-lived key). The associated data is a domain
//! prefix plus the secret's *name*, so a sealed value copied into another row (another name)
//! fails to open. The kek id is 16 hex characters of SHA-256(domain || master key): it tells a
//! wrong key from a damaged value without revealing anything usable about the key.

mod master_key;
mod sealer;

pub use master_key::{MASTER_KEY_LEN, MasterKey, MasterKeyError};
pub use sealer::{SEALED_PREFIX, SealError, Sealer, is_sealed, sealed_kek_id};
