pub mod agents;
pub mod audit;
pub mod candidates;
pub mod completion;
pub mod config;
pub mod credentials;
pub mod end_grace;
pub mod events;
pub mod exec;
pub mod follow;
pub mod join_keys;
pub mod keys;
pub mod operations;
pub mod pauses;
pub mod rotation;
pub mod router;
pub mod router_keys;
pub mod webhooks;

use std::time::Duration;

use crate::client::Client;
use crate::confirm::Confirmation;
use crate::exit;
use crate::output::Printer;

/// What a command that talks to the router works with.
#[derive(Debug)]
pub struct Ctx {
    pub client: Client,
    pub out: Printer,
    pub confirm: Confirmation,
}

/// `90d`, `12h`, `30m`, `0s` as seconds.
pub fn parse_duration_secs(text: &str, flag: &str) -> anyhow::Result<u64> {
    let duration: Duration = humantime::parse_duration(text.trim()).map_err(|_| {
        exit::usage(format!("{flag} {text:?} is not a duration (examples: 90d, 12h, 30m, 0s)"))
    })?;
    Ok(duration.as_secs())
}
