//! `GET /v1/router/replicas`: the replicas view.

use axum::Json;
use axum::extract::State;
use xerotier_core::format_rfc3339;
use xerotier_proto::router::{ReplicaList, ReplicaView};

use super::{Replica, ReplicaService};
use crate::error::ApiError;

/// The router replicas sharing this store, newest first: addresses, status by the database's
/// clock, and the agent sessions each held at its last lease renewal.
#[utoipa::path(
    get,
    path = "/v1/router/replicas",
    tag = "router",
    responses(
        (status = 200, description = "Every registered replica", body = ReplicaList),
    ),
    security(("api_key" = []))
)]
pub async fn list_replicas(
    State(replicas): State<ReplicaService>,
) -> Result<Json<ReplicaList>, ApiError> {
    let replicas = replicas.list().await?;
    Ok(Json(ReplicaList { replicas: replicas.into_iter().map(view).collect() }))
}

fn view(replica: Replica) -> ReplicaView {
    let Replica { record, status, heartbeat_age_ms } = replica;
    ReplicaView {
        status,
        sessions: u64::try_from(record.sessions).unwrap_or(0),
        started_at: format_rfc3339(record.started_at),
        heartbeat_at: format_rfc3339(record.heartbeat_at),
        heartbeat_age_ms: u64::try_from(heartbeat_age_ms).unwrap_or(0),
        stopped_at: record.stopped_at.map(format_rfc3339),
        id: record.id,
        https_url: record.https_url,
        mesh_addr: record.mesh_addr,
    }
}
