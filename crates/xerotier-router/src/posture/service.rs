//! The posture report: reads each kind from the store, judges each credential at one instant
//! of the injected clock, filters and sorts (worst state first, then due date).

use std::collections::HashMap;
use std::sync::Arc;

use xerotier_core::{SharedClock, UnixMillis};
use xerotier_posture::{
    CredentialKind, Judgement, Policy, PolicyConfig, PostureState, Profile, Rule, Subject, judge,
};
use xerotier_store::{CredentialState, RouterKeyStatus, Store};

use crate::service_error::ServiceError;

/// What to report.
#[derive(Debug, Clone, Default)]
pub struct PostureFilter {
    pub kind: Option<CredentialKind>,
    pub state: Option<PostureState>,
    pub agent_id: Option<String>,
    pub region: Option<String>,
    /// Judge by this profile (plus the deployment's overrides) instead of the configured one.
    pub profile: Option<Profile>,
}

/// One judged credential.
#[derive(Debug, Clone)]
pub struct PostureRow {
    pub kind: CredentialKind,
    pub id: String,
    pub name: String,
    pub owner: Option<String>,
    pub agent_id: Option<String>,
    pub region: Option<String>,
    pub created_at: UnixMillis,
    pub last_rotated_at: Option<UnixMillis>,
    pub last_used_at: Option<UnixMillis>,
    pub expires_at: Option<UnixMillis>,
    pub judgement: Judgement,
    pub rule: Rule,
    /// Workspace credentials: what the agent's latest reload said of the file.
    pub file: Option<CredentialState>,
}

/// A whole report, judged at `now` by `policy`.
#[derive(Debug, Clone)]
pub struct Report {
    pub now: UnixMillis,
    pub policy: Arc<Policy>,
    pub rows: Vec<PostureRow>,
}

#[derive(Debug, Clone)]
pub struct PostureService {
    store: Store,
    clock: SharedClock,
    config: Arc<PolicyConfig>,
    policy: Arc<Policy>,
}

impl PostureService {
    pub fn new(store: Store, clock: SharedClock, config: PolicyConfig) -> Self {
        let policy = Arc::new(Policy::resolve(&config));
        Self { store, clock, config: Arc::new(config), policy }
    }

    /// The configured policy (for the startup warnings and the monitor).
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    pub async fn report(&self, filter: &PostureFilter) -> Result<Report, ServiceError> {
        let policy = match filter.profile {
            Some(profile) => Arc::new(Policy::resolve(&PolicyConfig {
                profile: Some(profile),
                ..(*self.config).clone()
            })),
            None => self.policy.clone(),
        };
        let now = self.clock.now_millis();
        let wants = |kind| filter.kind.is_none_or(|k| k == kind);
        let mut rows = Vec::new();
        let curve = self.store.posture_curve_keys(filter.agent_id.as_deref()).await?;
        let regions: HashMap<&str, Option<&str>> =
            curve.iter().map(|a| (a.agent_id.as_str(), a.region.as_deref())).collect();
        if filter.agent_id.is_none() && wants(CredentialKind::ApiKey) {
            for key in self.store.posture_api_keys(now).await? {
                rows.push(row(
                    &policy,
                    now,
                    Seed {
                        kind: CredentialKind::ApiKey,
                        id: key.id,
                        name: key.name,
                        owner: key.created_by,
                        agent_id: None,
                        region: None,
                        created_at: key.created_at,
                        last_rotated_at: key.rotated_at,
                        last_used_at: key.last_used_at,
                        expires_at: key.expires_at,
                        file: None,
                    },
                ));
            }
        }
        if wants(CredentialKind::CurveKey) {
            for agent in &curve {
                rows.push(row(
                    &policy,
                    now,
                    Seed {
                        kind: CredentialKind::CurveKey,
                        id: agent.agent_id.clone(),
                        name: agent.name.clone(),
                        owner: Some(agent.agent_id.clone()),
                        agent_id: Some(agent.agent_id.clone()),
                        region: agent.region.clone(),
                        created_at: agent.enrolled_at,
                        last_rotated_at: agent.rotated_at,
                        last_used_at: None,
                        expires_at: None,
                        file: None,
                    },
                ));
            }
        }
        if wants(CredentialKind::WorkspaceCredential) {
            for file in self.store.credential_states(filter.agent_id.as_deref()).await? {
                let region = regions.get(file.agent_id.as_str()).copied().flatten();
                rows.push(row(
                    &policy,
                    now,
                    Seed {
                        kind: CredentialKind::WorkspaceCredential,
                        id: format!("{}:{}", file.agent_id, file.credentials_ref),
                        name: file.credentials_ref.clone(),
                        owner: Some(file.agent_id.clone()),
                        agent_id: Some(file.agent_id.clone()),
                        region: region.map(str::to_string),
                        // A file never read has no version in use: counted from its first report.
                        created_at: file.mtime_ms.unwrap_or(file.reported_at),
                        last_rotated_at: file.mtime_ms,
                        last_used_at: None,
                        expires_at: file.expires_at,
                        file: Some(file),
                    },
                ));
            }
        }
        if filter.agent_id.is_none() && wants(CredentialKind::JoinKey) {
            for key in self.store.posture_join_keys(now).await? {
                rows.push(row(
                    &policy,
                    now,
                    Seed {
                        kind: CredentialKind::JoinKey,
                        id: key.id,
                        name: key.name,
                        owner: key.created_by,
                        agent_id: None,
                        region: key.region,
                        created_at: key.created_at,
                        last_rotated_at: None,
                        last_used_at: None,
                        expires_at: Some(key.expires_at),
                        file: None,
                    },
                ));
            }
        }
        if filter.agent_id.is_none() && wants(CredentialKind::RouterKey) {
            // The router's own keys in force (mesh, join signing, its TLS CA); a rotation
            // replaces the key, so a key's age runs from its creation.
            for kind in ["mesh", "join_signing", "tls"] {
                for key in self.store.router_keys(kind).await? {
                    if key.status() != Some(RouterKeyStatus::Current) {
                        continue;
                    }
                    // The TLS CA also expires on its own: its certificate's notAfter.
                    let expires_at =
                        (kind == "tls").then(|| ca_not_after(&key.kid, &key.public_key)).flatten();
                    rows.push(row(
                        &policy,
                        now,
                        Seed {
                            kind: CredentialKind::RouterKey,
                            id: key.kid,
                            name: match kind {
                                "tls" => "TLS CA".to_string(),
                                other => format!("{other} key"),
                            },
                            owner: None,
                            agent_id: None,
                            region: None,
                            created_at: key.created_at,
                            last_rotated_at: None,
                            last_used_at: None,
                            expires_at,
                            file: None,
                        },
                    ));
                }
            }
        }
        rows.retain(|r| {
            filter.state.is_none_or(|s| s == r.judgement.state)
                && filter.region.as_deref().is_none_or(|want| r.region.as_deref() == Some(want))
        });
        sort_worst_first(&mut rows);
        Ok(Report { now, policy, rows })
    }
}

/// When the router CA certificate `pem` expires (Unix milliseconds); `None`, logged, when it
/// cannot be read (the row is then judged by its age alone).
fn ca_not_after(kid: &str, pem: &str) -> Option<UnixMillis> {
    match xerotier_tls::certificate_not_after(pem) {
        Ok(seconds) => seconds.checked_mul(1000),
        Err(err) => {
            tracing::warn!(%kid, error = %err, "the stored TLS CA certificate cannot be read");
            None
        }
    }
}

/// Worst state first, then the earliest due date (none last), then kind and id, so equal
/// reports list equally.
pub fn sort_worst_first(rows: &mut [PostureRow]) {
    rows.sort_by(|a, b| {
        b.judgement
            .state
            .cmp(&a.judgement.state)
            .then_with(|| {
                let due = |r: &PostureRow| r.judgement.due_at.unwrap_or(i64::MAX);
                due(a).cmp(&due(b))
            })
            .then_with(|| a.kind.cmp(&b.kind))
            .then_with(|| a.id.cmp(&b.id))
    });
}

/// What a row is built from.
struct Seed {
    kind: CredentialKind,
    id: String,
    name: String,
    owner: Option<String>,
    agent_id: Option<String>,
    region: Option<String>,
    created_at: UnixMillis,
    last_rotated_at: Option<UnixMillis>,
    last_used_at: Option<UnixMillis>,
    expires_at: Option<UnixMillis>,
    file: Option<CredentialState>,
}

fn row(policy: &Policy, now: UnixMillis, seed: Seed) -> PostureRow {
    let rule = policy.rule(seed.kind).clone();
    let since = seed.last_rotated_at.unwrap_or(seed.created_at).max(seed.created_at);
    // The router's keys are rotated on their cryptoperiod: the TLS CA certificate's own
    // validity (ten years) is shown, and decides only when it ends before the rule's due date.
    // Other credentials with an expiry follow it (short-lived by design).
    let judged_expiry = match seed.kind {
        CredentialKind::RouterKey => seed.expires_at.filter(|&expires_at| {
            rule.max_age_ms.is_none_or(|max| expires_at < since.saturating_add(max))
        }),
        _ => seed.expires_at,
    };
    let judgement =
        judge(&rule, policy.due_soon_ms, Subject { since, expires_at: judged_expiry }, now);
    PostureRow {
        kind: seed.kind,
        id: seed.id,
        name: seed.name,
        owner: seed.owner,
        agent_id: seed.agent_id,
        region: seed.region,
        created_at: seed.created_at,
        last_rotated_at: seed.last_rotated_at,
        last_used_at: seed.last_used_at,
        expires_at: seed.expires_at,
        judgement,
        rule,
        file: seed.file,
    }
}
