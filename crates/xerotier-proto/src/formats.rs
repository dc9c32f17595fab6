//! The formats of the strings the API takes: each is a regular expression, as the OpenAPI
//! document states it (the `pattern` attributes on the request types repeat these literals;
//! the router's `openapi_contract` tests hold the two together), and a check the router
//! applies, which accepts exactly what the expression matches.
//!
//! The expressions use only what ECMA-262 (JSON Schema), Python and Rust's `regex` read alike:
//! anchored, ASCII classes, bounded repeats.

/// Ids: a prefix, then 26 characters of lowercase Crockford base32 (`xerotier_core::ids`).
pub const API_KEY_ID: &str = "^key_[0-9a-hjkmnp-tv-z]{26}$";
pub const AGENT_ID: &str = "^agt_[0-9a-hjkmnp-tv-z]{26}$";
pub const JOIN_KEY_ID: &str = "^jk_[0-9a-hjkmnp-tv-z]{26}$";
pub const INVOCATION_ID: &str = "^inv_[0-9a-hjkmnp-tv-z]{26}$";
pub const AUDIT_ID: &str = "^aud_[0-9a-hjkmnp-tv-z]{26}$";
pub const EVENT_ID: &str = "^evt_[0-9a-hjkmnp-tv-z]{26}$";
pub const OPERATION_ID: &str = "^op_[0-9a-hjkmnp-tv-z]{26}$";
pub const REQUEST_ID: &str = "^req_[0-9a-hjkmnp-tv-z]{26}$";
/// A CURVE rotation's request id: 16 random bytes, lowercase hex.
pub const ROTATION_ID: &str = "^[0-9a-f]{32}$";
/// Names of API keys, join keys, agents and regions; granted workspaces; a client's
/// correlation id; an audit record's target id.
pub const NAME: &str = "^[A-Za-z0-9._-]{1,128}$";
/// Tool names and workspace ids, as an XEM's catalog declares them.
pub const CATALOG_NAME: &str = "^[a-z0-9][a-z0-9._-]{0,63}$";
/// An audit action, such as `api_key.create`.
pub const AUDIT_ACTION: &str = "^[a-z0-9_.]{1,64}$";
/// A mesh address: `tcp://host:port`, port 1-65535 without leading zeros.
pub const MESH_ADDR: &str = "^tcp://[A-Za-z0-9.:\\[\\]-]{1,253}:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$";
/// A join key token: a compact JWS (three base64url parts).
pub const JOIN_TOKEN: &str = "^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$";
/// A CURVE public key, Z85 (40 characters).
pub const CURVE_PUBLIC_KEY: &str = "^[0-9a-zA-Z.:+=^!/*?&<>()\\[\\]{}@%$#-]{40}$";
/// An Ed25519 public key, hex (64 characters).
pub const SIGNING_PUBLIC_KEY: &str = "^[0-9a-fA-F]{64}$";
/// A router key id: `mks-` (mesh CURVE), `jks-` (join-key signing) or `tls-` (TLS CA), then 16
/// lowercase hex digits of the public key's fingerprint.
pub const ROUTER_KEY_ID: &str = "^(mks|jks|tls)-[0-9a-f]{16}$";
/// Free text (reasons): anything but NUL, which no database column holds.
/// An invocation output cursor, `<stdout bytes>:<stderr bytes>` (at most 19 digits each, so
/// every value the pattern admits fits).
pub const OUTPUT_CURSOR: &str = "^[0-9]{1,19}:[0-9]{1,19}$";
pub const TEXT: &str = "^[^\\x00]*$";

/// Longest name ([`NAME`]).
pub const MAX_NAME_LEN: usize = 128;
/// Longest reason, in characters.
pub const MAX_REASON_CHARS: usize = 1024;

const ID_ALPHABET: &[u8] = b"0123456789abcdefghjkmnpqrstvwxyz";
const Z85_ALPHABET: &[u8] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

/// An id of the given prefix (`"key_"`, `"agt_"`, …): [`API_KEY_ID`] and its siblings.
pub fn is_id(prefix: &str, text: &str) -> bool {
    text.strip_prefix(prefix)
        .is_some_and(|rest| rest.len() == 26 && rest.bytes().all(|b| ID_ALPHABET.contains(&b)))
}

/// [`ROTATION_ID`].
pub fn is_rotation_id(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// [`NAME`].
pub fn is_name(text: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// [`CATALOG_NAME`].
pub fn is_catalog_name(text: &str) -> bool {
    let mut bytes = text.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && text.len() <= 64
        && bytes.all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

/// [`AUDIT_ACTION`].
pub fn is_audit_action(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.'))
}

/// [`MESH_ADDR`].
pub fn is_mesh_addr(text: &str) -> bool {
    let Some(rest) = text.strip_prefix("tcp://") else { return false };
    let Some((host, port)) = rest.rsplit_once(':') else { return false };
    let host_ok = (1..=253).contains(&host.len())
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'[' | b']' | b':'));
    let port_ok = !port.is_empty()
        && port.len() <= 5
        && !port.starts_with('0')
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok();
    host_ok && port_ok
}

/// [`JOIN_TOKEN`].
pub fn is_join_token(text: &str) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        })
}

/// [`CURVE_PUBLIC_KEY`].
pub fn is_curve_public_key(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| Z85_ALPHABET.contains(&b))
}

/// [`SIGNING_PUBLIC_KEY`].
pub fn is_signing_public_key(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// [`ROUTER_KEY_ID`].
pub fn is_router_key_id(text: &str) -> bool {
    let (kind, hex) = text.split_at_checked(4).unwrap_or(("", ""));
    matches!(kind, "mks-" | "jks-" | "tls-")
        && hex.len() == 16
        && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// [`TEXT`].
pub fn is_text(text: &str) -> bool {
    !text.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_key_ids_have_one_spelling() {
        assert!(is_router_key_id("mks-0123456789abcdef"));
        assert!(is_router_key_id("jks-0123456789abcdef"));
        assert!(is_router_key_id("tls-0123456789abcdef"));
        for bad in [
            "mks-0123456789ABCDEF",
            "mks-0123456789abcde",
            "xyz-0123456789abcdef",
            "",
            "mks-",
            "mks-0123456789abcdef0",
            "ékß-0123456789abcdef",
        ] {
            assert!(!is_router_key_id(bad), "{bad}");
        }
    }

    #[test]
    fn ids() {
        assert!(is_id("key_", "key_01m8sbce9k2rcej9fhvv8jg3pq"));
        assert!(!is_id("key_", "key_01m8sbce9k2rcej9fhvv8jg3pQ"), "uppercase");
        assert!(!is_id("key_", "key_01m8sbce9k2rcej9fhvv8jg3pi"), "not Crockford");
        assert!(!is_id("key_", "agt_01m8sbce9k2rcej9fhvv8jg3pq"));
        assert!(!is_id("key_", "key_01m8sbce9k2rcej9fhvv8jg3p"));
    }

    #[test]
    fn mesh_addresses() {
        for good in ["tcp://router:5555", "tcp://[::1]:5555", "tcp://10.0.0.1:65535", "tcp://h:1"] {
            assert!(is_mesh_addr(good), "{good}");
        }
        for bad in [
            "router:5555",
            "tcp://router",
            "tcp://:5555",
            "tcp://router:0",
            "tcp://router:05555",
            "tcp://router:+555",
            "tcp://router:65536",
            "tcp://ro uter:1",
            "udp://r:1",
        ] {
            assert!(!is_mesh_addr(bad), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert!(is_name("xem-fleet-02"));
        assert!(!is_name(""));
        assert!(!is_name("a b"));
        assert!(!is_name(&"x".repeat(129)));
        assert!(is_catalog_name("kubectl-get"));
        assert!(!is_catalog_name("-x"));
        assert!(!is_catalog_name("Kubectl"));
        assert!(is_audit_action("api_key.create"));
        assert!(!is_audit_action("api-key.create"));
    }
}
