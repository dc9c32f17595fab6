use anyhow::bail;
use futures::StreamExt;
use serde_json::json;
use xerotier_proto::Page;
use xerotier_proto::events::AgentEventView;
use xerotier_proto::rotation::RotationView;
use xerotier_proto::status::RotationStatus;

use crate::cli::OutputFormat;
use crate::client::{Call, Client};
use crate::output;

pub async fn curve_rotate(
    client: &Client,
    format: OutputFormat,
    id: &str,
    reason: &str,
    wait: bool,
) -> anyhow::Result<()> {
    if !id.starts_with("agt_") {
        bail!("{id:?} is not an agent id (agt_…); see `xeroctl agents`");
    }
    let call =
        Call::post(format!("/v1/management/agents/{id}/curve-rotate"), json!({ "reason": reason }));
    let Some(rotation) = client.send::<RotationView>(call).await? else { return Ok(()) };
    match format {
        OutputFormat::Json => output::json(&json!({
            "request_id": rotation.request_id,
            "agent_id": rotation.agent_id,
            "status": rotation.status,
            "monitor": rotation.monitor,
        }))?,
        OutputFormat::Table => {
            println!("request_id: {}", rotation.request_id);
            println!("agent_id: {}", rotation.agent_id);
            println!("status: {}", rotation.status);
            println!("monitor: {}", rotation.monitor);
        }
    }
    if !wait {
        return Ok(());
    }
    let outcome = if rotation.status == RotationStatus::Pending {
        follow_to_terminal(client, &rotation).await?
    } else {
        rotation
    };
    report_terminal(format, &outcome)
}

/// Follows the agent's events until this rotation's terminal event, then reads the final state.
async fn follow_to_terminal(
    client: &Client,
    rotation: &RotationView,
) -> anyhow::Result<RotationView> {
    let mut stream = Box::pin(client.event_stream(&rotation.monitor).await?);
    while let Some(item) = stream.next().await {
        let event = match item {
            Ok(event) => event,
            Err(err) => bail!("the events stream broke: {err}"),
        };
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
            return client.fetch(Call::get(path)).await;
        }
    }
    bail!(
        "the events stream ended before the rotation did; check `xeroctl agents {} --events`",
        rotation.agent_id
    )
}

fn report_terminal(format: OutputFormat, rotation: &RotationView) -> anyhow::Result<()> {
    if format == OutputFormat::Json {
        output::json(rotation)?;
    } else {
        println!("status: {}", rotation.status);
        if let Some(reason) = &rotation.failure_reason {
            println!("failure_reason: {reason}");
        }
        if let Some(fingerprint) = &rotation.new_key_fingerprint {
            println!("new_key_fingerprint: {fingerprint}");
        }
    }
    if rotation.status == RotationStatus::Failed {
        bail!(
            "CURVE rotation {} failed: {}. Treat this as a containment trigger: pivot to incident \
             response (for example `xeroctl agents revoke-credentials {}`) before retrying.",
            rotation.request_id,
            rotation.failure_reason.as_deref().unwrap_or("unknown reason"),
            rotation.agent_id
        );
    }
    Ok(())
}

fn print_event(format: OutputFormat, event: &AgentEventView) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string(event)?),
        OutputFormat::Table => println!(
            "{}  {:<22} {:<34} {}",
            event.at,
            event.event_type,
            event.request_id.as_deref().unwrap_or("-"),
            event.details.as_ref().map(|d| d.to_string()).unwrap_or_default()
        ),
    }
    Ok(())
}

pub async fn events(
    client: &Client,
    format: OutputFormat,
    id: &str,
    follow: bool,
    limit: Option<u32>,
    after: Option<String>,
) -> anyhow::Result<()> {
    let path = format!("/v1/management/agents/{id}/events");
    if follow {
        let mut stream = Box::pin(client.event_stream(&path).await?);
        while let Some(item) = stream.next().await {
            let event = item.map_err(|e| anyhow::anyhow!("the events stream broke: {e}"))?;
            if let Ok(view) = serde_json::from_str::<AgentEventView>(&event.data) {
                print_event(format, &view)?;
            }
        }
        return Ok(());
    }
    let call = Call::get(path).query("limit", limit).query("after", after);
    let Some(page) = client.send::<Page<AgentEventView>>(call).await? else { return Ok(()) };
    if format == OutputFormat::Json {
        return output::json(&page);
    }
    for event in &page.data {
        print_event(format, event)?;
    }
    output::more_hint(page.next_after.as_deref());
    Ok(())
}
