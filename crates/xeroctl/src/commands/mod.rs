pub mod agents;
pub mod audit;
pub mod candidates;
pub mod completion;
pub mod config;
pub mod exec;
pub mod follow;
pub mod join_keys;
pub mod keys;
pub mod pauses;
pub mod rotation;

use std::time::Duration;

use anyhow::Context as _;

/// A command that ran to its end with an outcome that is a non-zero exit status (a tool that
/// failed, say); `main` exits with it and prints nothing more.
#[derive(Debug, thiserror::Error)]
#[error("exit status {0}")]
pub struct Exit(pub u8);

/// `90d`, `12h`, `30m`, `0s` as seconds.
pub fn parse_duration_secs(text: &str, flag: &str) -> anyhow::Result<u64> {
    let duration: Duration = humantime::parse_duration(text.trim()).with_context(|| {
        format!("{flag} {text:?} is not a duration (examples: 90d, 12h, 30m, 0s)")
    })?;
    Ok(duration.as_secs())
}
