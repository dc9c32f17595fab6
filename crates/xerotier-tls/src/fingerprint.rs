use sha2::{Digest, Sha256};

/// `sha256:<lowercase hex>` of a certificate's DER encoding: the pin a join key carries.
pub fn ca_fingerprint(der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(der)))
}

/// True for exactly `sha256:` followed by 64 lowercase hex digits.
pub fn is_fingerprint(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_have_one_spelling() {
        let pin = ca_fingerprint(b"certificate");
        assert!(is_fingerprint(&pin), "{pin}");
        assert!(!is_fingerprint(&pin.to_uppercase()));
        assert!(!is_fingerprint(&pin.replace("sha256:", "sha1:")));
        assert!(!is_fingerprint(&pin[..pin.len() - 1]));
        assert!(!is_fingerprint(&format!("{pin}0")));
        assert!(!is_fingerprint(""));
    }
}
