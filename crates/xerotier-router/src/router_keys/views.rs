//! Domain results of the router key service, as the API shows them.

use xerotier_core::{UnixMillis, format_rfc3339};
use xerotier_proto::router_keys::{
    RouterKeyKindView, RouterKeyProgressView, RouterKeyRotationView, RouterKeyView,
};

use super::material;
use super::rollout::RouterKeyKind;
use super::service::{Advanced, KindStatus, allowed_after};

pub fn kind(status: KindStatus, now: UnixMillis) -> RouterKeyKindView {
    let kind = status.kind;
    let next_phases = if status.unavailable.is_some() {
        Vec::new()
    } else {
        allowed_after(status.phase).iter().map(|p| p.as_str().to_string()).collect()
    };
    RouterKeyKindView {
        kind: kind.as_str().to_string(),
        phase: status.phase.as_str().to_string(),
        next_phases,
        rotation_id: status.rotation.as_ref().map(|r| r.id.clone()),
        last_outcome: status.rotation.as_ref().and_then(|r| r.outcome.clone()),
        progress: status.progress.map(|p| RouterKeyProgressView {
            moved: p.moved,
            total: p.total,
            ready: p.ready,
        }),
        unavailable: status.unavailable,
        keys: status
            .keys
            .into_iter()
            .map(|k| RouterKeyView {
                kind: k.kind,
                fingerprint: material::key_fingerprint(kind, &k.public_key).unwrap_or_default(),
                kid: k.kid,
                state: k.state,
                created_at: format_rfc3339(k.created_at),
                age_seconds: (now - k.created_at).max(0) / 1000,
                activated_at: k.activated_at.map(format_rfc3339),
                certificate: (kind == RouterKeyKind::Tls).then(|| k.public_key.clone()),
            })
            .collect(),
    }
}

pub fn advanced(advanced: Advanced, now: UnixMillis) -> RouterKeyRotationView {
    RouterKeyRotationView {
        applied: advanced.applied,
        from: advanced.plan.from.as_str().to_string(),
        to: advanced.plan.to.as_str().to_string(),
        effects: advanced.plan.effects,
        status: kind(advanced.status, now),
    }
}
