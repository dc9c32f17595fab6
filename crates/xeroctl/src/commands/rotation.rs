//! `xeroctl agents curve-rotate agt_… [--reason R] [--wait]`.

use std::time::Duration;

use serde_json::json;
use xerotier_proto::events::AgentEventView;
use xerotier_proto::rotation::RotationView;
use xerotier_proto::status::RotationStatus;

use super::Ctx;
use super::agents::check_agent_id;
use crate::client::Call;
use crate::exit::{self, CliError};
use crate::sse::Resumable;

/// `-o name` prints `rotation/<request id>`.
const KIND: &str = "rotation";
/// A router restart or a brief network cut should not end a wait; past this long without the
/// events stream the operator is better served by an error.
const RETRY_WINDOW: Duration = Duration::from_secs(30);

pub async fn curve_rotate(ctx: &Ctx, id: &str, reason: &str, wait: bool) -> anyhow::Result<()> {
    check_agent_id(id)?;
    let call =
        Call::post(format!("/v1/management/agents/{id}/curve-rotate"), json!({ "reason": reason }));
    let Some(rotation) = ctx.client.send::<RotationView>(call).await? else { return Ok(()) };
    let summary = json!({
        "request_id": rotation.request_id,
        "agent_id": rotation.agent_id,
        "status": rotation.status,
        "monitor": rotation.monitor,
    });
    ctx.out.object(&summary, KIND, &rotation.request_id, || {
        println!("request_id: {}", rotation.request_id);
        println!("agent_id: {}", rotation.agent_id);
        println!("status: {}", rotation.status);
        println!("monitor: {}", rotation.monitor);
        Ok(())
    })?;
    if !wait {
        return Ok(());
    }
    let outcome = if rotation.status == RotationStatus::Pending {
        follow_to_terminal(ctx, &rotation).await?
    } else {
        rotation
    };
    report_terminal(ctx, &outcome)
}

/// Follows the agent's events until this rotation's terminal event, then reads the final state.
async fn follow_to_terminal(ctx: &Ctx, rotation: &RotationView) -> anyhow::Result<RotationView> {
    let mut stream = Resumable::new(&ctx.client, &rotation.monitor, None, Some(RETRY_WINDOW));
    stream.open().await?;
    loop {
        let event = stream.next().await?;
        let Ok(view) = serde_json::from_str::<AgentEventView>(&event.data) else { continue };
        if view.request_id.as_deref() != Some(rotation.request_id.as_str()) {
            continue;
        }
        eprintln!("{}  {}", view.at, view.event_type);
        if matches!(view.event_type.as_str(), "rotation_promoted" | "rotation_failed") {
            let path = format!(
                "/v1/management/agents/{}/curve-rotations/{}",
                rotation.agent_id, rotation.request_id
            );
            return ctx.client.fetch(Call::get(path)).await;
        }
    }
}

fn report_terminal(ctx: &Ctx, rotation: &RotationView) -> anyhow::Result<()> {
    ctx.out.object(rotation, KIND, &rotation.request_id, || {
        println!("status: {}", rotation.status);
        if let Some(reason) = &rotation.failure_reason {
            println!("failure_reason: {reason}");
        }
        if let Some(fingerprint) = &rotation.new_key_fingerprint {
            println!("new_key_fingerprint: {fingerprint}");
        }
        Ok(())
    })?;
    if rotation.status == RotationStatus::Failed {
        eprintln!(
            "error: CURVE rotation {} failed: {}. Treat this as a containment trigger: pivot to \
             incident response (for example `xeroctl agents revoke-credentials {}`) before \
             retrying.",
            rotation.request_id,
            rotation.failure_reason.as_deref().unwrap_or("unknown reason"),
            rotation.agent_id
        );
        return Err(CliError::Exit(exit::FAILURE).into());
    }
    Ok(())
}
