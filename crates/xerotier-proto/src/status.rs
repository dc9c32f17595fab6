//! The states a credential or an agent can be in. On the wire each is its lowercase string
//! (`active`, `pending`, …), exactly as before these were enums; code matches on the enum.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(text: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|s| s.as_str() == text)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// An API key at a given time.
    ApiKeyStatus { Active => "active", Expired => "expired", Revoked => "revoked" }
);

wire_enum!(
    /// An agent as the fleet view shows it.
    AgentStatus {
        Active => "active",
        Disconnected => "disconnected",
        Revoked => "revoked",
        Quarantined => "quarantined",
    }
);

wire_enum!(
    /// A router replica as the registry shows it: `live` (its lease runs, by the database's
    /// clock), `expired` (its lease ran out: dead or cut off) or `stopped` (it said so).
    ReplicaStatus { Live => "live", Expired => "expired", Stopped => "stopped" }
);

wire_enum!(
    /// A join key at a given time.
    JoinKeyState { Active => "active", Used => "used", Revoked => "revoked", Expired => "expired" }
);

wire_enum!(
    /// Whether an agent may be given work at all: `pending` while its join key's
    /// `require_approval` waits for an operator.
    AgentApproval { Approved => "approved", Pending => "pending", Rejected => "rejected" }
);

wire_enum!(
    /// What was decided about a workspace an agent declared.
    WorkspaceState {
        Granted => "granted",
        Candidate => "candidate",
        Rejected => "rejected",
        Withdrawn => "withdrawn",
    }
);

wire_enum!(
    /// A CURVE rotation: `pending` until it ends `promoted` or `failed`.
    RotationStatus { Pending => "pending", Promoted => "promoted", Failed => "failed" }
);

wire_enum!(
    /// What a fleet-wide operation does.
    OperationKind {
        CurveRotate => "curve_rotate",
        RevokeJoinKeys => "revoke_join_keys",
        RevokeAgents => "revoke_agents",
    }
);

wire_enum!(
    /// A fleet-wide operation: `running` until it ends `completed`, `cancelled` or `failed`;
    /// `halted` (failures exceeded `max_failures`) until resumed or cancelled.
    OperationStatus {
        Running => "running",
        Halted => "halted",
        Completed => "completed",
        Cancelled => "cancelled",
        Failed => "failed",
    }
);

wire_enum!(
    /// One target of an operation's plan.
    TargetStatus {
        Pending => "pending",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Skipped => "skipped",
        Cancelled => "cancelled",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_is_the_lowercase_string() {
        for status in RotationStatus::ALL {
            let json = serde_json::to_string(status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
            assert_eq!(RotationStatus::parse(status.as_str()), Some(*status));
        }
        assert_eq!(serde_json::to_string(&AgentStatus::Disconnected).unwrap(), "\"disconnected\"");
        assert_eq!(JoinKeyState::parse("used"), Some(JoinKeyState::Used));
        assert_eq!(ApiKeyStatus::parse("nope"), None);
    }
}

wire_enum!(
    /// A webhook delivery: `pending` (waiting for its next attempt), `delivered` (a 2xx
    /// answer) or `failed` (every attempt used).
    WebhookDeliveryStatus { Pending => "pending", Delivered => "delivered", Failed => "failed" }
);
