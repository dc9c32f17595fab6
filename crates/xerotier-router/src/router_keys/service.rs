//! The staged rotation of the router's own keys: phases, store, audit, and telling this
//! replica's rollouts. No HTTP here.
//!
//! A phase change is one store transaction with its audit record (which writes the replica
//! signal every replica reconciles on); the change returns once every live replica applied it
//! (`AuditLog` waits for changes in `TAKES_AWAY`), then this replica reconciles too.

use std::sync::Arc;

use secrecy::SecretString;
use xerotier_core::{IdGenerator, IdKind, SharedClock, SharedEntropy, UnixMillis};
use xerotier_store::{
    RotationEnd, RotationOutcome, RouterKeyRecord, RouterKeyRotationRecord, RouterKeyStatus, Store,
};

use super::material;
use super::registry::RolloutRegistry;
use super::rollout::{
    KindRollout, RolloutProgress, RotationPhase, RouterKeyKind, RouterKeyMaterial, RouterKeyState,
};
use super::sealing::RouterKeySealer;
use crate::audit::{AuditContext, AuditLog, Change, Target};
use crate::fleet::RouterIdentity;
use crate::metrics::Metrics;
use crate::service_error::ServiceError;
use crate::validate;

/// The kinds this version reports, in display order.
pub const KINDS: [RouterKeyKind; 3] =
    [RouterKeyKind::Mesh, RouterKeyKind::JoinSigning, RouterKeyKind::Tls];

/// One kind as the store has it now.
#[derive(Debug, Clone)]
pub struct KindStatus {
    pub kind: RouterKeyKind,
    pub phase: RotationPhase,
    /// The unfinished rotation, or the last one.
    pub rotation: Option<RouterKeyRotationRecord>,
    pub progress: Option<RolloutProgress>,
    /// Keys not retired, oldest first.
    pub keys: Vec<RouterKeyRecord>,
    /// Why this kind cannot rotate in this build, if it cannot.
    pub unavailable: Option<String>,
}

/// What a phase change does (or, dry run, would do).
#[derive(Debug, Clone)]
pub struct Plan {
    pub kind: RouterKeyKind,
    pub from: RotationPhase,
    pub to: RotationPhase,
    /// The phases that may follow `to`.
    pub then: Vec<RotationPhase>,
    pub effects: Vec<String>,
    pub progress: Option<RolloutProgress>,
}

/// A phase change's answer.
#[derive(Debug, Clone)]
pub struct Advanced {
    pub plan: Plan,
    pub applied: bool,
    pub status: KindStatus,
}

/// What `advance` is asked.
#[derive(Debug, Clone, Copy)]
pub struct PhaseRequest<'a> {
    pub kind: RouterKeyKind,
    pub phase: RotationPhase,
    pub force: bool,
    pub dry_run: bool,
    pub reason: Option<&'a str>,
}

/// The phases allowed after `phase` (`Rollback` included where it is allowed).
pub fn allowed_after(phase: RotationPhase) -> &'static [RotationPhase] {
    use RotationPhase as P;
    match phase {
        P::Standby | P::Rollback => &[P::Init],
        P::Init => &[P::UpdateClients, P::Rollback],
        P::UpdateClients => &[P::UpdateServers, P::Rollback],
        P::UpdateServers => &[P::Standby, P::Rollback],
    }
}

fn phase_value(phase: RotationPhase) -> i64 {
    match phase {
        RotationPhase::Standby | RotationPhase::Rollback => 0,
        RotationPhase::Init => 1,
        RotationPhase::UpdateClients => 2,
        RotationPhase::UpdateServers => 3,
    }
}

fn action(to: RotationPhase) -> &'static str {
    match to {
        RotationPhase::Init => "router_key.init",
        RotationPhase::UpdateClients => "router_key.update_clients",
        RotationPhase::UpdateServers => "router_key.update_servers",
        RotationPhase::Standby => "router_key.complete",
        RotationPhase::Rollback => "router_key.rollback",
    }
}

fn names(phases: &[RotationPhase]) -> String {
    phases.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")
}

fn conflict(message: String) -> ServiceError {
    ServiceError::OperationState(message)
}

/// How long the mesh key a completed rotation replaced is still accepted by the signed key
/// fetch of an agent that was offline for the whole rotation, unless configured
/// (`mesh_key_overlap`; SPEC §9: 7 days).
pub const DEFAULT_MESH_KEY_OVERLAP_MS: i64 = 7 * 24 * 3_600_000;

#[derive(Clone)]
pub struct RouterKeyService {
    inner: Arc<RouterKeyParts>,
}

impl std::fmt::Debug for RouterKeyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterKeyService").field("registry", &self.inner.registry).finish()
    }
}

/// What the service is built from.
#[derive(Debug)]
pub struct RouterKeyParts {
    pub store: Store,
    pub clock: SharedClock,
    pub entropy: SharedEntropy,
    pub ids: IdGenerator,
    pub audit: AuditLog,
    pub metrics: Metrics,
    pub sealer: RouterKeySealer,
    pub registry: RolloutRegistry,
    /// [`DEFAULT_MESH_KEY_OVERLAP_MS`] unless configured.
    pub mesh_key_overlap_ms: i64,
}

impl RouterKeyService {
    pub fn new(parts: RouterKeyParts) -> Self {
        Self { inner: Arc::new(parts) }
    }

    /// The injected clock's now, for views.
    pub fn now(&self) -> UnixMillis {
        self.inner.clock.now_millis()
    }

    fn rollout(&self, kind: RouterKeyKind) -> Option<&Arc<dyn KindRollout>> {
        self.inner.registry.get(kind)
    }

    /// Why `kind` cannot rotate here, if it cannot (shown in its status, and the refusal of
    /// any phase change).
    fn unavailable(&self, kind: RouterKeyKind) -> Option<String> {
        match self.rollout(kind) {
            None => Some(format!("{} key rotation is not available in this build", kind.as_str())),
            Some(rollout) => rollout.unavailable(),
        }
    }

    /// Imports the identity's keys as each kind's `current` key when the kind has none (the
    /// first start after the upgrade; racing replicas import one). From then on `router_keys`
    /// is the source of truth.
    /// `tls_ca` is the router's own TLS CA (none with the operator's certificate or plain
    /// HTTP).
    pub async fn bootstrap(
        &self,
        identity: &RouterIdentity,
        tls_ca: Option<&xerotier_tls::CaMaterial>,
    ) -> Result<(), ServiceError> {
        let now = self.inner.clock.now_millis();
        let mesh_public = identity.mesh_keys.public_z85();
        self.import(RouterKeyKind::Mesh, &mesh_public, &identity.mesh_keys.secret_hex(), None, now)
            .await?;
        let pair = &identity.join_signing_keys;
        self.import(
            RouterKeyKind::JoinSigning,
            &pair.public_hex(),
            &pair.secret_hex(),
            Some(identity.join_signer.kid()),
            now,
        )
        .await?;
        if let Some(ca) = tls_ca {
            self.import(RouterKeyKind::Tls, &ca.cert_pem, &ca.key_pem, None, now).await?;
        }
        Ok(())
    }

    async fn import(
        &self,
        kind: RouterKeyKind,
        public: &str,
        secret: &SecretString,
        expected_kid: Option<&str>,
        now: UnixMillis,
    ) -> Result<(), ServiceError> {
        let kid = material::key_id(kind, public).map_err(ServiceError::internal)?;
        if let Some(expected) = expected_kid
            && expected != kid
        {
            return Err(ServiceError::internal(format!(
                "the stored {} key is {kid}, the identity's is {expected}",
                kind.as_str()
            )));
        }
        let record = RouterKeyRecord {
            secret_sealed: Some(
                self.inner.sealer.seal(&kid, secret).map_err(ServiceError::internal)?,
            ),
            kid,
            kind: kind.as_str().to_string(),
            public_key: public.to_string(),
            state: RouterKeyStatus::Current.as_str().to_string(),
            created_at: now,
            activated_at: Some(now),
            retired_at: None,
            rotation_id: None,
        };
        if self.inner.store.import_router_key(&record).await? {
            tracing::info!(kind = kind.as_str(), kid = %record.kid, "router key imported as current");
        }
        Ok(())
    }

    fn open(&self, record: &RouterKeyRecord) -> Result<Option<RouterKeyMaterial>, ServiceError> {
        let Some(sealed) = &record.secret_sealed else { return Ok(None) };
        let secret = self.inner.sealer.open(&record.kid, sealed).map_err(ServiceError::internal)?;
        Ok(Some(RouterKeyMaterial {
            kid: record.kid.clone(),
            public: record.public_key.clone(),
            secret,
            created_at: record.created_at,
        }))
    }

    /// What every replica must match for `kind`; `None` when the kind has no key yet.
    pub async fn state(&self, kind: RouterKeyKind) -> Result<Option<RouterKeyState>, ServiceError> {
        let keys = self.inner.store.router_keys(kind.as_str()).await?;
        let open = self.inner.store.open_router_key_rotation(kind.as_str()).await?;
        let phase = open
            .as_ref()
            .and_then(|r| RotationPhase::parse(&r.phase))
            .unwrap_or(RotationPhase::Standby);
        let by_state =
            |status: RouterKeyStatus| keys.iter().filter(move |k| k.status() == Some(status));
        let Some(current) = by_state(RouterKeyStatus::Current).next() else { return Ok(None) };
        let Some(current) = self.open(current)? else { return Ok(None) };
        let next = match (&open, by_state(RouterKeyStatus::Next).next()) {
            (Some(_), Some(next)) => self.open(next)?,
            _ => None,
        };
        let mut verify_only = Vec::new();
        for key in by_state(RouterKeyStatus::VerifyOnly) {
            verify_only.extend(self.open(key)?);
        }
        Ok(Some(RouterKeyState {
            kind,
            phase,
            rotation_id: open.map(|r| r.id),
            current,
            next,
            verify_only,
        }))
    }

    /// The TLS CA in force (`current`), as the store has it; `None` before the first import.
    pub async fn current_tls_ca(&self) -> Result<Option<xerotier_tls::CaMaterial>, ServiceError> {
        Ok(self.state(RouterKeyKind::Tls).await?.map(|state| super::tls::ca(&state.current)))
    }

    /// Makes this replica match the store for `kind` (on start, after a change here, on
    /// another replica's signal). Idempotent.
    pub async fn reconcile(&self, kind: RouterKeyKind) -> Result<(), ServiceError> {
        let Some(rollout) = self.rollout(kind) else { return Ok(()) };
        let Some(state) = self.state(kind).await? else { return Ok(()) };
        rollout.reconcile(&state).await.map_err(ServiceError::internal)?;
        self.inner.metrics.set_router_key_phase(kind.as_str(), phase_value(state.phase));
        tracing::debug!(
            kind = kind.as_str(),
            phase = state.phase.as_str(),
            "router key reconciled"
        );
        Ok(())
    }

    /// [`Self::reconcile`] for every kind this build rotates.
    pub async fn reconcile_all(&self) -> Result<(), ServiceError> {
        for kind in KINDS {
            self.reconcile(kind).await?;
        }
        Ok(())
    }

    /// Reconciles the kind a signal names (its kind, or one of its key ids).
    pub async fn on_signal(&self, subject: &str) -> Result<(), ServiceError> {
        let kind = RouterKeyKind::parse(subject)
            .or_else(|| KINDS.into_iter().find(|k| subject.starts_with(k.kid_prefix())));
        match kind {
            Some(kind) => self.reconcile(kind).await,
            None => Ok(()),
        }
    }

    async fn progress(
        &self,
        kind: RouterKeyKind,
        state: Option<&RouterKeyState>,
    ) -> Result<Option<RolloutProgress>, ServiceError> {
        let (Some(rollout), Some(state)) = (self.rollout(kind), state) else { return Ok(None) };
        Ok(Some(rollout.progress(state).await.map_err(ServiceError::internal)?))
    }

    pub async fn status(&self, kind: RouterKeyKind) -> Result<KindStatus, ServiceError> {
        let state = self.state(kind).await?;
        let open = self.inner.store.open_router_key_rotation(kind.as_str()).await?;
        let rotation = match open {
            Some(open) => Some(open),
            None => self.inner.store.last_router_key_rotation(kind.as_str()).await?,
        };
        let progress = self.progress(kind, state.as_ref()).await?;
        let keys = self
            .inner
            .store
            .router_keys(kind.as_str())
            .await?
            .into_iter()
            .filter(|k| k.status() != Some(RouterKeyStatus::Retired))
            .collect();
        let unavailable = self.unavailable(kind);
        Ok(KindStatus {
            kind,
            phase: state.map_or(RotationPhase::Standby, |s| s.phase),
            rotation,
            progress,
            keys,
            unavailable,
        })
    }

    /// Every kind, in display order.
    pub async fn list(&self) -> Result<Vec<KindStatus>, ServiceError> {
        let mut all = Vec::with_capacity(KINDS.len());
        for kind in KINDS {
            all.push(self.status(kind).await?);
        }
        Ok(all)
    }

    /// What moving `kind` to `to` would do, or why it may not happen now.
    pub async fn plan(
        &self,
        kind: RouterKeyKind,
        to: RotationPhase,
        force: bool,
    ) -> Result<Plan, ServiceError> {
        if let Some(why) = self.unavailable(kind) {
            return Err(conflict(why));
        }
        let state = self
            .state(kind)
            .await?
            .ok_or_else(|| conflict(format!("the router has no {} key yet", kind.as_str())))?;
        let from = state.phase;
        let allowed = allowed_after(from);
        if !allowed.contains(&to) {
            return Err(conflict(format!(
                "the {} key is in phase {}; the next phase may be: {}",
                kind.as_str(),
                from.as_str(),
                names(allowed)
            )));
        }
        let progress = self.progress(kind, Some(&state)).await?;
        let ready = progress.is_none_or(|p| p.ready);
        let waiting = |what: &str| {
            let (moved, total) = progress.map_or((0, 0), |p| (p.moved, p.total));
            conflict(format!(
                "not every client has moved yet ({moved}/{total}): {what}; wait (xeroctl router \
                 rotate-keys --auto waits), or repeat with --force to leave the stragglers behind"
            ))
        };
        let now = self.inner.clock.now_millis();
        let mut effects = Vec::new();
        match to {
            RotationPhase::Init => effects.push(format!(
                "generate a new {} key and store it sealed as next; nothing uses it yet",
                kind.as_str()
            )),
            RotationPhase::UpdateClients => effects.push(match kind {
                RouterKeyKind::Mesh => "agents learn the new mesh key and trust both".into(),
                RouterKeyKind::Tls => "agents learn the new CA and trust both; the CA file \
                    (<state-dir>/tls/ca.pem) holds both: give it to every xeroctl before \
                    completing the rotation"
                    .into(),
                RouterKeyKind::JoinSigning => {
                    "every replica accepts join keys signed by the new key too".into()
                }
            }),
            RotationPhase::UpdateServers => {
                if !ready && !force {
                    return Err(waiting("the servers cannot switch yet"));
                }
                effects.push(match kind {
                    RouterKeyKind::Mesh => {
                        "the mesh serves the new key; agents still trust the old one".into()
                    }
                    RouterKeyKind::Tls => "HTTPS presents a certificate of the new CA, also \
                        cross-signed by the old one, so clients that trust only the old CA \
                        keep working; join keys minted from now on pin the new CA"
                        .into(),
                    RouterKeyKind::JoinSigning => {
                        "new join keys are signed with the new key (its kid in their header)".into()
                    }
                });
            }
            RotationPhase::Standby => {
                let old = &state.current.kid;
                match kind {
                    RouterKeyKind::Tls => effects.push(format!(
                        "the new CA becomes current; {old} is no longer presented or \
                         cross-signed and its secret is deleted: clients that trust only it \
                         and join keys that pin it stop working"
                    )),
                    RouterKeyKind::Mesh => {
                        if !ready && !force {
                            return Err(waiting("the old mesh key cannot be dropped yet"));
                        }
                        effects.push(format!(
                            "the new key becomes current; {old} is no longer served, and stays \
                             accepted only by the signed key fetch for {} (agents that missed \
                             the rotation), then is dropped",
                            xerotier_posture::format_duration(self.inner.mesh_key_overlap_ms)
                        ));
                    }
                    RouterKeyKind::JoinSigning => {
                        let usable = self.inner.store.usable_join_keys_signed_by(old, now).await?;
                        effects.push(if usable > 0 {
                            format!("the new key becomes current; {old} stays accepted (verify only) until its {usable} usable join key(s) expire, then is dropped")
                        } else {
                            format!("the new key becomes current; {old} is retired and its secret deleted")
                        });
                    }
                }
            }
            RotationPhase::Rollback => {
                let new = state.next.as_ref().map_or("the new key", |k| k.kid.as_str());
                effects.push(format!("{} stays current; {new} is withdrawn", state.current.kid));
            }
        }
        let then = match to {
            RotationPhase::Rollback => allowed_after(RotationPhase::Standby).to_vec(),
            other => allowed_after(other).to_vec(),
        };
        Ok(Plan { kind, from, to, then, effects, progress })
    }

    /// Moves `kind`'s rotation to `request.phase` (or, `dry_run`, only says what that would do).
    pub async fn advance(
        &self,
        context: &AuditContext,
        request: PhaseRequest<'_>,
    ) -> Result<Advanced, ServiceError> {
        let reason = validate::reason(request.reason)?;
        let kind = request.kind;
        let plan = self.plan(kind, request.phase, request.force).await?;
        if request.dry_run {
            let status = self.status(kind).await?;
            return Ok(Advanced { plan, applied: false, status });
        }
        let state = self
            .state(kind)
            .await?
            .ok_or_else(|| conflict(format!("the router has no {} key yet", kind.as_str())))?;
        let now = self.inner.clock.now_millis();
        match request.phase {
            RotationPhase::Init => self.init(context, &state, reason, request.force, now).await?,
            RotationPhase::UpdateClients | RotationPhase::UpdateServers => {
                self.step(context, &state, request.phase, reason, request.force, now).await?;
            }
            RotationPhase::Standby | RotationPhase::Rollback => {
                self.end(context, &state, request.phase, reason, request.force, now).await?;
            }
        }
        if let Err(err) = self.reconcile(kind).await {
            tracing::error!(kind = kind.as_str(), error = %err, "router key phase committed but not applied here");
        }
        tracing::info!(
            kind = kind.as_str(), from = plan.from.as_str(), to = plan.to.as_str(),
            actor = %context.actor_label(), "router key rotation phase changed"
        );
        let status = self.status(kind).await?;
        Ok(Advanced { plan, applied: true, status })
    }

    fn fingerprint(kind: RouterKeyKind, key: &RouterKeyMaterial) -> String {
        material::key_fingerprint(kind, &key.public).unwrap_or_default()
    }

    async fn init(
        &self,
        context: &AuditContext,
        state: &RouterKeyState,
        reason: Option<&str>,
        force: bool,
        now: UnixMillis,
    ) -> Result<(), ServiceError> {
        let kind = state.kind;
        let new = material::generate(kind, self.inner.entropy.as_ref(), now)
            .map_err(ServiceError::internal)?;
        let event_id = self.inner.ids.next(IdKind::Event);
        let rotation_id = format!("rkr_{}", event_id.get(4..).unwrap_or(&event_id));
        let sealed =
            self.inner.sealer.seal(&new.kid, &new.secret).map_err(ServiceError::internal)?;
        let key = RouterKeyRecord {
            kid: new.kid.clone(),
            kind: kind.as_str().to_string(),
            public_key: new.public.clone(),
            secret_sealed: Some(sealed),
            state: RouterKeyStatus::Next.as_str().to_string(),
            created_at: now,
            activated_at: None,
            retired_at: None,
            rotation_id: Some(rotation_id.clone()),
        };
        let rotation = RouterKeyRotationRecord {
            id: rotation_id.clone(),
            kind: kind.as_str().to_string(),
            phase: RotationPhase::Init.as_str().to_string(),
            old_kid: state.current.kid.clone(),
            new_kid: new.kid.clone(),
            started_at: now,
            phase_changed_at: now,
            ended_at: None,
            outcome: None,
            requested_by: context.actor_key_id().map(str::to_string),
            reason: reason.map(str::to_string),
            open_kind: Some(kind.as_str().to_string()),
        };
        let details = serde_json::json!({
            "rotation_id": rotation_id, "from": "standby", "to": "init",
            "old_kid": state.current.kid, "old_fingerprint": Self::fingerprint(kind, &state.current),
            "new_kid": new.kid,
            "new_fingerprint": material::key_fingerprint(kind, &new.public).unwrap_or_default(),
            "forced": force,
        });
        let target = Target { kind: "router_key", id: Some(kind.as_str()), name: Some(&new.kid) };
        let change =
            Change::new(action(RotationPhase::Init), target).reason(reason).details(details);
        self.inner
            .audit
            .audited(context, change, |entry| {
                let (rotation, key) = (&rotation, &key);
                async move { self.inner.store.start_router_key_rotation(rotation, key, &entry).await }
            })
            .await
    }

    async fn step(
        &self,
        context: &AuditContext,
        state: &RouterKeyState,
        to: RotationPhase,
        reason: Option<&str>,
        force: bool,
        now: UnixMillis,
    ) -> Result<(), ServiceError> {
        let kind = state.kind;
        let rotation_id = state.rotation_id.clone().ok_or_else(|| {
            conflict(format!("no rotation of the {} key is in progress", kind.as_str()))
        })?;
        let next_kid = state.next.as_ref().map(|k| k.kid.clone());
        let details = serde_json::json!({
            "rotation_id": rotation_id, "from": state.phase.as_str(), "to": to.as_str(),
            "old_kid": state.current.kid, "new_kid": next_kid,
            "new_fingerprint": state.next.as_ref().map(|k| Self::fingerprint(kind, k)),
            "forced": force,
        });
        let target =
            Target { kind: "router_key", id: Some(kind.as_str()), name: next_kid.as_deref() };
        let change = Change::new(action(to), target).reason(reason).details(details);
        let from = state.phase.as_str();
        self.inner
            .audit
            .audited(context, change, |entry| {
                let rotation_id = &rotation_id;
                async move {
                    self.inner
                        .store
                        .advance_router_key_rotation(rotation_id, from, to.as_str(), now, &entry)
                        .await
                }
            })
            .await?;
        Ok(())
    }

    async fn end(
        &self,
        context: &AuditContext,
        state: &RouterKeyState,
        to: RotationPhase,
        reason: Option<&str>,
        force: bool,
        now: UnixMillis,
    ) -> Result<(), ServiceError> {
        let kind = state.kind;
        let rotation_id = state.rotation_id.clone().ok_or_else(|| {
            conflict(format!("no rotation of the {} key is in progress", kind.as_str()))
        })?;
        let (outcome, dropped_kid) = match to {
            RotationPhase::Standby => (RotationOutcome::Completed, state.current.kid.clone()),
            _ => (
                RotationOutcome::RolledBack,
                state.next.as_ref().map(|k| k.kid.clone()).unwrap_or_default(),
            ),
        };
        // A join-signing key whose join keys can still enroll stays accepted until they
        // cannot (the sweep drops it). The mesh key a completed rotation replaced stays
        // `verify_only` for the overlap window: never served, but an agent that was offline
        // for the whole rotation may still name it in a signed key fetch. Any other dropped key
        // is retired now.
        let usable = match kind {
            RouterKeyKind::JoinSigning => {
                self.inner.store.usable_join_keys_signed_by(&dropped_kid, now).await?
            }
            _ => 0,
        };
        let overlap = kind == RouterKeyKind::Mesh && to == RotationPhase::Standby;
        let dropped_state = if usable > 0 || overlap {
            RouterKeyStatus::VerifyOnly
        } else {
            RouterKeyStatus::Retired
        };
        let details = serde_json::json!({
            "rotation_id": rotation_id, "from": state.phase.as_str(), "to": to.as_str(),
            "old_kid": state.current.kid, "new_kid": state.next.as_ref().map(|k| k.kid.clone()),
            "new_fingerprint": state.next.as_ref().map(|k| Self::fingerprint(kind, k)),
            "dropped_kid": dropped_kid, "dropped_state": dropped_state.as_str(),
            "usable_join_keys": usable, "forced": force,
        });
        let target =
            Target { kind: "router_key", id: Some(kind.as_str()), name: Some(&dropped_kid) };
        let change = Change::new(action(to), target).reason(reason).details(details);
        let final_phase = match to {
            RotationPhase::Standby => RotationPhase::Standby,
            _ => RotationPhase::Rollback,
        };
        let end = RotationEnd {
            rotation_id: &rotation_id,
            from_phase: state.phase.as_str(),
            final_phase: final_phase.as_str(),
            outcome,
            dropped_state,
            at: now,
        };
        self.inner
            .audit
            .audited(context, change, |entry| async move {
                self.inner.store.end_router_key_rotation(end, &entry).await
            })
            .await?;
        Ok(())
    }

    /// Drops every `verify_only` join-signing key none of whose join keys can still enroll:
    /// retired, secret deleted, audited `router_key.dropped`. Returns how many it dropped.
    pub async fn sweep_once(&self) -> Result<usize, ServiceError> {
        let mut dropped = 0;
        for kind in [RouterKeyKind::JoinSigning, RouterKeyKind::Mesh] {
            dropped += self.sweep_kind(kind).await?;
        }
        Ok(dropped)
    }

    /// Why a `verify_only` key of `kind` may be dropped at `now`, if it may.
    async fn droppable(
        &self,
        kind: RouterKeyKind,
        key: &xerotier_store::RouterKeyRecord,
        now: UnixMillis,
    ) -> Result<Option<&'static str>, ServiceError> {
        Ok(match kind {
            RouterKeyKind::JoinSigning => {
                (self.inner.store.usable_join_keys_signed_by(&key.kid, now).await? == 0)
                    .then_some("its last join key expired, was used or was revoked")
            }
            RouterKeyKind::Mesh => key
                .retired_at
                .is_none_or(|since| now.saturating_sub(since) >= self.inner.mesh_key_overlap_ms)
                .then_some("the overlap window for agents that missed the rotation is over"),
            RouterKeyKind::Tls => None,
        })
    }

    async fn sweep_kind(&self, kind: RouterKeyKind) -> Result<usize, ServiceError> {
        let now = self.inner.clock.now_millis();
        let mut dropped = 0;
        for key in self.inner.store.router_keys(kind.as_str()).await? {
            if key.status() != Some(RouterKeyStatus::VerifyOnly) {
                continue;
            }
            let Some(why) = self.droppable(kind, &key, now).await? else {
                continue;
            };
            let details = serde_json::json!({
                "kid": key.kid,
                "fingerprint": material::key_fingerprint(kind, &key.public_key).unwrap_or_default(),
            });
            let target =
                Target { kind: "router_key", id: Some(kind.as_str()), name: Some(&key.kid) };
            let change =
                Change::new("router_key.dropped", target).reason(Some(why)).details(details);
            let context = AuditContext::default();
            let kid = &key.kid;
            let done = self
                .inner
                .audit
                .audited(&context, change, |entry| async move {
                    self.inner.store.drop_router_key(kid, now, &entry).await
                })
                .await?;
            if done {
                dropped += 1;
                tracing::info!(kind = kind.as_str(), %kid, reason = why, "router key dropped");
            }
        }
        if dropped > 0 {
            self.reconcile(kind).await?;
        }
        Ok(dropped)
    }

    /// Runs [`Self::sweep_once`] every `every` until `shutdown`.
    pub fn spawn_sweep(
        &self,
        every: std::time::Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if let Err(err) = service.sweep_once().await {
                    tracing::warn!(error = %err, "router key sweep failed; retrying");
                }
            }
        })
    }
}
