//! Join keys: single-use, TTL-bounded enrollment tokens. Only the id and metadata are stored.

use std::sync::Arc;

use secrecy::SecretString;
use xerotier_core::{IdGenerator, IdKind, SharedClock, UnixMillis, format_rfc3339};
use xerotier_proto::join_keys::{
    AGENT_ROLES, CreateJoinKeyRequest, JOIN_KEY_AUDIENCE, JOIN_KEY_ISSUER, JoinKeyClaims,
};
use xerotier_proto::status::JoinKeyState;
use xerotier_store::{JoinKeyRecord, PageRequest, PageSlice, Store};

use crate::audit::{AuditContext, AuditLog, Change, Target};
use crate::mesh_link::MeshLink;
use crate::service_error::ServiceError;
use crate::validate;

/// A join key as of a given time.
#[derive(Debug, Clone)]
pub struct JoinKey {
    pub record: JoinKeyRecord,
    pub state: JoinKeyState,
}

impl JoinKey {
    pub fn at(record: JoinKeyRecord, now: UnixMillis) -> Self {
        // The store decides the state (a terminal state wins over expiry); it only ever
        // answers one of the four.
        let state = JoinKeyState::parse(record.state(now)).unwrap_or(JoinKeyState::Expired);
        Self { record, state }
    }
}

/// A freshly minted key and its token: the only time the token leaves the service.
#[derive(Debug)]
pub struct IssuedJoin {
    pub key: JoinKey,
    pub token: SecretString,
}

#[derive(Debug, Clone)]
pub struct JoinKeyService {
    store: Store,
    clock: SharedClock,
    ids: IdGenerator,
    audit: AuditLog,
    link: Arc<MeshLink>,
}

/// Most workspaces one join key may grant.
const MAX_GRANTED_WORKSPACES: usize = 100;

/// A join key's grant: workspace names, each checked, without duplicates. `None`: no grant.
fn grant_workspaces(requested: Option<&[String]>) -> Result<Option<Vec<String>>, ServiceError> {
    let Some(requested) = requested else { return Ok(None) };
    if requested.len() > MAX_GRANTED_WORKSPACES {
        return Err(ServiceError::invalid(
            format!("a join key grants at most {MAX_GRANTED_WORKSPACES} workspaces"),
            "workspaces",
        ));
    }
    let mut grant: Vec<String> = Vec::with_capacity(requested.len());
    for workspace in requested {
        validate::name(workspace, "workspaces")?;
        if !grant.contains(workspace) {
            grant.push(workspace.clone());
        }
    }
    Ok(Some(grant))
}

/// Checks an agent role against the two the product knows.
pub fn validate_role(role: &str) -> Result<(), ServiceError> {
    if AGENT_ROLES.contains(&role) {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            format!("agent_role must be inference or execution, got {role:?}"),
            "agent_role",
        ))
    }
}

impl JoinKeyService {
    pub fn new(
        store: Store,
        clock: SharedClock,
        ids: IdGenerator,
        audit: AuditLog,
        link: Arc<MeshLink>,
    ) -> Self {
        Self { store, clock, ids, audit, link }
    }

    pub async fn create(
        &self,
        context: &AuditContext,
        request: CreateJoinKeyRequest,
    ) -> Result<IssuedJoin, ServiceError> {
        let settings = &self.link.settings;
        validate::name(&request.name, "name")?;
        if let Some(region) = &request.region {
            validate::name(region, "region")?;
        }
        let role =
            request.agent_role.clone().unwrap_or_else(|| settings.default_agent_role.clone());
        validate_role(&role)?;
        let router_addr =
            request.router_addr.clone().unwrap_or_else(|| self.link.advertised_mesh_addr());
        validate::mesh_addr(&router_addr, "router_addr")?;
        let ttl = request.ttl_seconds.unwrap_or(settings.join_key_default_ttl_seconds);
        if ttl == 0 || ttl > settings.join_key_max_ttl_seconds {
            return Err(ServiceError::invalid(
                format!(
                    "ttl_seconds must be between 1 and the router maximum of {}",
                    settings.join_key_max_ttl_seconds
                ),
                "ttl_seconds",
            ));
        }
        let grant = grant_workspaces(request.workspaces.as_deref())?;
        let require_approval = request.require_approval.unwrap_or(false);
        let now = self.clock.now_millis();
        let expires_at = now + i64::try_from(ttl).unwrap_or(i64::MAX / 1000) * 1000;
        let record = JoinKeyRecord {
            id: self.ids.next(IdKind::JoinKey),
            name: request.name.clone(),
            region: request.region.clone(),
            role: role.clone(),
            router_addr: router_addr.clone(),
            created_at: now,
            created_by: context.actor_key_id().map(str::to_string),
            expires_at,
            consumed_at: None,
            consumed_by_agent: None,
            revoked_at: None,
            revoked_by: None,
            revoked_reason: None,
            grant_workspaces: grant.as_ref().map(|g| serde_json::json!(g).to_string()),
            require_approval,
            signing_kid: None,
        };
        let claims = JoinKeyClaims {
            iss: JOIN_KEY_ISSUER.into(),
            aud: JOIN_KEY_AUDIENCE.into(),
            jti: record.id.clone(),
            iat: now / 1000,
            exp: expires_at / 1000,
            name: record.name.clone(),
            region: record.region.clone(),
            role,
            router_addr,
            router_curve_key: self.link.router_curve_public_z85(),
            workspaces: grant.clone().unwrap_or_default(),
            require_approval,
            tls_ca: settings.tls_ca_pin.get(),
        };
        let signed = self
            .link
            .join_keyring
            .issue(&self.link.identity.join_signer, &claims)
            .map_err(ServiceError::internal)?;
        let (token, record) =
            (signed.token, JoinKeyRecord { signing_kid: Some(signed.kid), ..record });
        let target = Target { kind: "join_key", id: Some(&record.id), name: Some(&record.name) };
        let details = serde_json::json!({
            "role": record.role, "region": record.region, "router_addr": record.router_addr,
            "ttl_seconds": ttl, "expires_at": format_rfc3339(expires_at),
            "grant_workspaces": grant, "require_approval": require_approval,
        });
        let change = Change::new("join_key.create", target).creating().details(details);
        let created = &record;
        self.audit
            .audited(context, change, |entry| async move {
                self.store.create_join_key(created, &entry).await
            })
            .await?;
        tracing::info!(join_key = %record.id, name = %record.name, ttl, actor = %context.actor_label(), "join key created");
        Ok(IssuedJoin { key: JoinKey::at(record, now), token: SecretString::from(token) })
    }

    pub async fn list(
        &self,
        page: &PageRequest,
        include_terminal: bool,
    ) -> Result<PageSlice<JoinKey>, ServiceError> {
        let now = self.clock.now_millis();
        let slice = self.store.list_join_keys(page, include_terminal, now).await?;
        Ok(slice.map(|k| JoinKey::at(k, now)))
    }

    pub async fn get(&self, id: &str) -> Result<JoinKey, ServiceError> {
        let record = self
            .store
            .join_key(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("join key {id}")))?;
        Ok(JoinKey::at(record, self.clock.now_millis()))
    }

    pub async fn revoke(
        &self,
        context: &AuditContext,
        id: &str,
        reason: Option<&str>,
    ) -> Result<JoinKey, ServiceError> {
        let reason = validate::reason(reason)?;
        let now = self.clock.now_millis();
        let target = Target { kind: "join_key", id: Some(id), name: None };
        let change = Change::new("join_key.revoke", target).reason(reason);
        let revoked = self
            .audit
            .audited(context, change, |entry| async move {
                self.store.revoke_join_key(id, now, context.actor_key_id(), reason, &entry).await
            })
            .await
            .map_err(|err| match err {
                ServiceError::JoinKeyRevoked(id) => {
                    ServiceError::AlreadyRevoked(format!("join key {id}"))
                }
                other => other,
            })?;
        tracing::info!(join_key = %id, actor = %context.actor_label(), "join key revoked");
        Ok(JoinKey::at(revoked, now))
    }
}
