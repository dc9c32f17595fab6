//! Enrollment: trade the join key for an agent identity.

use std::time::Duration;

use anyhow::{Context, bail};
use xerotier_credentials::{CurveKeyPair, SigningKeyPair};
use xerotier_proto::ErrorEnvelope;
use xerotier_proto::agents::{CapabilityManifest, EnrollRequest, EnrollResponse};

use crate::identity::Identity;

pub struct Enrollment<'a> {
    pub router_url: &'a str,
    pub join_key: &'a str,
    pub registration_name: &'a str,
    pub curve: &'a CurveKeyPair,
    pub signing: &'a SigningKeyPair,
    pub manifest: &'a CapabilityManifest,
    pub lease_renewal_interval_ms: u64,
}

impl std::fmt::Debug for Enrollment<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollment")
            .field("router_url", &self.router_url)
            .field("registration_name", &self.registration_name)
            .finish_non_exhaustive()
    }
}

pub async fn enroll(e: Enrollment<'_>) -> anyhow::Result<Identity> {
    let request = EnrollRequest {
        join_key: e.join_key.to_string(),
        registration_name: e.registration_name.to_string(),
        curve_public_key: e.curve.public_z85(),
        signing_public_key: e.signing.public_hex(),
        manifest: e.manifest.clone(),
        lease_renewal_interval_ms: Some(e.lease_renewal_interval_ms),
    };
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
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
    Ok(Identity {
        agent_id: answer.agent_id,
        registration_name: e.registration_name.to_string(),
        mesh_addr: answer.mesh_addr,
        router_curve_key: answer.router_curve_key,
        role: answer.role,
    })
}
