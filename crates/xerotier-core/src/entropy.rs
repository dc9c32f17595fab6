use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;

use rand::SeedableRng;
use rand::rngs::StdRng;
// The one production source of randomness; every other crate is denied it by clippy.toml.
#[expect(clippy::disallowed_types, reason = "OsEntropy is the one production source")]
use rand_core::OsRng;
use rand_core::RngCore;

/// The source of randomness for ids and secrets.
pub trait Entropy: Send + Sync + fmt::Debug {
    fn fill(&self, dest: &mut [u8]);
}

pub type SharedEntropy = Arc<dyn Entropy>;

/// The operating system's CSPRNG; the only production entropy.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&self, dest: &mut [u8]) {
        OsRng.fill_bytes(dest);
    }
}

/// A seeded generator so tests can reproduce ids and secrets. Never wired in production.
pub struct SeededEntropy {
    rng: Mutex<StdRng>,
}

impl SeededEntropy {
    pub fn new(seed: u64) -> Self {
        Self { rng: Mutex::new(StdRng::seed_from_u64(seed)) }
    }
}

impl fmt::Debug for SeededEntropy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SeededEntropy")
    }
}

impl Entropy for SeededEntropy {
    fn fill(&self, dest: &mut [u8]) {
        let mut rng = self.rng.lock();
        rng.fill_bytes(dest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_entropy_is_reproducible() {
        let (a, b) = (SeededEntropy::new(7), SeededEntropy::new(7));
        let (mut x, mut y) = ([0u8; 16], [0u8; 16]);
        a.fill(&mut x);
        b.fill(&mut y);
        assert_eq!(x, y);
        a.fill(&mut x);
        assert_ne!(x, y);
    }
}
