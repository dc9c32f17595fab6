//! The tools online agents offer: `GET /v1/exec/tools[/{name}]`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The risk classes a tool declares.
pub const RISKS: [&str; 4] = ["read", "write", "destructive", "irreversible"];

/// A tool some online agent offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ToolSummary {
    pub name: String,
    pub description: String,
    /// `read`, `write`, `destructive` or `irreversible`.
    pub risk: String,
    pub timeout_seconds: u64,
    /// Workspaces in which some online agent can run it.
    pub workspaces: Vec<String>,
    /// How many online agents offer it.
    pub agents: usize,
    /// The agents offering it declare different definitions (see its variants).
    pub conflict: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ToolList {
    pub tools: Vec<ToolSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ToolOffer {
    pub agent_id: String,
    pub agent_name: String,
    pub workspaces: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ToolDetail {
    pub name: String,
    pub description: String,
    pub risk: String,
    pub timeout_seconds: u64,
    /// The JSON schema its arguments are validated against.
    #[schema(value_type = Object)]
    pub args_schema: serde_json::Value,
    pub offered_by: Vec<ToolOffer>,
    /// Each distinct definition and the agents that declare it; never merged.
    pub variants: Vec<ToolVariant>,
}

/// One definition of a tool, as some agents declare it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ToolVariant {
    /// SHA-256 of the definition.
    pub hash: String,
    pub description: String,
    pub risk: String,
    pub timeout_seconds: u64,
    #[schema(value_type = Object)]
    pub args_schema: serde_json::Value,
    pub agents: Vec<String>,
}
