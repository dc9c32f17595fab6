//! The router's own replicas, as `GET /v1/router/replicas` shows them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::status::ReplicaStatus;

/// One router replica as registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReplicaView {
    /// `rtr_…`, new at every start of a router process.
    pub id: String,
    /// Where it serves the HTTPS API.
    pub https_url: String,
    /// Where agents reach its mesh endpoint, `tcp://host:port`.
    pub mesh_addr: String,
    pub status: ReplicaStatus,
    /// Agent sessions it held at its last lease renewal.
    pub sessions: u64,
    pub started_at: String,
    /// Its last lease renewal.
    pub heartbeat_at: String,
    /// Milliseconds since its last lease renewal, by the database's clock.
    pub heartbeat_age_ms: u64,
    pub stopped_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReplicaList {
    /// Newest first.
    pub replicas: Vec<ReplicaView>,
}
