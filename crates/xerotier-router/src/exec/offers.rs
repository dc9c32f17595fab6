//! What the agents connected to this replica offer: their manifests and when each was last
//! heard from. Kept in memory so that `GET /v1/exec/tools` and dispatch cost no database read.

use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use xerotier_core::UnixMillis;
use xerotier_proto::agents::{CapabilityManifest, ManifestTool};
use xerotier_proto::tools::{ToolDetail, ToolOffer, ToolSummary, ToolVariant};

/// An agent is offline once it missed this many lease renewals.
const MISSED_LEASES_BEFORE_OFFLINE: i64 = 3;

#[derive(Debug, Clone)]
pub struct AgentOffer {
    pub agent_id: String,
    pub agent_name: String,
    pub manifest: CapabilityManifest,
    pub lease_interval_ms: i64,
    pub last_seen: UnixMillis,
    /// The workspaces it may be given work in: granted for its current tool definitions, and
    /// only for an approved `execution` agent. What it merely declares is not here.
    pub served: BTreeSet<String>,
}

impl AgentOffer {
    fn online(&self, now: UnixMillis) -> bool {
        now - self.last_seen <= MISSED_LEASES_BEFORE_OFFLINE * self.lease_interval_ms.max(1)
    }

    pub fn serves(&self, tool: &str, workspace: &str) -> bool {
        self.served.contains(workspace)
            && self.manifest.declares_workspace(workspace)
            && self.manifest.tools.iter().any(|t| t.name == tool)
    }

    /// Offers nothing until something is granted.
    fn offers_anything(&self) -> bool {
        !self.served.is_empty()
    }

    pub fn tool(&self, name: &str) -> Option<&ManifestTool> {
        self.manifest.tools.iter().find(|t| t.name == name)
    }

    fn workspace_ids(&self) -> Vec<String> {
        self.served.iter().filter(|w| self.manifest.declares_workspace(w)).cloned().collect()
    }
}

#[derive(Debug, Default)]
pub struct Offers {
    agents: Mutex<HashMap<String, AgentOffer>>,
}

impl Offers {
    pub fn upsert(&self, offer: AgentOffer) {
        self.agents.lock().insert(offer.agent_id.clone(), offer);
    }

    /// Replaces an agent's manifest; false if the agent is not known here (no hello yet).
    pub fn set_manifest(&self, agent_id: &str, manifest: CapabilityManifest) -> bool {
        match self.agents.lock().get_mut(agent_id) {
            Some(offer) => {
                offer.manifest = manifest;
                true
            }
            None => false,
        }
    }

    /// Replaces what an agent may serve (after a decision, or a refresh from the store).
    pub fn set_served(&self, agent_id: &str, served: BTreeSet<String>) {
        if let Some(offer) = self.agents.lock().get_mut(agent_id) {
            offer.served = served;
        }
    }

    /// The agents known here, with the hash of their current tool definitions.
    pub fn definitions(&self) -> Vec<(String, String)> {
        self.agents
            .lock()
            .values()
            .map(|o| (o.agent_id.clone(), o.manifest.definitions_hash()))
            .collect()
    }

    pub fn seen(&self, agent_id: &str, now: UnixMillis) {
        if let Some(offer) = self.agents.lock().get_mut(agent_id) {
            offer.last_seen = offer.last_seen.max(now);
        }
    }

    pub fn remove(&self, agent_id: &str) {
        self.agents.lock().remove(agent_id);
    }

    /// Online agents that serve something.
    pub fn online(&self, now: UnixMillis) -> Vec<AgentOffer> {
        let mut online: Vec<AgentOffer> = self
            .agents
            .lock()
            .values()
            .filter(|o| o.online(now) && o.offers_anything())
            .cloned()
            .collect();
        online.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        online
    }

    /// Every agent known here, online or not.
    pub fn all(&self) -> Vec<AgentOffer> {
        self.agents.lock().values().cloned().collect()
    }

    /// Whether the agent ever said hello here (online or not).
    pub fn knows_agent(&self, agent_id: &str) -> bool {
        self.agents.lock().contains_key(agent_id)
    }

    pub fn is_online(&self, agent_id: &str, now: UnixMillis) -> bool {
        self.agents.lock().get(agent_id).is_some_and(|o| o.online(now))
    }

    /// Every tool an online agent offers, by name; the first agent (by id) describes it, and
    /// `conflict` says when agents declare different definitions of it.
    pub fn tools(&self, now: UnixMillis) -> Vec<ToolSummary> {
        type Seen = (ToolSummary, BTreeSet<String>, BTreeSet<String>);
        let mut tools: BTreeMap<String, Seen> = BTreeMap::new();
        for offer in self.online(now) {
            for tool in &offer.manifest.tools {
                let (summary, workspaces, hashes) =
                    tools.entry(tool.name.clone()).or_insert_with(|| {
                        let summary = ToolSummary {
                            name: tool.name.clone(),
                            description: tool.description.clone(),
                            risk: tool.risk.clone(),
                            timeout_seconds: tool.timeout_seconds,
                            workspaces: Vec::new(),
                            agents: 0,
                            conflict: false,
                        };
                        (summary, BTreeSet::new(), BTreeSet::new())
                    });
                summary.agents += 1;
                workspaces.extend(offer.workspace_ids());
                hashes.insert(tool.definition_hash());
            }
        }
        tools
            .into_values()
            .map(|(mut summary, workspaces, hashes)| {
                summary.workspaces = workspaces.into_iter().collect();
                summary.conflict = hashes.len() > 1;
                summary
            })
            .collect()
    }

    pub fn tool(&self, name: &str, now: UnixMillis) -> Option<ToolDetail> {
        let online = self.online(now);
        let mut offering = online.iter().filter_map(|o| o.tool(name).map(|t| (o, t))).peekable();
        let (_, first) = offering.peek()?;
        let mut detail = ToolDetail {
            name: first.name.clone(),
            description: first.description.clone(),
            risk: first.risk.clone(),
            timeout_seconds: first.timeout_seconds,
            args_schema: first.args_schema.clone(),
            offered_by: Vec::new(),
            variants: Vec::new(),
        };
        for (offer, tool) in offering {
            detail.offered_by.push(ToolOffer {
                agent_id: offer.agent_id.clone(),
                agent_name: offer.agent_name.clone(),
                workspaces: offer.workspace_ids(),
            });
            let hash = tool.definition_hash();
            match detail.variants.iter_mut().find(|v| v.hash == hash) {
                Some(variant) => variant.agents.push(offer.agent_id.clone()),
                None => detail.variants.push(ToolVariant {
                    hash,
                    description: tool.description.clone(),
                    risk: tool.risk.clone(),
                    timeout_seconds: tool.timeout_seconds,
                    args_schema: tool.args_schema.clone(),
                    agents: vec![offer.agent_id.clone()],
                }),
            }
        }
        Some(detail)
    }

    /// Online agents that can run `tool` in `workspace`, each with its own definition of it:
    /// arguments are checked against the definition of the agent that will run them.
    pub fn candidates(
        &self,
        tool: &str,
        workspace: &str,
        now: UnixMillis,
    ) -> Vec<(String, ManifestTool)> {
        self.online(now)
            .into_iter()
            .filter(|o| o.serves(tool, workspace))
            .filter_map(|o| o.tool(tool).cloned().map(|t| (o.agent_id, t)))
            .collect()
    }

    /// Whether any online agent knows the tool, and the workspace (each on its own).
    pub fn knows(&self, tool: &str, workspace: &str, now: UnixMillis) -> (bool, bool) {
        let online = self.online(now);
        let tool_known = online.iter().any(|o| o.tool(tool).is_some());
        let workspace_known =
            online.iter().any(|o| o.workspace_ids().iter().any(|w| w == workspace));
        (tool_known, workspace_known)
    }
}

#[cfg(test)]
mod tests {
    use xerotier_proto::agents::ManifestWorkspace;

    use super::*;

    fn offer(id: &str, tools: &[&str], workspaces: &[&str], last_seen: UnixMillis) -> AgentOffer {
        AgentOffer {
            agent_id: id.into(),
            agent_name: format!("{id}-name"),
            manifest: CapabilityManifest {
                version: 1,
                tools: tools
                    .iter()
                    .map(|t| ManifestTool {
                        name: (*t).into(),
                        description: String::new(),
                        risk: "read".into(),
                        timeout_seconds: 30,
                        args_schema: serde_json::json!({"type": "object"}),
                    })
                    .collect(),
                workspaces: workspaces
                    .iter()
                    .map(|w| ManifestWorkspace {
                        id: (*w).into(),
                        kind: "kubernetes".into(),
                        credentials_ref: None,
                    })
                    .collect(),
            },
            lease_interval_ms: 1000,
            last_seen,
            served: workspaces.iter().map(|w| (*w).to_string()).collect(),
        }
    }

    #[test]
    fn only_online_agents_that_serve_both_tool_and_workspace_are_candidates() {
        let offers = Offers::default();
        offers.upsert(offer("agt_a", &["noop", "get"], &["prod"], 10_000));
        offers.upsert(offer("agt_b", &["noop"], &["staging"], 10_000));
        offers.upsert(offer("agt_c", &["noop"], &["prod"], 1_000));
        let candidates = offers.candidates("noop", "prod", 12_000);
        let agents: Vec<&str> = candidates.iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(agents, ["agt_a"], "agt_c missed three leases");
        assert_eq!(candidates[0].1.name, "noop");
        assert!(offers.candidates("get", "staging", 12_000).is_empty());
        assert_eq!(offers.knows("get", "nowhere", 12_000), (true, false));
    }

    #[test]
    fn tools_merge_offers_of_several_agents() {
        let offers = Offers::default();
        offers.upsert(offer("agt_a", &["noop"], &["prod"], 0));
        offers.upsert(offer("agt_b", &["noop"], &["staging"], 0));
        let tools = offers.tools(0);
        assert_eq!(tools.len(), 1);
        assert_eq!(tools[0].agents, 2);
        assert_eq!(tools[0].workspaces, vec!["prod".to_string(), "staging".to_string()]);
        let detail = offers.tool("noop", 0).unwrap();
        assert_eq!(detail.offered_by.len(), 2);
        assert!(offers.tool("missing", 0).is_none());
    }

    #[test]
    fn a_declared_workspace_that_was_not_granted_offers_nothing() {
        let offers = Offers::default();
        let mut rogue = offer("agt_rogue", &["kubectl-get"], &["kubernetes-prod"], 0);
        rogue.served.clear();
        offers.upsert(rogue);
        assert!(offers.candidates("kubectl-get", "kubernetes-prod", 0).is_empty());
        assert!(offers.tools(0).is_empty(), "its tools are not offered either");
        assert_eq!(offers.knows("kubectl-get", "kubernetes-prod", 0), (false, false));
        offers.set_served("agt_rogue", ["kubernetes-prod".to_string()].into());
        assert_eq!(offers.candidates("kubectl-get", "kubernetes-prod", 0).len(), 1);
    }

    #[test]
    fn different_definitions_of_one_tool_are_shown_never_merged() {
        let offers = Offers::default();
        offers.upsert(offer("agt_a", &["get"], &["prod"], 0));
        let mut loose = offer("agt_b", &["get"], &["prod"], 0);
        loose.manifest.tools[0].args_schema =
            serde_json::json!({"type": "object", "properties": {}});
        offers.upsert(loose);
        let summary = offers.tools(0);
        assert!(summary[0].conflict);
        let detail = offers.tool("get", 0).unwrap();
        assert_eq!(detail.variants.len(), 2);
        assert!(detail.variants.iter().all(|v| v.agents.len() == 1));
        let candidates = offers.candidates("get", "prod", 0);
        assert_ne!(candidates[0].1.args_schema, candidates[1].1.args_schema, "each its own");
    }
}
