//! `GET /v1/management/credentials`: the posture report over HTTP.

use axum::Json;
use axum::extract::State;
use xerotier_core::format_rfc3339;
use xerotier_posture::{CredentialKind, PostureState, Profile, Rule};
use xerotier_proto::ErrorEnvelope;
use xerotier_proto::posture::{PostureQuery, PostureReport, PostureRow, PostureRule};

use super::service::{self, PostureFilter, PostureService};
use crate::error::ApiError;
use crate::http::extract::QueryParams;
use crate::validate;

/// Every credential of every kind against the rotation policy: API keys, each live agent's
/// CURVE key and workspace credential files, unconsumed join keys, the router's own keys in
/// force (`router_key`: mesh and join signing).
#[utoipa::path(
    get,
    path = "/v1/management/credentials",
    tag = "agents",
    params(PostureQuery),
    responses(
        (status = 200, description = "The whole report (not paged: one judgement at one instant, worst first)", body = PostureReport),
        (status = 400, description = "An unknown kind, state or profile, a malformed agent id or region, or an unknown parameter", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn posture_report(
    State(posture): State<PostureService>,
    QueryParams(query): QueryParams<PostureQuery>,
) -> Result<Json<PostureReport>, ApiError> {
    let filter = filter(query)?;
    let report = posture.report(&filter).await?;
    Ok(Json(PostureReport {
        now: format_rfc3339(report.now),
        profile: report.policy.profile.map(|p| p.as_str().to_string()),
        due_soon_seconds: report.policy.due_soon_ms / 1000,
        rules: report.policy.rules().iter().map(rule_view).collect(),
        credentials: report.rows.into_iter().map(row_view).collect(),
    }))
}

/// Checks every query value: unknown names and malformed ids are a 400 naming the parameter.
fn filter(query: PostureQuery) -> Result<PostureFilter, ApiError> {
    fn parse<T: std::str::FromStr<Err = xerotier_posture::PolicyError>>(
        value: Option<String>,
        param: &str,
    ) -> Result<Option<T>, ApiError> {
        value
            .map(|v| {
                if v.len() > 64 {
                    return Err(ApiError::invalid(format!("{param} is too long"), param));
                }
                v.parse::<T>().map_err(|e| ApiError::invalid(e.to_string(), param))
            })
            .transpose()
    }
    validate::optional(query.agent_id.as_deref(), |a| validate::id("agt_", a, "agent_id"))?;
    validate::optional(query.region.as_deref(), |r| validate::name(r, "region"))?;
    Ok(PostureFilter {
        kind: parse::<CredentialKind>(query.kind, "kind")?,
        state: parse::<PostureState>(query.state, "state")?,
        profile: parse::<Profile>(query.profile, "profile")?,
        agent_id: query.agent_id,
        region: query.region,
    })
}

fn seconds(ms: i64) -> i64 {
    ms / 1000
}

fn rule_view(rule: &Rule) -> PostureRule {
    PostureRule {
        kind: rule.kind.as_str().to_string(),
        max_age_seconds: rule.max_age_ms.map(seconds),
        emergency_deadline_seconds: seconds(rule.emergency_deadline_ms),
        rule: rule.name.clone(),
        basis: rule.basis.clone(),
    }
}

pub fn row_view(row: service::PostureRow) -> PostureRow {
    let by_expiry = row.judgement.by_expiry;
    let file = row.file;
    PostureRow {
        kind: row.kind.as_str().to_string(),
        id: row.id,
        name: row.name,
        owner: row.owner,
        agent_id: row.agent_id,
        region: row.region,
        created_at: format_rfc3339(row.created_at),
        last_rotated_at: row.last_rotated_at.map(format_rfc3339),
        last_used_at: row.last_used_at.map(format_rfc3339),
        expires_at: row.expires_at.map(format_rfc3339),
        age_seconds: seconds(row.judgement.age_ms),
        max_age_seconds: if by_expiry { None } else { row.rule.max_age_ms.map(seconds) },
        due_at: row.judgement.due_at.map(format_rfc3339),
        state: row.judgement.state.as_str().to_string(),
        rule: if by_expiry { "expiry".to_string() } else { row.rule.name },
        basis: if by_expiry {
            "the credential's own expiry (SPEC 3.6: short-lived, per its TTL)".to_string()
        } else {
            row.rule.basis
        },
        emergency_deadline_seconds: seconds(row.rule.emergency_deadline_ms),
        credentials_ref: file.as_ref().map(|f| f.credentials_ref.clone()),
        sha256: file.as_ref().and_then(|f| f.sha256.clone()),
        generation: file.as_ref().map(|f| u64::try_from(f.generation).unwrap_or(0)),
        reload_ok: file.as_ref().map(|f| f.ok),
        error: file.as_ref().and_then(|f| f.error.clone()),
        reported_at: file.as_ref().map(|f| format_rfc3339(f.reported_at)),
    }
}
