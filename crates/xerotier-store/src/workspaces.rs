//! What was decided about each workspace an agent declared: granted (it serves it), a
//! candidate (waiting for an operator), rejected or withdrawn. A decision holds for the tool
//! definitions it was made for; new definitions make the workspace a candidate again.

use xerotier_core::UnixMillis;

use crate::rows::{record, sql};
use crate::{AuditEntry, Store, StoreError};

/// Serves the workspace.
pub const GRANTED: &str = "granted";
/// Declared beyond a grant, or declared with new tool definitions: waits for an operator.
pub const CANDIDATE: &str = "candidate";
pub const REJECTED: &str = "rejected";
pub const WITHDRAWN: &str = "withdrawn";

/// One row of `agent_workspaces`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceDecision {
    pub agent_id: String,
    pub workspace: String,
    /// [`GRANTED`], [`CANDIDATE`], [`REJECTED`] or [`WITHDRAWN`].
    pub state: String,
    /// SHA-256 of the tool definitions the state is about.
    pub definitions_hash: String,
    /// Those tool definitions, JSON.
    pub tools: String,
    /// When this state (for these definitions) began.
    pub since: UnixMillis,
    pub decided_at: Option<UnixMillis>,
    /// An API key id, or a join key id for a grant carried by the join key.
    pub decided_by: Option<String>,
    /// `join_key`, `operator` or `manifest` (declared, nothing decided yet).
    pub source: String,
}

record!(WorkspaceDecision in "agent_workspaces" {
    agent_id, workspace, state, definitions_hash, tools, since, decided_at, decided_by, source,
});

/// A workspace an agent declares, with the definitions of the tools it would run there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredWorkspace {
    pub workspace: String,
    pub definitions_hash: String,
    pub tools: String,
}

/// What an operator decides about an agent's candidate workspaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Candidates (and rejected or withdrawn ones) become granted; a pending agent is approved.
    Approve,
    /// Candidates become rejected; a pending agent, when no workspace is named, is rejected.
    Reject,
    /// A granted workspace is taken back.
    Withdraw,
}

impl Decision {
    fn applies_to(self) -> &'static [&'static str] {
        match self {
            Decision::Approve => &[CANDIDATE, REJECTED, WITHDRAWN],
            Decision::Reject => &[CANDIDATE],
            Decision::Withdraw => &[GRANTED],
        }
    }

    fn to_state(self) -> &'static str {
        match self {
            Decision::Approve => GRANTED,
            Decision::Reject => REJECTED,
            Decision::Withdraw => WITHDRAWN,
        }
    }
}

/// What [`Store::declare_workspaces`] changed: the workspace and its new state.
pub type Transition = (String, String);

impl Store {
    /// Records what an agent declares (at enrollment, or in a later manifest). A workspace seen
    /// for the first time is granted when `grant` (the join key's, at enrollment only) names
    /// it, else a candidate; a known one whose definitions changed becomes a candidate again,
    /// whatever was decided before. Returns what changed.
    pub async fn declare_workspaces(
        &self,
        agent_id: &str,
        declared: &[DeclaredWorkspace],
        grant: Option<(&str, &[String])>,
        now: UnixMillis,
    ) -> Result<Vec<Transition>, StoreError> {
        let mut tx = self.begin_write().await?;
        let existing: Vec<WorkspaceDecision> = crate::rows::all(
            &sqlx::query(sql::<WorkspaceDecision>(
                "SELECT {cols} FROM {table} WHERE agent_id = $1",
            ))
            .bind(agent_id)
            .fetch_all(&mut *tx)
            .await?,
        )?;
        let mut changed = Vec::new();
        for declared in declared {
            let known = existing.iter().find(|d| d.workspace == declared.workspace);
            match known {
                Some(known) if known.definitions_hash == declared.definitions_hash => {}
                Some(_) => {
                    sqlx::query(
                        "UPDATE agent_workspaces SET state = $3, definitions_hash = $4, tools = $5,
                             since = $6, decided_at = NULL, decided_by = NULL, source = 'manifest'
                         WHERE agent_id = $1 AND workspace = $2",
                    )
                    .bind(agent_id)
                    .bind(&declared.workspace)
                    .bind(CANDIDATE)
                    .bind(&declared.definitions_hash)
                    .bind(&declared.tools)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    changed.push((declared.workspace.clone(), CANDIDATE.to_string()));
                }
                None => {
                    let granted_by = grant
                        .filter(|(_, workspaces)| workspaces.contains(&declared.workspace))
                        .map(|(join_key, _)| join_key);
                    let (state, source) = if granted_by.is_some() {
                        (GRANTED, "join_key")
                    } else {
                        (CANDIDATE, "manifest")
                    };
                    sqlx::query(
                        "INSERT INTO agent_workspaces (agent_id, workspace, state,
                             definitions_hash, tools, since, decided_at, decided_by, source)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    )
                    .bind(agent_id)
                    .bind(&declared.workspace)
                    .bind(state)
                    .bind(&declared.definitions_hash)
                    .bind(&declared.tools)
                    .bind(now)
                    .bind(granted_by.map(|_| now))
                    .bind(granted_by)
                    .bind(source)
                    .execute(&mut *tx)
                    .await?;
                    changed.push((declared.workspace.clone(), state.to_string()));
                }
            }
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Every workspace decision about one agent, by workspace.
    pub async fn agent_workspaces(
        &self,
        agent_id: &str,
    ) -> Result<Vec<WorkspaceDecision>, StoreError> {
        self.fetch_all(
            sqlx::query(sql::<WorkspaceDecision>(
                "SELECT {cols} FROM {table} WHERE agent_id = $1 ORDER BY workspace",
            ))
            .bind(agent_id),
        )
        .await
    }

    /// Every decision about live agents in `state` (e.g. the candidates), by agent.
    pub async fn workspaces_in_state(
        &self,
        state: &str,
    ) -> Result<Vec<WorkspaceDecision>, StoreError> {
        self.fetch_all(
            sqlx::query(sql::<WorkspaceDecision>(
                "SELECT {cols} FROM {table} WHERE state = $1
                   AND agent_id IN (SELECT id FROM agents WHERE revoked_at IS NULL)
                 ORDER BY agent_id, workspace",
            ))
            .bind(state),
        )
        .await
    }

    /// Live agents waiting, as a whole, for an operator's approval.
    pub async fn pending_agents(&self) -> Result<Vec<crate::AgentRecord>, StoreError> {
        self.fetch_all(sqlx::query(sql::<crate::AgentRecord>(
            "SELECT {cols} FROM {table} WHERE approval = 'pending' AND revoked_at IS NULL ORDER BY id",
        )))
        .await
    }

    /// The granted workspaces of every live agent that may be given work at all (approved,
    /// role `execution`): what each replica's dispatch is allowed to use.
    pub async fn servable_grants(&self) -> Result<Vec<WorkspaceDecision>, StoreError> {
        self.fetch_all(sqlx::query(sql::<WorkspaceDecision>(
            "SELECT {cols} FROM {table} WHERE state = 'granted'
               AND agent_id IN (SELECT id FROM agents WHERE revoked_at IS NULL
                                AND approval = 'approved' AND role = 'execution'
                                AND quarantined_at IS NULL)
             ORDER BY agent_id, workspace",
        )))
        .await
    }

    /// Applies an operator's decision to one workspace of an agent (or all that the decision
    /// applies to), with its audit record, in one transaction. `NotFound` when nothing was in a
    /// state the decision applies to (nothing is written then).
    pub async fn decide_workspaces(
        &self,
        agent_id: &str,
        workspace: Option<&str>,
        decision: Decision,
        decided_by: Option<&str>,
        now: UnixMillis,
        audit: &AuditEntry,
    ) -> Result<Vec<WorkspaceDecision>, StoreError> {
        let mut tx = self.begin_write().await?;
        let states = decision.applies_to();
        let rows = sqlx::query(sql::<WorkspaceDecision>(
            "UPDATE {table} SET state = $1, decided_at = $2, decided_by = $3, source = 'operator'
             WHERE agent_id = $4 AND ($5 IS NULL OR workspace = $5)
               AND state IN ($6, $7, $8)
               AND agent_id IN (SELECT id FROM agents WHERE revoked_at IS NULL)
             RETURNING {cols}",
        ))
        .bind(decision.to_state())
        .bind(now)
        .bind(decided_by)
        .bind(agent_id)
        .bind(workspace)
        .bind(states[0])
        .bind(states.get(1).copied().unwrap_or(states[0]))
        .bind(states.get(2).copied().unwrap_or(states[0]))
        .fetch_all(&mut *tx)
        .await?;
        let changed: Vec<WorkspaceDecision> = crate::rows::all(&rows)?;
        // The agent as a whole: approving anything approves a pending agent; rejecting all of
        // a pending agent rejects it.
        let agent_approval = match (decision, workspace) {
            (Decision::Approve, _) => Some("approved"),
            (Decision::Reject, None) => Some("rejected"),
            _ => None,
        };
        let mut agent_changed = false;
        if let Some(approval) = agent_approval {
            let updated = sqlx::query(
                "UPDATE agents SET approval = $2
                 WHERE id = $1 AND approval = 'pending' AND revoked_at IS NULL",
            )
            .bind(agent_id)
            .bind(approval)
            .execute(&mut *tx)
            .await?;
            agent_changed = updated.rows_affected() > 0;
        }
        if changed.is_empty() && !agent_changed {
            tx.rollback().await?;
            let what = match workspace {
                Some(w) => {
                    format!("{} workspace {w} on agent {agent_id}", decision_object(decision))
                }
                None => format!("{} workspace on agent {agent_id}", decision_object(decision)),
            };
            return Err(StoreError::NotFound(what));
        }
        audit.commit_with(tx).await?;
        Ok(changed)
    }
}

fn decision_object(decision: Decision) -> &'static str {
    match decision {
        Decision::Approve | Decision::Reject => "candidate",
        Decision::Withdraw => "granted",
    }
}
