//! What anyone can POST to `/v1/enroll`: the body as JSON, then the router's checks that need
//! no store (public keys, manifest hash, lease interval) and the join token against a fixed
//! signer at a fixed time. The same bytes are also tried as a bare token, so the `alg`
//! pre-parse and the library's parse see arbitrary text. Only `Err`, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xerotier_credentials::{parse_curve_public, parse_signing_public};
use xerotier_fuzz::{NOW, SIGNER};
use xerotier_proto::agents::EnrollRequest;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<EnrollRequest>(data) {
        let _ = parse_curve_public(&request.curve_public_key);
        let _ = parse_signing_public(&request.signing_public_key);
        let _ = request.manifest.hash();
        let _ = serde_json::to_string(&request.manifest);
        let _ = SIGNER.verify(&request.join_key, NOW);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(claims) = SIGNER.verify(text, NOW) {
            // Only a token this signer issued can verify; it must not be expired at NOW.
            assert!(claims.exp.saturating_mul(1000) > NOW);
        }
        let _ = parse_curve_public(text);
        let _ = parse_signing_public(text);
    }
});
