//! Signatures on outbound webhook deliveries (Stripe-style): the router sends
//! `X-Xerotier-Timestamp: <unix seconds>` and
//! `X-Xerotier-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`. A receiver
//! recomputes the HMAC over the exact body bytes it received, compares in constant time, and
//! refuses a timestamp more than [`DEFAULT_TOLERANCE_SECS`] away from its own clock (a
//! replayed delivery). [`verify`] is that check, documented in the README for receivers.

use sha2::{Digest, Sha256};

/// How far a delivery's timestamp may be from the receiver's clock: 5 minutes.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

const BLOCK: usize = 64;

/// HMAC-SHA256 (RFC 2104) over `parts`, concatenated.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    for part in parts {
        inner.update(part);
    }
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The `X-Xerotier-Signature` value for `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mac = hmac_sha256(secret, &[timestamp.to_string().as_bytes(), b".", body]);
    format!("v1={}", hex::encode(mac))
}

/// Why a delivery was refused by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the timestamp header is not a unix time in seconds")]
    BadTimestamp,
    #[error("the timestamp is more than {0} s from this clock (a replay?)")]
    Stale(i64),
    #[error("no v1= signature")]
    Missing,
    #[error("the signature does not match the body")]
    Mismatch,
}

/// Checks a delivery as a receiver should: `timestamp` and `signature` are the two headers'
/// values, `body` the exact bytes received, `now` the receiver's unix time in seconds.
pub fn verify(
    secret: &[u8],
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let at: i64 = timestamp.trim().parse().map_err(|_| SignatureError::BadTimestamp)?;
    if (now - at).abs() > tolerance_secs {
        return Err(SignatureError::Stale(tolerance_secs));
    }
    let expected = hmac_sha256(secret, &[timestamp.trim().as_bytes(), b".", body]);
    // Several comma-separated `v1=` values may be sent during a secret rotation: any matches.
    let mut any = false;
    for candidate in signature.split(',').filter_map(|s| s.trim().strip_prefix("v1=")) {
        any = true;
        if let Ok(bytes) = hex::decode(candidate)
            && crate::secrets_equal(&bytes, &expected)
        {
            return Ok(());
        }
    }
    Err(if any { SignatureError::Mismatch } else { SignatureError::Missing })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    // RFC 4231, test cases 1 and 6 (a key longer than the block).
    #[test]
    fn hmac_matches_rfc_4231() {
        let mac = hmac_sha256(&[0x0b; 20], &[b"Hi There"]);
        assert_eq!(
            hex::encode(mac),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        let mac =
            hmac_sha256(&[0xaa; 131], &[b"Test Using Larger Than Block-Size Key - Hash Key First"]);
        assert_eq!(
            hex::encode(mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn an_honest_delivery_verifies() {
        let sig = sign(b"s3cret", 1_700_000_000, b"{\"a\":1}");
        assert_eq!(verify(b"s3cret", "1700000000", &sig, b"{\"a\":1}", 1_700_000_100, 300), Ok(()));
    }

    // The attacker's side: a changed body, a wrong secret, an old or future timestamp, a
    // timestamp changed without re-signing, no signature at all.
    #[test]
    fn tampering_replay_and_wrong_secrets_are_refused() {
        let body = b"{\"type\":\"rotation.failed\"}";
        let sig = sign(b"s3cret", 1_000, body);
        let tampered = b"{\"type\":\"rotation.failee\"}";
        assert_eq!(
            verify(b"s3cret", "1000", &sig, tampered, 1_000, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify(b"other", "1000", &sig, body, 1_000, 300), Err(SignatureError::Mismatch));
        assert_eq!(
            verify(b"s3cret", "1000", &sig, body, 1_301, 300),
            Err(SignatureError::Stale(300))
        );
        assert_eq!(
            verify(b"s3cret", "1000", &sig, body, 699, 300),
            Err(SignatureError::Stale(300))
        );
        assert_eq!(
            verify(b"s3cret", "1001", &sig, body, 1_000, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"s3cret", "x", &sig, body, 1_000, 300),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(verify(b"s3cret", "1000", "", body, 1_000, 300), Err(SignatureError::Missing));
        assert_eq!(
            verify(b"s3cret", "1000", "v1=zz", body, 1_000, 300),
            Err(SignatureError::Mismatch)
        );
    }
}
