//! Times an operator gives (`--since`, `--until`): an RFC 3339 timestamp with its offset
//! (`2026-11-25T10:00:00+01:00`, `…Z`), or a duration back from now (`15m`, `1h`). A time
//! without an offset is refused: which zone it means would be a guess.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use xerotier_core::{TimeError, format_rfc3339, parse_rfc3339_offset};

use crate::exit;

/// `text` as the UTC timestamp the router takes; `now` places durations.
pub fn parse_time(text: &str, flag: &str, now: SystemTime) -> anyhow::Result<String> {
    match parse_rfc3339_offset(text) {
        Ok(millis) => return Ok(format_rfc3339(millis)),
        Err(TimeError::NoOffset) => {
            return Err(exit::usage(format!("{flag} {text:?}: {}", TimeError::NoOffset)));
        }
        Err(TimeError::Invalid) => {}
    }
    let Ok(ago) = humantime::parse_duration(text.trim()) else {
        return Err(exit::usage(format!(
            "{flag} {text:?} is neither a time with an offset (2026-11-25T10:00:00+01:00, \
             2026-11-25T09:00:00Z) nor a duration back from now (15m, 1h, 7d)"
        )));
    };
    let at = now.checked_sub(ago).unwrap_or(UNIX_EPOCH);
    let millis = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis();
    Ok(format_rfc3339(i64::try_from(millis).unwrap_or(i64::MAX)))
}

/// [`parse_time`] of an optional flag, against the wall clock.
#[expect(
    clippy::disallowed_methods,
    reason = "turns the operator's `--since 1h` into a timestamp; the router decides"
)]
pub fn time_bound(text: Option<&str>, flag: &str) -> anyhow::Result<Option<String>> {
    text.map(|t| parse_time(t, flag, SystemTime::now())).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_795_600_800_000) // 2026-11-25T10:00:00Z
    }

    #[test]
    fn offsets_and_z_become_utc() {
        let z = parse_time("2026-11-25T09:00:00Z", "--since", now()).unwrap();
        assert_eq!(z, "2026-11-25T09:00:00.000Z");
        assert_eq!(parse_time("2026-11-25T10:00:00+01:00", "--since", now()).unwrap(), z);
        assert_eq!(parse_time("2026-11-25T04:00:00-05:00", "--since", now()).unwrap(), z);
    }

    #[test]
    fn durations_count_back_from_now() {
        assert_eq!(parse_time("15m", "--since", now()).unwrap(), "2026-11-25T09:45:00.000Z");
        assert_eq!(parse_time("1h", "--until", now()).unwrap(), "2026-11-25T09:00:00.000Z");
    }

    #[test]
    fn a_naive_time_is_refused_with_what_to_add() {
        let err = parse_time("2026-11-25T10:00:00", "--since", now()).unwrap_err();
        assert_eq!(exit::code(&err), exit::USAGE);
        let text = err.to_string();
        assert!(text.contains("--since") && text.contains("no UTC offset"), "{text}");
        assert!(text.contains("+01:00"), "{text}");
    }

    #[test]
    fn anything_else_is_a_usage_error() {
        let err = parse_time("yesterday", "--until", now()).unwrap_err();
        assert_eq!(exit::code(&err), exit::USAGE);
        assert!(err.to_string().contains("--until \"yesterday\""), "{err}");
    }
}
