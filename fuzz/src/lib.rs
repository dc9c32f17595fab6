//! What the fuzz targets and the corpus generator share: the router's fixed join-token signer
//! and the fixed time tokens are checked at, so seeded good tokens verify inside the targets.

use std::sync::LazyLock;

use xerotier_core::{SeededEntropy, UnixMillis};
use xerotier_credentials::{JoinTokenSigner, SigningKeyPair};

/// The "router's" join-key signing key (fixed seed, so the corpus's good tokens verify).
pub static SIGNER: LazyLock<JoinTokenSigner> = LazyLock::new(|| {
    JoinTokenSigner::new(&SigningKeyPair::generate(&SeededEntropy::new(1)))
        .expect("a signer from a fixed seed")
});

/// The clock reading every token is verified at (2023-11-14T22:13:20Z).
pub const NOW: UnixMillis = 1_700_000_000_000;

/// Splits an input into two parts at its first NUL byte (or its middle when it has none).
pub fn split_in_two(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => data.split_at(data.len() / 2),
    }
}
