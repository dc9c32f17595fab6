//! Input rules shared by several resources.

use crate::service_error::ServiceError;

pub const MAX_NAME_LEN: usize = 128;
pub const MAX_REASON_LEN: usize = 1024;

/// Names of keys, agents and join keys: 1-128 of letters, digits, `-`, `_`, `.`.
pub fn name(value: &str, param: &str) -> Result<(), ServiceError> {
    let ok_chars = value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if value.is_empty() || value.len() > MAX_NAME_LEN || !ok_chars {
        return Err(ServiceError::invalid(
            format!(
                "{param} must be 1-{MAX_NAME_LEN} characters of letters, digits, '-', '_' or '.'"
            ),
            param,
        ));
    }
    Ok(())
}

/// An optional free-text reason for the audit log; blank means none.
pub fn reason(reason: Option<&str>) -> Result<Option<&str>, ServiceError> {
    match reason {
        Some(r) if r.len() > MAX_REASON_LEN => Err(ServiceError::invalid(
            format!("reason must be at most {MAX_REASON_LEN} bytes"),
            "reason",
        )),
        Some(r) if r.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// A mesh address agents can connect to: `tcp://host:port`.
pub fn mesh_addr(value: &str, param: &str) -> Result<(), ServiceError> {
    let invalid = || {
        ServiceError::invalid(
            format!("{param} must look like tcp://host:port, got {value:?}"),
            param,
        )
    };
    let rest = value.strip_prefix("tcp://").ok_or_else(invalid)?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(invalid)?;
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '[' | ']' | ':'));
    match port.parse::<u16>() {
        Ok(p) if p > 0 && host_ok => Ok(()),
        _ => Err(invalid()),
    }
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
}
