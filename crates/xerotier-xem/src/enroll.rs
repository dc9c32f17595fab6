//! Enrollment: trade the join key for an agent identity.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use xerotier_core::{IdKind, SharedClock, is_valid_id};
use xerotier_credentials::unverified_claims;
use xerotier_credentials::{CurveKeyPair, SigningKeyPair};
use xerotier_proto::ErrorEnvelope;
use xerotier_proto::agents::{CapabilityManifest, EnrollRequest, EnrollResponse};
use xerotier_proto::join_keys::JoinKeyClaims;

use crate::identity::Identity;

pub struct Enrollment<'a> {
    pub router_url: &'a str,
    pub join_key: &'a str,
    pub registration_name: &'a str,
    pub curve: &'a CurveKeyPair,
    pub signing: &'a SigningKeyPair,
    pub manifest: &'a CapabilityManifest,
    pub lease_renewal_interval_ms: u64,
    /// Judges the router certificate's validity.
    pub clock: SharedClock,
}

impl std::fmt::Debug for Enrollment<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollment")
            .field("router_url", &self.router_url)
            .field("registration_name", &self.registration_name)
            .finish_non_exhaustive()
    }
}

/// The identity, and the mesh addresses of the router's live replicas as the answer named them
/// (unchecked: `replicas::Replicas` checks them).
pub async fn enroll(e: Enrollment<'_>) -> anyhow::Result<(Identity, Vec<String>)> {
    let pins = unverified_claims(e.join_key).map_err(|_| {
        anyhow!(
            "the join key is not a readable token; copy it again from the output of \
             `xeroctl agents join-keys --create`"
        )
    })?;
    let client = enrollment_client(e.router_url, pins.tls_ca.as_deref(), e.clock)?;
    let request = EnrollRequest {
        join_key: e.join_key.to_string(),
        registration_name: e.registration_name.to_string(),
        curve_public_key: e.curve.public_z85(),
        signing_public_key: e.signing.public_hex(),
        manifest: e.manifest.clone(),
        lease_renewal_interval_ms: Some(e.lease_renewal_interval_ms),
    };
    let url = format!("{}/v1/enroll", e.router_url.trim_end_matches('/'));
    let response = client
        .post(&url)
        .json(&request)
        .send()
        .await
        .with_context(|| format!("cannot reach the router at {} to enroll", e.router_url))?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        match serde_json::from_slice::<ErrorEnvelope>(&body) {
            Ok(envelope) => {
                bail!("enrollment refused: {} ({})", envelope.error.message, envelope.error.code)
            }
            Err(_) => bail!("enrollment refused: HTTP {status}"),
        }
    }
    let answer: EnrollResponse =
        serde_json::from_slice(&body).context("unexpected enrollment answer")?;
    check_answer(&answer, &pins)?;
    let router_mesh_keys = if answer.router_mesh_keys.is_empty() {
        crate::router_keys::from_single(&answer.router_curve_key)
            .map(|key| vec![key])
            .unwrap_or_default()
    } else {
        answer.router_mesh_keys
    };
    let identity = Identity {
        agent_id: answer.agent_id,
        registration_name: e.registration_name.to_string(),
        mesh_addr: answer.mesh_addr,
        router_curve_key: answer.router_curve_key,
        role: answer.role,
        router_mesh_keys,
        router_url: Some(e.router_url.to_string()),
        tls_ca_pin: pins.tls_ca.clone(),
        tls_ca_pins: Vec::new(),
    };
    Ok((identity, answer.mesh_addrs))
}

/// An HTTPS client that trusts only the CA the join key pins; plain HTTP only when the key pins
/// none (a router serving `--insecure-http` on loopback). Either mismatch is refused before
/// anything, the join key included, is sent.
fn enrollment_client(
    router_url: &str,
    pin: Option<&str>,
    clock: SharedClock,
) -> anyhow::Result<reqwest::Client> {
    let builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
    let https = router_url.starts_with("https://");
    match pin {
        Some(pin) if https => {
            let tls = xerotier_tls::pinned_client_config(pin, clock)
                .context("the join key's TLS CA fingerprint is malformed")?;
            Ok(builder.use_preconfigured_tls(tls).build()?)
        }
        Some(_) => bail!(
            "router_url {router_url} is not https:// but the join key pins the router's TLS CA: \
             use the router's https:// URL (the join key would cross the network in clear text)"
        ),
        None if https => bail!(
            "the join key pins no TLS CA (its router served plain HTTP), so this router's \
             certificate cannot be checked: mint the join key on a router serving HTTPS"
        ),
        None => Ok(builder.build()?),
    }
}

/// The answer must name the router the join key pins: its mesh address and CURVE key (a
/// rewritten answer would make this agent pin someone else's mesh for good), and give an
/// agent id of the right form and the role the key was minted for.
fn check_answer(answer: &EnrollResponse, pins: &JoinKeyClaims) -> anyhow::Result<()> {
    let disagrees = |what: &str| {
        anyhow!(
            "refusing the enrollment answer: its {what} disagrees with the join key (a man in \
             the middle, or the wrong router); nothing was written. Check router_url and mint a \
             new join key"
        )
    };
    if !vouches_for_pin(answer, &pins.router_curve_key) {
        return Err(disagrees("router CURVE key"));
    }
    if !answer.router_mesh_keys.is_empty() {
        // The set must be one the session would accept, and hold the key served now.
        crate::router_keys::validate(&answer.router_mesh_keys)
            .map_err(|_| disagrees("router mesh key set"))?;
        if !answer.router_mesh_keys.iter().any(|k| k.public_key == answer.router_curve_key) {
            return Err(disagrees("router mesh key set"));
        }
    }
    if answer.mesh_addr != pins.router_addr {
        return Err(disagrees("mesh address"));
    }
    if answer.role != pins.role {
        return Err(disagrees("agent role"));
    }
    if !is_valid_id(IdKind::Agent, &answer.agent_id) {
        return Err(disagrees("agent id"));
    }
    Ok(())
}

/// Whether the answer vouches for the router CURVE key the join key pins. The served key is
/// the plain case. A mesh key rotation changes the served key under join keys already minted:
/// the pin is then still good when it is one of the keys the router tells agents to accept
/// (mid-rotation) or one it names as rotated away within its overlap window (after). The
/// answer comes over the TLS connection the same join key pins, and the router accepted the
/// token (signature, expiry, one use) before answering, so this widens nothing an attacker
/// without the router's TLS key could use; a pin the answer does not name at all, in any of
/// these places, is still refused.
fn vouches_for_pin(answer: &EnrollResponse, pin: &str) -> bool {
    if answer.router_curve_key == pin || answer.router_mesh_keys.iter().any(|k| k.public_key == pin)
    {
        return true;
    }
    crate::router_keys::kid_of(pin)
        .is_some_and(|kid| answer.retired_router_mesh_kids.contains(&kid))
}

#[cfg(test)]
mod tests {
    use xerotier_core::SeededEntropy;

    use super::*;

    fn z85(seed: u64) -> String {
        CurveKeyPair::generate(&SeededEntropy::new(seed)).public_z85()
    }

    fn key(seed: u64) -> xerotier_proto::mesh::RouterMeshKey {
        crate::router_keys::from_single(&z85(seed)).unwrap()
    }

    fn pins(router_curve_key: String) -> JoinKeyClaims {
        JoinKeyClaims {
            iss: xerotier_proto::join_keys::JOIN_KEY_ISSUER.into(),
            aud: xerotier_proto::join_keys::JOIN_KEY_AUDIENCE.into(),
            jti: "jk_01".into(),
            iat: 0,
            exp: 1,
            name: "xem".into(),
            region: None,
            role: "execution".into(),
            router_addr: "tcp://router:5555".into(),
            router_curve_key,
            workspaces: Vec::new(),
            require_approval: false,
            tls_ca: None,
        }
    }

    fn answer(served: u64, set: &[u64], retired: &[u64]) -> EnrollResponse {
        EnrollResponse {
            agent_id: "agt_01j9zk3v8p5q2r7t4w6x0y1abc".into(),
            mesh_addr: "tcp://router:5555".into(),
            router_curve_key: z85(served),
            role: "execution".into(),
            region: None,
            mesh_addrs: Vec::new(),
            router_mesh_keys: set.iter().map(|s| key(*s)).collect(),
            retired_router_mesh_kids: retired.iter().map(|s| key(*s).kid).collect(),
        }
    }

    #[test]
    fn a_join_key_minted_before_a_mesh_rotation_still_enrolls() {
        // Mid-rotation (serving the new key, the old one still accepted) and after it (the
        // old key retired within the overlap window).
        assert!(check_answer(&answer(2, &[2, 1], &[]), &pins(z85(1))).is_ok());
        assert!(check_answer(&answer(2, &[2], &[1]), &pins(z85(1))).is_ok());
        assert!(check_answer(&answer(1, &[1], &[]), &pins(z85(1))).is_ok(), "no rotation");
    }

    #[test]
    fn an_answer_that_does_not_vouch_for_the_pinned_key_is_refused() {
        // An unrelated pin: named nowhere in the answer.
        let refused = check_answer(&answer(2, &[2, 3], &[4]), &pins(z85(1)));
        assert!(refused.unwrap_err().to_string().contains("router CURVE key"));
        // A set that does not hold the served key, or is malformed, is refused too.
        assert!(check_answer(&answer(2, &[1], &[]), &pins(z85(1))).is_err());
        assert!(check_answer(&answer(1, &[1, 1], &[]), &pins(z85(1))).is_err(), "duplicates");
    }
}
