//! The router mesh keys this agent accepts (SPEC §9): the set the router sends during a mesh
//! key rotation (`Frame::RouterKeys`), checked whole before it replaces the one on disk, and
//! the signed request that fetches the current set over HTTPS when none the agent holds works
//! any more (it was offline for a whole rotation).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use xerotier_core::{SharedClock, SharedEntropy};
use xerotier_credentials::{SigningKeyPair, fingerprint, parse_curve_public};
use xerotier_proto::ErrorEnvelope;
use xerotier_proto::agents::{RouterKeysRequest, RouterKeysResponse, router_keys_signing_input};
use xerotier_proto::mesh::{
    MAX_ROUTER_MESH_KEYS, MAX_ROUTER_TLS_CAS, RouterMeshKey, router_keys_kids, tls_kid_of_pin,
};

use crate::identity::{self, Identity};

/// Why a key set was refused (whole: the previous one stays).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeySetError {
    #[error("the key set is empty")]
    Empty,
    #[error("the key set holds {0} keys, more than {MAX_ROUTER_MESH_KEYS}")]
    TooMany(usize),
    #[error("a key id is not an mks- router key id")]
    BadKid,
    #[error("a key is not a usable CURVE public key")]
    BadKey,
    #[error("a key id does not name its key")]
    KidMismatch,
    #[error("a key appears twice")]
    Duplicate,
    #[error("a TLS CA pin is not sha256: and 64 lowercase hex digits, or appears twice")]
    BadPin,
    #[error("the set names {0} TLS CAs, more than {MAX_ROUTER_TLS_CAS}")]
    TooManyPins(usize),
}

/// Checks the TLS CA pins of a set: at most [`MAX_ROUTER_TLS_CAS`], each well formed, none twice.
pub fn validate_pins(pins: &[String]) -> Result<(), KeySetError> {
    if pins.len() > MAX_ROUTER_TLS_CAS {
        return Err(KeySetError::TooManyPins(pins.len()));
    }
    for (i, pin) in pins.iter().enumerate() {
        if tls_kid_of_pin(pin).is_none() || pins[..i].contains(pin) {
            return Err(KeySetError::BadPin);
        }
    }
    Ok(())
}

/// The key ids an acknowledgement names: the mesh keys held, then the TLS CAs trusted.
pub fn held_kids(identity: &Identity) -> Vec<String> {
    router_keys_kids(&key_set(identity), &identity.tls_ca_pins)
}

/// The id of a router mesh key, from its Z85 text; `None` when it is not a CURVE key.
pub fn kid_of(public_z85: &str) -> Option<String> {
    let public = parse_curve_public(public_z85).ok()?;
    let print = fingerprint(&public);
    Some(format!("mks-{}", print.get(..16)?))
}

/// A one-key set from a bare key (an identity or answer from before router key rotation).
pub fn from_single(public_z85: &str) -> Option<RouterMeshKey> {
    Some(RouterMeshKey { kid: kid_of(public_z85)?, public_key: public_z85.to_string() })
}

/// Checks a set whole: non-empty, at most [`MAX_ROUTER_MESH_KEYS`], each kid well formed and
/// naming its key, each key a CURVE key, none twice.
pub fn validate(keys: &[RouterMeshKey]) -> Result<(), KeySetError> {
    if keys.is_empty() {
        return Err(KeySetError::Empty);
    }
    if keys.len() > MAX_ROUTER_MESH_KEYS {
        return Err(KeySetError::TooMany(keys.len()));
    }
    for (i, key) in keys.iter().enumerate() {
        if !key.kid.starts_with("mks-") || !xerotier_proto::formats::is_router_key_id(&key.kid) {
            return Err(KeySetError::BadKid);
        }
        let kid = kid_of(&key.public_key).ok_or(KeySetError::BadKey)?;
        if kid != key.kid {
            return Err(KeySetError::KidMismatch);
        }
        if keys[..i].iter().any(|k| k.kid == key.kid || k.public_key == key.public_key) {
            return Err(KeySetError::Duplicate);
        }
    }
    Ok(())
}

/// The keys the identity holds, in the order to try them.
pub fn key_set(identity: &Identity) -> Vec<RouterMeshKey> {
    if identity.router_mesh_keys.is_empty() {
        return from_single(&identity.router_curve_key).into_iter().collect();
    }
    identity.router_mesh_keys.clone()
}

/// Replaces the identity's key set with `keys` (checked whole first) and saves it durably
/// (atomic 0600 write, synced) before returning: only then may the agent acknowledge it.
pub fn adopt(
    state_dir: &Path,
    identity: &mut Identity,
    keys: Vec<RouterMeshKey>,
) -> anyhow::Result<()> {
    adopt_with_pins(state_dir, identity, keys, Vec::new())
}

/// [`adopt`], and the TLS CAs to trust from now on when `tls_ca_pins` is not empty (an empty
/// list leaves the trusted CAs as they are). Both are checked before anything is saved.
pub fn adopt_with_pins(
    state_dir: &Path,
    identity: &mut Identity,
    keys: Vec<RouterMeshKey>,
    tls_ca_pins: Vec<String>,
) -> anyhow::Result<()> {
    validate(&keys)?;
    validate_pins(&tls_ca_pins)?;
    let mut updated = identity.clone();
    updated.router_curve_key = keys[0].public_key.clone();
    updated.router_mesh_keys = keys;
    if !tls_ca_pins.is_empty() {
        updated.tls_ca_pins = tls_ca_pins;
    }
    identity::save(state_dir, &updated)?;
    *identity = updated;
    Ok(())
}

/// The key at `index` connected: it goes to the front, so a restart tries it first.
pub fn promote(state_dir: &Path, identity: &mut Identity, index: usize) -> anyhow::Result<()> {
    let mut keys = key_set(identity);
    if index == 0 || index >= keys.len() {
        return Ok(());
    }
    let key = keys.remove(index);
    keys.insert(0, key);
    adopt(state_dir, identity, keys)
}

/// A signed request for the router's current mesh keys, naming `kid` (the first key held).
pub fn signed_request(
    agent_id: &str,
    kid: &str,
    signing: &SigningKeyPair,
    clock: &SharedClock,
    entropy: &SharedEntropy,
) -> RouterKeysRequest {
    let mut nonce = [0u8; 16];
    entropy.fill(&mut nonce);
    let nonce = hex::encode(nonce);
    let timestamp_ms = clock.now_millis();
    let input = router_keys_signing_input(agent_id, timestamp_ms, &nonce, kid);
    let signature = hex::encode(signing.sign(&input));
    RouterKeysRequest {
        agent_id: agent_id.to_string(),
        timestamp_ms,
        nonce,
        kid: kid.to_string(),
        signature,
    }
}

/// Fetches the router's current mesh keys over HTTPS (the URL and TLS CA the agent enrolled
/// with) with a signed request, and adopts them. No join key is needed.
pub async fn fetch(
    state_dir: &Path,
    identity: &mut Identity,
    signing: &SigningKeyPair,
    clock: SharedClock,
    entropy: SharedEntropy,
) -> anyhow::Result<()> {
    let Some(router_url) = identity.router_url.clone() else {
        bail!(
            "the identity names no router URL to fetch the router's keys from (enrolled by an older XEM): re-enroll"
        );
    };
    let held = key_set(identity);
    let kid = held.first().map(|k| k.kid.clone()).ok_or_else(|| anyhow!("no router key held"))?;
    let builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
    // The CAs the router named during a CA rotation, else the one pinned at enrollment.
    let pins: Vec<String> = if identity.tls_ca_pins.is_empty() {
        identity.tls_ca_pin.iter().cloned().collect()
    } else {
        identity.tls_ca_pins.clone()
    };
    let client = match (pins.is_empty(), router_url.starts_with("https://")) {
        (false, true) => {
            let tls = xerotier_tls::pinned_client_config_any(&pins, clock.clone())
                .context("a trusted TLS CA fingerprint is malformed")?;
            builder.use_preconfigured_tls(tls).build()?
        }
        (true, false) => builder.build()?,
        _ => bail!("router_url {router_url} and the TLS pin the agent enrolled with disagree"),
    };
    let request = signed_request(&identity.agent_id, &kid, signing, &clock, &entropy);
    let url = format!("{}/v1/agents/router-keys", router_url.trim_end_matches('/'));
    let response = client
        .post(&url)
        .json(&request)
        .send()
        .await
        .with_context(|| format!("cannot reach the router at {router_url} for its keys"))?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        match serde_json::from_slice::<ErrorEnvelope>(&body) {
            Ok(envelope) => bail!(
                "the router refused the key fetch: {} ({})",
                envelope.error.message,
                envelope.error.code
            ),
            Err(_) => bail!("the router refused the key fetch: HTTP {status}"),
        }
    }
    let answer: RouterKeysResponse =
        serde_json::from_slice(&body).context("unexpected router keys answer")?;
    adopt_with_pins(state_dir, identity, answer.keys, answer.tls_ca_pins)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use xerotier_core::{ManualClock, SeededEntropy};
    use xerotier_credentials::CurveKeyPair;

    use super::*;

    fn key(seed: u64) -> RouterMeshKey {
        from_single(&CurveKeyPair::generate(&SeededEntropy::new(seed)).public_z85()).unwrap()
    }

    #[test]
    fn a_well_formed_set_is_accepted_and_every_malformed_one_refused_whole() {
        assert_eq!(validate(&[key(1)]), Ok(()));
        assert_eq!(validate(&[key(1), key(2)]), Ok(()));
        assert_eq!(validate(&[]), Err(KeySetError::Empty));
        assert_eq!(validate(&[key(1), key(2), key(3)]), Err(KeySetError::TooMany(3)));
        assert_eq!(validate(&[key(1), key(1)]), Err(KeySetError::Duplicate));
        let mut wrong_kid = key(1);
        wrong_kid.kid = key(2).kid;
        assert_eq!(validate(&[wrong_kid]), Err(KeySetError::KidMismatch));
        let mut bad_kid = key(1);
        bad_kid.kid = "jks-0123456789abcdef".into();
        assert_eq!(validate(&[bad_kid]), Err(KeySetError::BadKid));
        let mut bad_key = key(1);
        bad_key.public_key = "not a key".into();
        assert_eq!(validate(&[bad_key]), Err(KeySetError::BadKey));
    }

    fn identity() -> Identity {
        Identity {
            agent_id: "agt_01j9zk3v8p5q2r7t4w6x0y1abc".into(),
            registration_name: "xem".into(),
            mesh_addr: "tcp://router:5555".into(),
            router_curve_key: key(1).public_key,
            role: "execution".into(),
            router_mesh_keys: Vec::new(),
            router_url: None,
            tls_ca_pin: None,
            tls_ca_pins: Vec::new(),
        }
    }

    #[test]
    fn an_identity_file_from_before_key_rotation_still_loads_with_its_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let old = serde_json::json!({
            "agent_id": "agt_01j9zk3v8p5q2r7t4w6x0y1abc",
            "registration_name": "xem",
            "mesh_addr": "tcp://router:5555",
            "router_curve_key": key(1).public_key,
            "role": "execution",
        });
        std::fs::write(identity::path(dir.path()), old.to_string()).unwrap();
        let loaded = identity::load(dir.path()).unwrap().unwrap();
        assert_eq!(key_set(&loaded), vec![key(1)]);
    }

    #[test]
    fn an_adopted_set_is_on_disk_and_a_refused_one_leaves_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let mut held = identity();
        adopt(dir.path(), &mut held, vec![key(1), key(2)]).unwrap();
        let on_disk = identity::load(dir.path()).unwrap().unwrap();
        assert_eq!(key_set(&on_disk), vec![key(1), key(2)]);
        assert!(adopt(dir.path(), &mut held, vec![key(3), key(3)]).is_err());
        assert_eq!(key_set(&held), vec![key(1), key(2)], "kept in memory");
        let on_disk = identity::load(dir.path()).unwrap().unwrap();
        assert_eq!(key_set(&on_disk), vec![key(1), key(2)], "kept on disk");
        promote(dir.path(), &mut held, 1).unwrap();
        assert_eq!(key_set(&identity::load(dir.path()).unwrap().unwrap()), vec![key(2), key(1)]);
        assert_eq!(held.router_curve_key, key(2).public_key, "the first is tried first");
    }

    /// What a compromised router (or anything on the session) could send as TLS CAs to trust:
    /// too many, malformed or repeated pins are refused with the whole set, the held keys and
    /// pins stay on disk as they were; a good set replaces the pins and names them in the ack.
    #[test]
    fn tls_pins_that_are_too_many_malformed_or_repeated_are_refused_with_the_whole_set() {
        let pin = |b: &str| format!("sha256:{}", b.repeat(32));
        let dir = tempfile::tempdir().unwrap();
        let mut held = identity();
        adopt_with_pins(dir.path(), &mut held, vec![key(1)], vec![pin("ab")]).unwrap();
        let hostile = [
            vec![pin("01"), pin("02"), pin("03")],
            vec![pin("ab"), pin("ab")],
            vec!["sha256:AB".to_string()],
            vec![format!("sha1:{}", "ab".repeat(32))],
            vec![pin("ab").to_uppercase()],
            vec![format!("{}0", pin("ab"))],
        ];
        for pins in hostile {
            let refused = adopt_with_pins(dir.path(), &mut held, vec![key(2)], pins.clone());
            assert!(refused.is_err(), "{pins:?}");
            let on_disk = identity::load(dir.path()).unwrap().unwrap();
            assert_eq!((key_set(&on_disk), on_disk.tls_ca_pins), (vec![key(1)], vec![pin("ab")]));
            assert_eq!(held.tls_ca_pins, vec![pin("ab")], "kept in memory too");
        }
        // An empty list leaves the pins held; a good one replaces them.
        adopt_with_pins(dir.path(), &mut held, vec![key(1)], Vec::new()).unwrap();
        assert_eq!(held.tls_ca_pins, vec![pin("ab")]);
        adopt_with_pins(dir.path(), &mut held, vec![key(1)], vec![pin("cd"), pin("ab")]).unwrap();
        let kids = held_kids(&held);
        assert_eq!(
            kids,
            vec![key(1).kid, format!("tls-{}", "cd".repeat(8)), format!("tls-{}", "ab".repeat(8))]
        );
    }

    #[test]
    fn a_signed_request_verifies_against_its_own_fields_only() {
        let signing = SigningKeyPair::generate(&SeededEntropy::new(9));
        let clock: SharedClock = Arc::new(ManualClock::new(1_000));
        let entropy: SharedEntropy = Arc::new(SeededEntropy::new(10));
        let request = signed_request("agt_1", &key(1).kid, &signing, &clock, &entropy);
        let signature = hex::decode(&request.signature).unwrap();
        let input = router_keys_signing_input(
            &request.agent_id,
            request.timestamp_ms,
            &request.nonce,
            &request.kid,
        );
        assert!(xerotier_credentials::verify_signature(&signing.public_hex(), &input, &signature));
        let other =
            router_keys_signing_input("agt_2", request.timestamp_ms, &request.nonce, &request.kid);
        assert!(!xerotier_credentials::verify_signature(&signing.public_hex(), &other, &signature));
        assert_eq!(request.nonce.len(), 32);
        let again = signed_request("agt_1", &key(1).kid, &signing, &clock, &entropy);
        assert_ne!(again.nonce, request.nonce, "a fresh nonce each time");
    }
}
