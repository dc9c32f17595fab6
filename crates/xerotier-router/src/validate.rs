//! Input rules shared by several resources. Each accepts exactly what the OpenAPI document's
//! format for the field says (`xerotier_proto::formats`), so a request the document calls valid
//! is never refused for its shape, and one it calls invalid never gets through.

use xerotier_proto::formats;

use crate::service_error::ServiceError;

pub const MAX_NAME_LEN: usize = formats::MAX_NAME_LEN;
pub const MAX_REASON_LEN: usize = formats::MAX_REASON_CHARS;

/// Names of keys, agents and join keys: 1-128 of letters, digits, `-`, `_`, `.`.
pub fn name(value: &str, param: &str) -> Result<(), ServiceError> {
    if !formats::is_name(value) {
        return Err(ServiceError::invalid(
            format!(
                "{param} must be 1-{MAX_NAME_LEN} characters of letters, digits, '-', '_' or '.'"
            ),
            param,
        ));
    }
    Ok(())
}

/// An optional free-text reason for the audit log (at most 1024 characters, no NUL); blank
/// means none.
pub fn reason(reason: Option<&str>) -> Result<Option<&str>, ServiceError> {
    match reason {
        Some(r) if r.chars().count() > MAX_REASON_LEN => Err(ServiceError::invalid(
            format!("reason must be at most {MAX_REASON_LEN} characters"),
            "reason",
        )),
        Some(r) if !formats::is_text(r) => {
            Err(ServiceError::invalid("reason must not contain NUL characters", "reason"))
        }
        Some(r) if r.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// A mesh address agents can connect to: `tcp://host:port`.
pub fn mesh_addr(value: &str, param: &str) -> Result<(), ServiceError> {
    if formats::is_mesh_addr(value) {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            format!("{param} must look like tcp://host:port, got {value:?}"),
            param,
        ))
    }
}

/// An id with the given prefix (`key_`, `agt_`, …), as a filter or cursor names it.
pub fn id(prefix: &str, value: &str, param: &str) -> Result<(), ServiceError> {
    if formats::is_id(prefix, value) {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            format!(
                "{param} must be an id {prefix}… (26 characters of lowercase Crockford base32 after the prefix), got {value:?}"
            ),
            param,
        ))
    }
}

/// A tool name or workspace id as an XEM's catalog declares it.
pub fn catalog_name(value: &str, param: &str) -> Result<(), ServiceError> {
    if formats::is_catalog_name(value) {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            format!(
                "{param} must match [a-z0-9][a-z0-9._-]{{0,63}} (a tool name or workspace id), got {value:?}"
            ),
            param,
        ))
    }
}

/// An optional filter checked by `check` when present.
pub fn optional<'a>(
    value: Option<&'a str>,
    check: impl FnOnce(&'a str) -> Result<(), ServiceError>,
) -> Result<(), ServiceError> {
    value.map_or(Ok(()), check)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_addresses() {
        assert!(mesh_addr("tcp://router:5555", "router_addr").is_ok());
        assert!(mesh_addr("tcp://[::1]:5555", "router_addr").is_ok());
        for bad in [
            "router:5555",
            "tcp://router",
            "tcp://:5555",
            "tcp://router:0",
            "tcp://ro uter:1",
            "udp://r:1",
        ] {
            assert!(mesh_addr(bad, "router_addr").is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert!(name("xem-fleet-02", "name").is_ok());
        assert!(name("", "name").is_err());
        assert!(name("a b", "name").is_err());
        assert!(name(&"x".repeat(129), "name").is_err());
    }

    #[test]
    fn reasons_count_characters_and_refuse_nul() {
        assert_eq!(reason(Some(&"é".repeat(MAX_REASON_LEN))).unwrap().map(str::len), Some(2048));
        assert!(reason(Some(&"x".repeat(MAX_REASON_LEN + 1))).is_err());
        assert!(reason(Some("a\0b")).is_err());
        assert_eq!(reason(Some("  ")).unwrap(), None);
    }
}
