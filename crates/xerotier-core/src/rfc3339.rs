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

/// Parses an RFC 3339 timestamp with its offset (surrounding whitespace ignored). A date and
/// time without an offset is refused (`NoOffset`, with what to add), never read as UTC.
pub fn parse_rfc3339_offset(text: &str) -> Result<UnixMillis, TimeError> {
    let text = text.trim();
    if let Some(at) = parse_rfc3339(text) {
        return Ok(at);
    }
    if humantime::parse_rfc3339_weak(text).is_ok() {
        Err(TimeError::NoOffset)
    } else {
        Err(TimeError::Invalid)
    }
}

/// Parses an RFC 3339 `date-time` (section 5.6: `T` or `t`, optional fractional seconds, `Z`,
/// `z` or a numeric offset; years 0000-9999; a leap second only at 23:59:60 UTC) exactly as
/// JSON Schema's `date-time` format reads it; `None` for anything else. Milliseconds since the
/// epoch (negative before 1970); digits past the millisecond are dropped.
pub fn parse_rfc3339(text: &str) -> Option<UnixMillis> {
    let b = text.as_bytes();
    let digits = |at: usize, len: usize| -> Option<i64> {
        let part = b.get(at..at + len)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0_i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let punct = |at: usize, c: u8| b.get(at) == Some(&c);
    let (year, month, day) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    if !(punct(4, b'-') && punct(7, b'-') && matches!(b.get(10), Some(b'T' | b't'))) {
        return None;
    }
    let (hour, minute, second) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    if !(punct(13, b':') && punct(16, b':')) {
        return None;
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut at = 19;
    let mut millis = 0;
    if punct(at, b'.') {
        let start = at + 1;
        at = start;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        if at == start {
            return None;
        }
        let frac = &b[start..at.min(start + 3)];
        millis = frac.iter().fold(0_i64, |n, d| n * 10 + i64::from(d - b'0'))
            * 10_i64.pow(u32::try_from(3 - frac.len()).ok()?);
    }
    let offset_minutes = match b.get(at) {
        Some(b'Z' | b'z') if at + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if at + 6 == b.len() => {
            let (oh, om) = (digits(at + 1, 2)?, digits(at + 4, 2)?);
            if !punct(at + 3, b':') || oh > 23 || om > 59 {
                return None;
            }
            let minutes = oh * 60 + om;
            if *sign == b'-' { -minutes } else { minutes }
        }
        _ => return None,
    };
    let local_minutes = hour * 60 + minute;
    if second == 60 && (local_minutes - offset_minutes).rem_euclid(24 * 60) != 23 * 60 + 59 {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + local_minutes * 60 + second
        - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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

    #[test]
    fn the_whole_date_time_grammar_and_nothing_else() {
        let at = |t: &str| parse_rfc3339(t);
        assert_eq!(at("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(at("1970-01-01t00:00:00z"), Some(0));
        assert_eq!(at("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(at("1969-12-31T19:00:00.5-05:00"), Some(500));
        assert_eq!(at("1969-12-31T23:59:59.9999999Z"), Some(-1));
        assert_eq!(at("0001-01-01T00:00:00Z"), Some(-62_135_596_800_000));
        assert_eq!(at("2024-02-29T12:00:00Z"), Some(1_709_208_000_000));
        assert_eq!(at("2016-12-31T23:59:60Z"), Some(1_483_228_800_000));
        assert_eq!(at("2016-12-31T18:59:60-05:00"), Some(1_483_228_800_000));
        for bad in [
            "2023-02-29T00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-01-01 00:00:00Z",
            "2023-01-01T00:00:00",
            "2023-01-01T24:00:00Z",
            "2023-01-01T00:00:60Z",
            "2023-01-01T00:00:00.Z",
            "2023-01-01T00:00:00+0100",
            "2023-01-01T00:00:00+24:00",
            "2023-01-01T00:00:00Z ",
            " 2023-01-01T00:00:00Z",
            "+2023-01-01T00:00:00Z",
            "2023-1-01T00:00:00Z",
            "",
        ] {
            assert_eq!(at(bad), None, "{bad}");
        }
    }
}
