//! What the XEM keeps after enrolling, so a restart reconnects without a join key.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use xerotier_credentials::write_secret_file;

const IDENTITY_FILE: &str = "identity.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub agent_id: String,
    pub registration_name: String,
    pub mesh_addr: String,
    /// The router mesh key tried first (the first of `router_mesh_keys`; kept on its own so
    /// an older XEM reading this file still connects).
    pub router_curve_key: String,
    pub role: String,
    /// The router mesh keys to accept, in the order to try them (SPEC §9). Absent from files
    /// written before router key rotation: [`crate::router_keys::key_set`] then derives it from
    /// `router_curve_key`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub router_mesh_keys: Vec<xerotier_proto::mesh::RouterMeshKey>,
    /// Where the agent enrolled, and the TLS CA it pinned then: where it fetches the router's
    /// keys with a signed request when none it holds works any more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_pin: Option<String>,
    /// The TLS CAs the router told the agent to trust (a CA rotation, SPEC §9); when present
    /// they replace `tls_ca_pin` for the signed key fetch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_ca_pins: Vec<String>,
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(IDENTITY_FILE)
}

pub fn load(state_dir: &Path) -> anyhow::Result<Option<Identity>> {
    let file = path(state_dir);
    match std::fs::read_to_string(&file) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("{} is corrupt; move it away to re-enroll", file.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("reading {}", file.display())),
    }
}

pub fn save(state_dir: &Path, identity: &Identity) -> anyhow::Result<()> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let text = serde_json::to_vec_pretty(identity)?;
    write_secret_file(&path(state_dir), &text)?;
    Ok(())
}

/// After a revocation: the identity and the CURVE key are retired (kept for forensics under a
/// `.revoked` suffix), so the next start enrolls afresh with a new key pair and a new join key.
pub fn retire(state_dir: &Path, curve_key_path: &Path) -> anyhow::Result<()> {
    for file in [path(state_dir), curve_key_path.to_path_buf()] {
        if file.exists() {
            let retired = PathBuf::from(format!("{}.revoked", file.display()));
            std::fs::rename(&file, &retired)
                .with_context(|| format!("retiring {}", file.display()))?;
        }
    }
    Ok(())
}
