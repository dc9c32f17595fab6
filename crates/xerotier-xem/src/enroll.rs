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
    let identity = Identity {
        agent_id: answer.agent_id,
        registration_name: e.registration_name.to_string(),
        mesh_addr: answer.mesh_addr,
        router_curve_key: answer.router_curve_key,
        role: answer.role,
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
    if answer.router_curve_key != pins.router_curve_key {
        return Err(disagrees("router CURVE key"));
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
