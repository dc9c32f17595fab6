pub mod agents;
pub mod audit;
pub mod completion;
pub mod config;
pub mod join_keys;
pub mod keys;
pub mod rotation;

use std::time::Duration;

use anyhow::Context as _;

/// `90d`, `12h`, `30m`, `0s` as seconds.
pub fn parse_duration_secs(text: &str, flag: &str) -> anyhow::Result<u64> {
    let duration: Duration = humantime::parse_duration(text.trim()).with_context(|| {
        format!("{flag} {text:?} is not a duration (examples: 90d, 12h, 30m, 0s)")
    })?;
    Ok(duration.as_secs())
}
