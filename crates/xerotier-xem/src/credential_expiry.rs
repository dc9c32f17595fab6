//! The expiry a workspace credential file carries in its own content, when it is of a kind the
//! XEM recognises: a kubeconfig whose current user has a client certificate (its notAfter) or
//! a JWT token (its `exp`), a bare JWT, or an AWS credentials/config file with an expiration
//! field per profile (the earliest). Anything else, or anything unparseable, is `None`: reading
//! an expiry never fails a reload, and nothing here logs or returns any of the content.
//!
//! The work is bounded: files are at most 1 MiB already (`credentials.rs`), a JWT's payload is
//! decoded only up to [`MAX_JWT_PAYLOAD`], and YAML goes through `serde_norway`, which refuses
//! deep nesting; a file with YAML aliases or deep flow nesting is not parsed at all (kubectl
//! never writes either, and an alias bomb would otherwise cost the parser seconds to refuse).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Deserialize;
use xerotier_core::{UnixMillis, parse_rfc3339};

/// The largest JWT payload decoded (base64 text): a token's claims are a few hundred bytes.
const MAX_JWT_PAYLOAD: usize = 64 * 1024;
/// The latest expiry believed: 9999-12-31T23:59:59Z. A later `exp` is not a date, it is an
/// attack on whoever does arithmetic with it.
const MAX_EXPIRY_SECS: i64 = 253_402_300_799;
/// Deeper flow nesting than this is not a kubeconfig (kubectl writes block style, depth < 10).
const MAX_FLOW_DEPTH: usize = 32;
/// AWS credential-file keys that carry an expiry (RFC 3339), compared case-insensitively.
const AWS_EXPIRY_KEYS: [&str; 3] = ["expiration", "aws_expiration", "x_security_token_expires"];

/// The expiry (Unix milliseconds) of the credential in `content`, if it carries one we can read.
pub fn expiry_of(content: &[u8]) -> Option<UnixMillis> {
    let text = std::str::from_utf8(content).ok()?;
    let trimmed = text.trim();
    if looks_like_jwt(trimmed) {
        return jwt_exp(trimmed);
    }
    if let Some(at) = aws_expiry(text) {
        return Some(at);
    }
    kubeconfig_expiry(text)
}

/// Three dot-separated base64url parts (the signature may be empty), nothing else.
fn looks_like_jwt(text: &str) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    let base64url = |part: &&str| {
        part.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'='))
    };
    parts.len() == 3 && !parts[0].is_empty() && !parts[1].is_empty() && parts.iter().all(base64url)
}

/// The `exp` claim of a JWT. The signature is NOT verified: the XEM only reports when the
/// token says it expires (the issuer that enforces it verifies it); a forged `exp` can only
/// misreport the file's own expiry to its operator.
fn jwt_exp(token: &str) -> Option<UnixMillis> {
    let payload = token.split('.').nth(1)?;
    if payload.len() > MAX_JWT_PAYLOAD {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?;
    // NumericDate: seconds, possibly with a fraction.
    let secs = match exp.as_i64() {
        Some(secs) => secs,
        None => {
            let secs = exp.as_f64()?;
            if !secs.is_finite() || secs < 0.0 || secs > MAX_EXPIRY_SECS as f64 {
                return None;
            }
            secs.floor() as i64
        }
    };
    secs_to_millis(secs)
}

fn secs_to_millis(secs: i64) -> Option<UnixMillis> {
    (0..=MAX_EXPIRY_SECS).contains(&secs).then(|| secs * 1000)
}

/// The earliest expiry field of an AWS credentials/config-style INI file, over all profiles.
fn aws_expiry(text: &str) -> Option<UnixMillis> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.starts_with('#') || line.starts_with(';') {
                return None;
            }
            let (key, value) = line.split_once('=')?;
            let key = key.trim();
            AWS_EXPIRY_KEYS
                .iter()
                .any(|k| k.eq_ignore_ascii_case(key))
                .then(|| parse_rfc3339(value.trim()))
                .flatten()
        })
        .min()
}

/// The parts of a kubeconfig that say when its current user's credential expires.
#[derive(Deserialize)]
struct Kubeconfig {
    #[serde(rename = "current-context")]
    current_context: Option<String>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
    #[serde(default)]
    users: Vec<NamedUser>,
}

#[derive(Deserialize)]
struct NamedContext {
    name: String,
    context: Option<Context>,
}

#[derive(Deserialize)]
struct Context {
    user: Option<String>,
}

#[derive(Deserialize)]
struct NamedUser {
    name: String,
    user: Option<User>,
}

#[derive(Deserialize)]
struct User {
    #[serde(rename = "client-certificate-data")]
    client_certificate_data: Option<String>,
    token: Option<String>,
}

/// The current-context user's client certificate notAfter, or its token's `exp`. With no
/// current context, a kubeconfig with a single user is read for that user.
fn kubeconfig_expiry(text: &str) -> Option<UnixMillis> {
    if !text.contains("users") || !tame_yaml(text) {
        return None;
    }
    let config: Kubeconfig = serde_norway::from_str(text).ok()?;
    let user_name = match &config.current_context {
        Some(current) => config
            .contexts
            .iter()
            .find(|c| &c.name == current)
            .and_then(|c| c.context.as_ref())
            .and_then(|c| c.user.clone())?,
        None if config.users.len() == 1 => config.users.first()?.name.clone(),
        None => return None,
    };
    let user = config.users.iter().find(|u| u.name == user_name)?.user.as_ref()?;
    if let Some(data) = &user.client_certificate_data {
        return certificate_not_after(data);
    }
    let token = user.token.as_deref()?.trim();
    looks_like_jwt(token).then(|| jwt_exp(token)).flatten()
}

/// Whether `text` is free of what makes YAML expensive: aliases (`*name`, which a "billion
/// laughs" file multiplies) and flow collections nested deeper than [`MAX_FLOW_DEPTH`]. One
/// linear pass; conservative (a `*` starting a plain word anywhere counts as an alias).
fn tame_yaml(text: &str) -> bool {
    let mut depth: usize = 0;
    let mut previous = b'\n';
    for &byte in text.as_bytes() {
        match byte {
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'*' if matches!(previous, b' ' | b'\t' | b'\n' | b'[' | b',' | b'{' | b':') => {
                return false;
            }
            _ => {}
        }
        previous = byte;
    }
    true
}

/// The notAfter of the first certificate in base64-encoded PEM (a kubeconfig's
/// `client-certificate-data`).
fn certificate_not_after(data: &str) -> Option<UnixMillis> {
    let compact: String = data.split_whitespace().collect();
    let pem = STANDARD.decode(compact).ok()?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    let secs = cert.validity().not_after.timestamp();
    // A notAfter before 1970 is read as 1970: expired either way.
    secs_to_millis(secs.max(0))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use rcgen::{CertificateParams, KeyPair};

    use super::*;

    /// A certificate valid until midnight UTC of `(year, month, day)`, as base64 of its PEM.
    fn cert_data((year, month, day): (i32, u8, u8)) -> String {
        let mut params = CertificateParams::new(vec!["kube-user".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(1970, 1, 1);
        params.not_after = rcgen::date_time_ymd(year, month, day);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        STANDARD.encode(cert.pem())
    }

    fn jwt(claims: &serde_json::Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("{header}.{payload}.c2lnbmF0dXJl")
    }

    fn kubeconfig(current: &str, users: &[(&str, &str)]) -> String {
        let mut text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: {current}\nclusters:\n- name: prod\n  cluster:\n    server: https://k8s.example:6443\ncontexts:\n"
        );
        for (name, _) in users {
            text.push_str(&format!(
                "- name: ctx-{name}\n  context:\n    cluster: prod\n    user: {name}\n"
            ));
        }
        text.push_str("users:\n");
        for (name, body) in users {
            text.push_str(&format!("- name: {name}\n  user:\n    {body}\n"));
        }
        text
    }

    #[test]
    fn a_kubeconfig_client_certificate_gives_its_not_after() {
        let not_after = 1_893_456_000; // 2030-01-01
        let config = kubeconfig(
            "ctx-alice",
            &[
                ("bob", &format!("client-certificate-data: {}", cert_data((2030, 3, 17)))),
                ("alice", &format!("client-certificate-data: {}", cert_data((2030, 1, 1)))),
            ],
        );
        assert_eq!(expiry_of(config.as_bytes()), Some(not_after * 1000));
    }

    #[test]
    fn a_kubeconfig_token_gives_its_exp_for_the_current_user_only() {
        let config = kubeconfig(
            "ctx-ci",
            &[
                ("ci", &format!("token: {}", jwt(&serde_json::json!({ "exp": 1_800_000_000 })))),
                ("other", &format!("token: {}", jwt(&serde_json::json!({ "exp": 1_700_000_000 })))),
            ],
        );
        assert_eq!(expiry_of(config.as_bytes()), Some(1_800_000_000_000));
        let opaque = kubeconfig("ctx-ci", &[("ci", "token: not-a-jwt")]);
        assert_eq!(expiry_of(opaque.as_bytes()), None);
    }

    #[test]
    fn a_bare_jwt_gives_its_exp() {
        let token = jwt(&serde_json::json!({ "sub": "deployer", "exp": 1_790_000_000 }));
        assert_eq!(expiry_of(format!("{token}\n").as_bytes()), Some(1_790_000_000_000));
        let fractional = jwt(&serde_json::json!({ "exp": 1_790_000_000.75 }));
        assert_eq!(expiry_of(fractional.as_bytes()), Some(1_790_000_000_000));
        let no_exp = jwt(&serde_json::json!({ "sub": "deployer" }));
        assert_eq!(expiry_of(no_exp.as_bytes()), None);
    }

    #[test]
    fn an_aws_credentials_file_gives_its_earliest_expiration() {
        let text = "[default]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = secret\n\
                    aws_session_token = token\nexpiration = 2031-06-01T12:00:00Z\n\n\
                    [profile deploy]\nx_security_token_expires = 2030-03-01T00:00:00+01:00\n\
                    [other]\nAWS_EXPIRATION = 2032-01-01T00:00:00Z\n";
        assert_eq!(expiry_of(text.as_bytes()), parse_rfc3339("2030-02-28T23:00:00Z"));
        let plain = "[default]\naws_access_key_id = AKIA\naws_secret_access_key = s\n";
        assert_eq!(expiry_of(plain.as_bytes()), None);
        let bad = "[default]\nexpiration = next tuesday\n";
        assert_eq!(expiry_of(bad.as_bytes()), None);
    }

    #[test]
    #[expect(
        clippy::disallowed_methods,
        reason = "a test deadline: it decides nothing in the code"
    )]
    fn hostile_inputs_give_none_or_a_bounded_answer() {
        // Garbage base64 in a certificate, and in a JWT.
        let garbage = kubeconfig("ctx-a", &[("a", "client-certificate-data: '!!!not base64%%%'")]);
        assert_eq!(expiry_of(garbage.as_bytes()), None);
        let not_pem = kubeconfig(
            "ctx-a",
            &[("a", &format!("client-certificate-data: {}", STANDARD.encode("hello")))],
        );
        assert_eq!(expiry_of(not_pem.as_bytes()), None);
        assert_eq!(expiry_of(b"eyJhbGciOiJIUzI1NiJ9.%%%%.sig"), None);
        assert_eq!(expiry_of(b"aaaa.bbbb.cccc"), None);
        // A huge or negative exp is not a date.
        for exp in [
            serde_json::json!(1e300),
            serde_json::json!(i64::MAX),
            serde_json::json!(-5),
            serde_json::json!(253_402_300_800_i64),
            serde_json::json!("soon"),
        ] {
            assert_eq!(
                expiry_of(jwt(&serde_json::json!({ "exp": exp })).as_bytes()),
                None,
                "{exp}"
            );
        }
        // A certificate that expired in 1970 is reported as such.
        let old = kubeconfig(
            "ctx-a",
            &[("a", &format!("client-certificate-data: {}", cert_data((1970, 1, 2))))],
        );
        assert_eq!(expiry_of(old.as_bytes()), Some(86_400_000));
        // Binary content.
        assert_eq!(expiry_of(&[0xff, 0xfe, 0x00, 0x01]), None);
        // A YAML alias bomb and deep nesting: refused quickly, not expanded.
        let mut bomb = String::from("users: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let prev = i - 1;
            bomb.push_str(&format!("l{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"));
        }
        let nested = format!("users: {}{}", "[".repeat(100_000), "]".repeat(100_000));
        for hostile in [bomb, nested] {
            let started = Instant::now();
            assert_eq!(expiry_of(hostile.as_bytes()), None);
            assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
        }
    }
}
