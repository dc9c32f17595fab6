use std::time::{Duration, UNIX_EPOCH};

use crate::UnixMillis;

/// `2026-11-25T16:34:23.123Z`: how every timestamp appears in the API.
pub fn format_rfc3339(at: UnixMillis) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(at.max(0)).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}

/// Parses RFC 3339 (with or without fractional seconds); `None` when it is not a timestamp.
pub fn parse_rfc3339(text: &str) -> Option<UnixMillis> {
    let at = humantime::parse_rfc3339_weak(text.trim()).ok()?;
    let millis = at.duration_since(UNIX_EPOCH).ok()?.as_millis();
    i64::try_from(millis).ok()
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
}
