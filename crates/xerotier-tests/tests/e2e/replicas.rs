//! Several router replicas on one PostgreSQL: membership and failover (issue 12 part 4).
//!
//! Each replica registers itself (id, HTTPS and mesh addresses, lease); `GET
//! /v1/router/replicas` and `xeroctl router replicas` list them with the sessions each holds;
//! an agent learns every live replica's mesh address at enrollment and after every hello,
//! keeps them next to its identity, and when its replica is killed it connects to another
//! within 5 s, where the fleet view shows it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::exec::Exec;
use crate::fleet_harness::enrolled_xem;
use crate::harness::{Router, backends, eventually, xeroctl};

/// Anything asynchronous but failover itself: replicas registering, renewals flushed.
const SETTLE: Duration = Duration::from_secs(20);
/// SPEC: an agent whose replica dies is connected to another within this.
const FAILOVER: Duration = Duration::from_secs(5);

async fn replicas(router: &Router) -> Vec<Value> {
    let list = router.get_json("/v1/router/replicas").await;
    list["replicas"].as_array().cloned().unwrap_or_else(|| panic!("not a replica list: {list}"))
}

/// The registry's row of the replica serving `mesh_addr`.
fn row_of<'a>(list: &'a [Value], router: &Router) -> Option<&'a Value> {
    let addr = router.mesh_addr();
    list.iter().find(|r| r["mesh_addr"] == addr.as_str())
}

/// Waits until `via` lists every router in `all` as live; returns their replica ids in order.
async fn wait_registered(via: &Router, all: &[&Router]) -> Vec<String> {
    eventually("every replica to be registered and live", SETTLE, || async {
        let list = replicas(via).await;
        all.iter()
            .map(|r| {
                row_of(&list, r)
                    .filter(|row| row["status"] == "live")
                    .and_then(|row| row["id"].as_str())
                    .map(str::to_string)
            })
            .collect::<Option<Vec<_>>>()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_are_listed_and_an_agent_fails_over_when_its_replica_is_killed() {
    for backend in backends().await.into_iter().filter(|b| !b.is_sqlite()) {
        let mut first = Router::start(&backend).await;
        let second = first.replica().await;
        let third = first.replica().await;
        let ids = wait_registered(&second, &[&first, &second, &third]).await;
        for id in &ids {
            assert!(id.starts_with("rtr_"), "{ids:?}");
        }
        let list = replicas(&third).await;
        let row = row_of(&list, &second).expect("the second replica's row");
        assert!(row["https_url"].as_str().is_some_and(|u| u.contains("127.0.0.1")), "{row}");
        assert!(row["heartbeat_age_ms"].as_u64().is_some_and(|age| age < 10_000), "{row}");
        assert!(row["started_at"].is_string() && row["stopped_at"].is_null(), "{row}");

        // An agent enrolled through the first replica, whose session is there.
        let (xem, agent_id) = enrolled_xem(&first, "xem-failover").await;
        let addrs = [first.mesh_addr(), second.mesh_addr(), third.mesh_addr()];
        // It knows every replica: the enrollment answer and the hello's answer said so, and
        // it kept them (0600) next to its identity.
        let saved = xem.state_dir().join("replicas.json");
        eventually("the XEM to keep every replica's mesh address", SETTLE, || async {
            let text = std::fs::read_to_string(&saved).ok()?;
            let file: Value = serde_json::from_str(&text).ok()?;
            let kept: Vec<&str> =
                file["mesh_addrs"].as_array()?.iter().filter_map(Value::as_str).collect();
            addrs.iter().all(|a| kept.contains(&a.as_str())).then_some(())
        })
        .await;
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&saved).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "replicas.json is the agent's own");

        // The fleet view (any replica's) shows it on the first; the first counts its session.
        eventually("the agent to be shown on the first replica", SETTLE, || async {
            let agent = third.agent(&agent_id).await;
            (agent["replica_id"] == ids[0].as_str()).then_some(())
        })
        .await;
        eventually("the first replica to count one session", SETTLE, || async {
            let list = replicas(&second).await;
            (row_of(&list, &first)?["sessions"] == 1).then_some(())
        })
        .await;
        let ctl = xeroctl(&second, &["router", "replicas", "-o", "json"]).success().json();
        let listed: Vec<&str> = ctl["replicas"]
            .as_array()
            .expect("replicas")
            .iter()
            .filter_map(|r| r["id"].as_str())
            .collect();
        for id in &ids {
            assert!(listed.contains(&id.as_str()), "{id} in {ctl}");
        }
        let table = xeroctl(&second, &["router", "replicas"]).success();
        let header: Vec<&str> =
            table.stdout.lines().next().unwrap_or_default().split_whitespace().collect();
        assert_eq!(header, ["ID", "STATUS", "SESSIONS", "MESH_ADDR"]);
        let first_row = table.row(&ids[0]);
        assert_eq!(first_row[1..3], ["live".to_string(), "1".to_string()], "{}", table.stdout);
        let names = xeroctl(&second, &["router", "replicas", "-o", "name"]).success();
        assert!(
            names.stdout.lines().any(|l| l == format!("replica/{}", ids[0])),
            "{}",
            names.stdout
        );
        let wide = xeroctl(&second, &["agents", "-o", "wide"]).success();
        assert!(wide.stdout.lines().next().unwrap_or_default().contains("REPLICA"));
        assert!(wide.row(&agent_id).contains(&ids[0]), "{}", wide.stdout);

        // kill -9 of the agent's replica: it is online on another within 5 s.
        first.kill();
        let killed = Instant::now();
        let moved_to =
            eventually("the agent to fail over to another replica", FAILOVER, || async {
                let agent = second.agent(&agent_id).await;
                let replica = agent["replica_id"].as_str()?.to_string();
                (replica != ids[0] && agent["status"] == "active").then_some(replica)
            })
            .await;
        eprintln!("failed over to {moved_to} in {:?}", killed.elapsed());
        assert!(ids[1..].contains(&moved_to), "{moved_to} is one of the live replicas {ids:?}");
        let on_new = if moved_to == ids[1] { &second } else { &third };
        // The replica it moved to holds its session: it answers its lease renewals there.
        let before = on_new.agent(&agent_id).await["last_heartbeat_at"].clone();
        eventually("lease renewals on the new replica", SETTLE, || async {
            let agent = on_new.agent(&agent_id).await;
            (agent["last_heartbeat_at"] != before && agent["replica_id"] == moved_to.as_str())
                .then_some(())
        })
        .await;
        // The killed replica's lease runs out: shown expired, its agents no longer counted.
        eventually("the killed replica to be shown expired", SETTLE, || async {
            let list = replicas(&second).await;
            let row = list.iter().find(|r| r["id"] == ids[0].as_str())?;
            (row["status"] == "expired").then_some(())
        })
        .await;
        eventually("the new replica to count the session", SETTLE, || async {
            let list = replicas(&second).await;
            let row = list.iter().find(|r| r["id"] == moved_to.as_str())?;
            (row["sessions"] == 1).then_some(())
        })
        .await;
        assert!(xem.logs().contains("failing over"), "{}", xem.logs());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_stops_cleanly_is_shown_stopped() {
    for backend in backends().await.into_iter().filter(|b| !b.is_sqlite()) {
        let first = Router::start(&backend).await;
        let mut second = first.replica().await;
        let ids = wait_registered(&first, &[&first, &second]).await;
        let status = second.stop_with_sigterm();
        assert!(status.success(), "{status}");
        let list = replicas(&first).await;
        let row = list.iter().find(|r| r["id"] == ids[1].as_str()).expect("the stopped replica");
        assert_eq!(row["status"], "stopped", "{row}");
        assert!(row["stopped_at"].is_string(), "{row}");
    }
}

/// An invocation running when its agent's replica is killed is not lost and not run twice:
/// the agent keeps running it, fails over, lists it in its lease renewals to the new replica
/// and reports its end there, which records it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invocation_running_when_its_replica_is_killed_ends_once_through_another() {
    for backend in backends().await.into_iter().filter(|b| !b.is_sqlite()) {
        let mut first = Router::start(&backend).await;
        let second = first.replica().await;
        wait_registered(&second, &[&first, &second]).await;
        let (_xem, agent_id) =
            crate::exec::exec_fleet(&first, "xem-running", "apiVersion: v1\n", |_| {}).await;
        first.wait_tool("sleep").await;
        let created = first.invoke(first.admin_key(), "sleep", json!({ "seconds": 3 })).await;
        let id = created["id"].as_str().expect("invocation id").to_string();
        first.wait_status(&id, &["running"]).await;

        first.kill();
        let ended = second.wait_status(&id, &["succeeded", "failed", "timed_out"]).await;
        assert_eq!(ended["status"], "succeeded", "[{}] {ended}", backend.name);
        assert_eq!(ended["agent_id"], agent_id.as_str(), "{ended}");
        assert!(ended["error"].is_null(), "{ended}");
        // Recorded once: it stays as recorded (a re-sent result changes nothing).
        let finished_at = ended["finished_at"].clone();
        eventually("the agent to renew its lease on the new replica", SETTLE, || async {
            let agent = second.agent(&agent_id).await;
            (agent["status"] == "active" && agent["replica_id"].is_string()).then_some(())
        })
        .await;
        let again = second.invocation(&id).await;
        assert_eq!(
            (again["status"].clone(), again["finished_at"].clone()),
            (json!("succeeded"), finished_at)
        );
    }
}
