//! `xeroctl router replicas`: the router replicas sharing one store, and the agent sessions
//! each holds. `xeroctl router keys` / `rotate-keys`: the router's own keys (`router_keys`).

use xerotier_proto::router::ReplicaList;

use super::Ctx;
use crate::cli::RouterCommand;
use crate::client::Call;
use crate::output::{self, Column, col, wide};

/// `-o name` prints `replica/rtr_…`.
const KIND: &str = "replica";

const COLUMNS: [Column; 8] = [
    col("ID"),
    col("STATUS"),
    col("SESSIONS"),
    col("MESH_ADDR"),
    wide("HEARTBEAT_AGE"),
    wide("HTTPS_URL"),
    wide("STARTED"),
    wide("STOPPED"),
];

pub async fn run(ctx: &Ctx, command: RouterCommand) -> anyhow::Result<()> {
    match command {
        RouterCommand::Replicas => replicas(ctx).await,
        RouterCommand::Keys => super::router_keys::list(ctx).await,
        RouterCommand::CaBundle(args) => super::router_keys::ca_bundle(ctx, args).await,
        RouterCommand::RotateKeys(args) => super::router_keys::rotate(ctx, args).await,
    }
}

async fn replicas(ctx: &Ctx) -> anyhow::Result<()> {
    let Some(list) = ctx.client.send::<ReplicaList>(Call::get("/v1/router/replicas")).await? else {
        return Ok(());
    };
    ctx.out.list(
        &list,
        KIND,
        &list.replicas,
        &COLUMNS,
        |r| r.id.clone(),
        |r| {
            vec![
                r.id.clone(),
                r.status.to_string(),
                r.sessions.to_string(),
                r.mesh_addr.clone(),
                age(r.heartbeat_age_ms),
                r.https_url.clone(),
                r.started_at.clone(),
                output::or_dash(r.stopped_at.as_deref()),
            ]
        },
    )
}

/// `850ms`, `12s`, `3m4s`: short enough for a column.
pub(crate) fn age(ms: u64) -> String {
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let secs = ms / 1_000;
    match secs {
        0..60 => format!("{secs}s"),
        60..3_600 => format!("{}m{}s", secs / 60, secs % 60),
        _ => format!("{}h{}m", secs / 3_600, (secs % 3_600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::age;

    #[test]
    fn ages_are_short() {
        assert_eq!(age(850), "850ms");
        assert_eq!(age(12_400), "12s");
        assert_eq!(age(184_000), "3m4s");
        assert_eq!(age(7_380_000), "2h3m");
    }
}
