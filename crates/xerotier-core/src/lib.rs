//! Injected time and randomness.
//!
//! Every decision about expiry, TTL, grace windows or timeouts asks a [`Clock`]; every id and
//! secret is drawn from an [`Entropy`]. Production wires [`SystemClock`] and [`OsEntropy`]; tests
//! wire [`ManualClock`] and [`SeededEntropy`] so that outcomes are deterministic.

mod clock;
mod entropy;
mod ids;

pub use clock::{Clock, ManualClock, SharedClock, SystemClock, UnixMillis};
pub use entropy::{Entropy, OsEntropy, SeededEntropy, SharedEntropy};
pub use ids::{IdGenerator, IdKind, is_valid_id};
mod rfc3339;
pub use rfc3339::{TimeError, format_rfc3339, parse_rfc3339, parse_rfc3339_offset};
