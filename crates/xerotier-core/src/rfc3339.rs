use std::time::{Duration, UNIX_EPOCH};

use crate::UnixMillis;

/// `2026-11-25T16:34:23.123Z`: how every timestamp appears in the API.
pub fn format_rfc3339(at: UnixMillis) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(at.max(0)).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}

/// Why a text is not an RFC 3339 timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeError {
    /// A date and time without `Z` or `±HH:MM`: which zone it means is a guess, so it is
    /// refused rather than read as UTC.
    NoOffset,
    /// Not a date and time at all.
    Invalid,
}

impl std::fmt::Display for TimeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeError::NoOffset => {
                "it has no UTC offset: add Z or ±HH:MM, e.g. 2026-11-25T10:00:00+01:00"
            }
            TimeError::Invalid => {
                "it is not an RFC 3339 timestamp, e.g. 2026-11-25T10:00:00Z or …+01:00"
            }
        })
    }
}

impl std::error::Error for TimeError {}

/// Parses an RFC 3339 timestamp with its offset (`Z`, `+01:00`, `-05:30`; fractional seconds
/// optional). A time without an offset is refused (`NoOffset`), never read as UTC.
pub fn parse_rfc3339_offset(text: &str) -> Result<UnixMillis, TimeError> {
    let text = text.trim();
    let (civil, offset_minutes) = split_offset(text)?;
    // `civil` has no zone now; humantime reads it as UTC, and the offset moves it.
    if civil.ends_with(['Z', 'z']) || civil.len() < 19 {
        return Err(TimeError::Invalid);
    }
    // RFC 3339 allows a lowercase `t`; humantime wants `T` (or a space).
    let civil = civil.replacen('t', "T", 1);
    let at = humantime::parse_rfc3339_weak(&civil).map_err(|_| TimeError::Invalid)?;
    let millis = at.duration_since(UNIX_EPOCH).map_err(|_| TimeError::Invalid)?.as_millis();
    let millis = i64::try_from(millis).map_err(|_| TimeError::Invalid)?;
    Ok(millis - offset_minutes * 60_000)
}

/// The date-time part and the offset in minutes east of UTC.
fn split_offset(text: &str) -> Result<(&str, i64), TimeError> {
    if let Some(civil) = text.strip_suffix(['Z', 'z']) {
        return Ok((civil, 0));
    }
    let split = text.len().checked_sub(6).filter(|at| text.is_char_boundary(*at));
    let Some((civil, offset)) = split.map(|at| text.split_at(at)) else {
        return Err(no_offset_or_invalid(text));
    };
    let bytes = offset.as_bytes();
    let sign = match bytes[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return Err(no_offset_or_invalid(text)),
    };
    let number = |s: &str| s.parse::<i64>().ok().filter(|_| s.bytes().all(|b| b.is_ascii_digit()));
    match (number(&offset[1..3]), bytes[3], number(&offset[4..6])) {
        (Some(hours), b':', Some(minutes)) if hours <= 23 && minutes <= 59 => {
            Ok((civil, sign * (hours * 60 + minutes)))
        }
        _ => Err(TimeError::Invalid),
    }
}

/// A text without a recognisable offset: a naive date-time, or not a time at all.
fn no_offset_or_invalid(text: &str) -> TimeError {
    if humantime::parse_rfc3339_weak(text).is_ok() {
        TimeError::NoOffset
    } else {
        TimeError::Invalid
    }
}

/// Parses an RFC 3339 timestamp with its offset; `None` when it is not one (a time without an
/// offset included).
pub fn parse_rfc3339(text: &str) -> Option<UnixMillis> {
    parse_rfc3339_offset(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let text = format_rfc3339(1_764_088_463_123);
        assert_eq!(text, "2025-11-25T16:34:23.123Z");
        assert_eq!(parse_rfc3339(&text), Some(1_764_088_463_123));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn offsets_move_the_time_to_utc() {
        let utc = parse_rfc3339_offset("2026-11-25T09:00:00Z").unwrap();
        assert_eq!(parse_rfc3339_offset("2026-11-25T10:00:00+01:00"), Ok(utc));
        assert_eq!(parse_rfc3339_offset("2026-11-25T03:30:00-05:30"), Ok(utc));
        assert_eq!(parse_rfc3339_offset("2026-11-25T09:00:00+00:00"), Ok(utc));
        assert_eq!(parse_rfc3339_offset("2026-11-25t09:00:00z"), Ok(utc));
        assert_eq!(parse_rfc3339_offset("2026-11-25T10:00:00.250+01:00"), Ok(utc + 250));
    }

    #[test]
    fn a_time_without_an_offset_is_refused_not_read_as_utc() {
        assert_eq!(parse_rfc3339_offset("2026-11-25T10:00:00"), Err(TimeError::NoOffset));
        assert_eq!(parse_rfc3339_offset("2026-11-25 10:00:00"), Err(TimeError::NoOffset));
        assert_eq!(parse_rfc3339("2026-11-25T10:00:00"), None);
    }

    #[test]
    fn malformed_offsets_and_texts_are_invalid() {
        for bad in [
            "",
            "1h",
            "yesterday",
            "2026-11-25T10:00:00+1:00",
            "2026-11-25T10:00:00+24:00",
            "2026-11-25T10:00:00+01:60",
            "2026-11-25T10:00:00+01-00",
            "2026-11-25T10:00:00ZZ",
            "2026-11-25+01:00",
            "2026-13-25T10:00:00Z",
        ] {
            assert!(parse_rfc3339_offset(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_rfc3339_offset("soon"), Err(TimeError::Invalid));
    }
}
