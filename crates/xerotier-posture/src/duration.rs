//! Policy durations: `30s`, `15m`, `24h`, `90d`. Strict: one positive whole number and one unit,
//! nothing else (no spaces, signs, fractions or compound forms), so a typo never silently
//! becomes another period.

use crate::{DAY_MS, HOUR_MS, MINUTE_MS, PolicyError};

/// The longest period accepted (100 years): anything longer is a mistake, and it keeps every
/// sum with a Unix-millisecond timestamp far from overflow.
const MAX_MS: i64 = 36_500 * DAY_MS;

/// Parses a policy duration into milliseconds.
pub fn parse_duration(value: &str) -> Result<i64, PolicyError> {
    let bad = || PolicyError::Duration { value: value.to_string() };
    let unit = value.chars().last().ok_or_else(bad)?;
    let factor = match unit {
        's' => 1_000,
        'm' => MINUTE_MS,
        'h' => HOUR_MS,
        'd' => DAY_MS,
        _ => return Err(bad()),
    };
    let digits = &value[..value.len() - 1];
    if digits.is_empty() || digits.len() > 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let count: i64 = digits.parse().map_err(|_| bad())?;
    if count == 0 {
        return Err(bad());
    }
    let ms = count.checked_mul(factor).ok_or_else(bad)?;
    if ms > MAX_MS {
        return Err(PolicyError::DurationTooLong { value: value.to_string() });
    }
    Ok(ms)
}

/// The shortest exact form of a duration (`90d`, `96h`, `15m`, `2s`), for messages and rules.
pub fn format_duration(ms: i64) -> String {
    for (factor, unit) in [(DAY_MS, 'd'), (HOUR_MS, 'h'), (MINUTE_MS, 'm'), (1_000, 's')] {
        if ms % factor == 0 {
            return format!("{}{unit}", ms / factor);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_unit_parses() {
        assert_eq!(parse_duration("30s"), Ok(30_000));
        assert_eq!(parse_duration("15m"), Ok(15 * MINUTE_MS));
        assert_eq!(parse_duration("24h"), Ok(24 * HOUR_MS));
        assert_eq!(parse_duration("90d"), Ok(90 * DAY_MS));
    }

    #[test]
    fn anything_else_is_refused_with_the_value_named() {
        for bad in [
            "",
            "d",
            "90",
            "90D",
            "90 d",
            " 90d",
            "90d ",
            "-1d",
            "+1d",
            "1.5d",
            "0d",
            "0s",
            "1w",
            "1h30m",
            "١d",
            "9999999999999d",
            "90days",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{bad:?}: {err}");
        }
        assert!(matches!(parse_duration("36501d"), Err(PolicyError::DurationTooLong { .. })));
        assert_eq!(parse_duration("36500d"), Ok(36_500 * DAY_MS));
    }

    #[test]
    fn formats_in_the_largest_exact_unit() {
        assert_eq!(format_duration(90 * DAY_MS), "90d");
        assert_eq!(format_duration(96 * HOUR_MS), "4d");
        assert_eq!(format_duration(25 * HOUR_MS), "25h");
        assert_eq!(format_duration(15 * MINUTE_MS), "15m");
        assert_eq!(format_duration(2_000), "2s");
        assert_eq!(format_duration(1), "1ms");
    }
}
