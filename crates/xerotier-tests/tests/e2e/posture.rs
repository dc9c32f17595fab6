//! Credential posture end to end: a real router (with a small `api_key` max age in its config
//! file), one real XEM with a workspace credential file, and `xeroctl credentials`; the region
//! filter over agents and join keys of two regions; and states that flip as the router's clock
//! moves across restarts (its test-only clock offset).

use std::time::Duration;

use serde_json::{Value, json};
use xerotier_core::parse_rfc3339;

use crate::exec::{CREDENTIAL_FILE, exec_fleet};
use crate::fleet_harness::enroll;
use crate::harness::{
    EXAMPLE_WORKSPACE, Router, RouterOptions, backends, eventually, xeroctl, xeroctl_with_key,
};

const SETTLE: Duration = Duration::from_secs(20);

/// A router whose API keys are due after 2 s and whose monitor runs every second.
async fn posture_router(backend: &crate::harness::Backend) -> (Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("router.yaml");
    std::fs::write(
        &file,
        "credential_policy:\n  max_age: { api_key: 2s }\n  due_soon: 1s\n  \
         cryptoperiod_ref: \"SEC-POL-7 §3\"\n  monitor_interval: 1s\n",
    )
    .unwrap();
    let options = RouterOptions {
        extra_args: vec!["--config".into(), file.to_str().unwrap().into()],
        ..RouterOptions::default()
    };
    (Router::start_with(backend, options).await, dir)
}

fn rows(report: &Value) -> Vec<Value> {
    report["credentials"].as_array().unwrap().clone()
}

fn kinds(report: &Value) -> Vec<String> {
    let mut kinds: Vec<String> =
        rows(report).iter().map(|r| r["kind"].as_str().unwrap().to_string()).collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

#[tokio::test]
async fn the_posture_report_lists_every_kind_and_check_fails_on_overdue() {
    for backend in backends().await {
        let (router, _config) = posture_router(&backend).await;
        let (_xem, agent) = exec_fleet(&router, "xem-posture", "apiVersion: v1\n", |_| {}).await;
        let join_key = router.mint_join_key("spare").await;
        let report = eventually("a row of every kind", SETTLE, || async {
            let report = router.get_json("/v1/management/credentials").await;
            (kinds(&report).len() == 5).then_some(report)
        })
        .await;
        assert_eq!(
            kinds(&report),
            ["api_key", "curve_key", "join_key", "router_key", "workspace_credential"],
            "[{}] {report}",
            backend.name
        );
        let all = rows(&report);
        let curve = all.iter().find(|r| r["kind"] == "curve_key").unwrap();
        assert_eq!(
            (curve["id"].as_str(), curve["owner"].as_str()),
            (Some(agent.as_str()), Some(agent.as_str()))
        );
        assert_eq!(curve["rule"], "default");
        assert_eq!(curve["max_age_seconds"], 180 * 86_400);
        assert_eq!(curve["emergency_deadline_seconds"], 900);
        let file = all.iter().find(|r| r["kind"] == "workspace_credential").unwrap();
        assert_eq!(file["id"], format!("{agent}:{CREDENTIAL_FILE}"));
        assert_eq!(
            (file["generation"].as_u64(), file["reload_ok"].as_bool()),
            (Some(1), Some(true))
        );
        assert_eq!(file["emergency_deadline_seconds"], 3600);
        let jk = all.iter().find(|r| r["kind"] == "join_key").unwrap();
        assert_eq!(
            (jk["id"].as_str(), jk["state"].as_str()),
            (Some(join_key.id.as_str()), Some("ok"))
        );
        assert_eq!(jk["emergency_deadline_seconds"], 0);
        // The router's own keys in force, against their rule (365 days, emergency 1 hour).
        let router_keys: Vec<&Value> = all.iter().filter(|r| r["kind"] == "router_key").collect();
        let mut names: Vec<&str> = router_keys.iter().filter_map(|r| r["name"].as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["TLS CA", "join_signing key", "mesh key"], "{report}");
        assert!(router_keys.iter().all(
            |r| r["max_age_seconds"] == 365 * 86_400 && r["emergency_deadline_seconds"] == 3600
        ));
        // The TLS CA shows its certificate's notAfter (ten years on), and is still judged by
        // the rule: due a year after its creation, not when the certificate ends.
        let ca = router_keys.iter().find(|r| r["name"] == "TLS CA").unwrap();
        let millis = |field: &str| parse_rfc3339(ca[field].as_str().unwrap()).unwrap();
        let ten_years = 10 * 365 * 86_400_000_i64;
        assert!(
            (millis("expires_at") - millis("created_at") - ten_years).abs() < 2 * 86_400_000,
            "{ca}"
        );
        assert_eq!(millis("due_at") - millis("created_at"), 365 * 86_400_000, "{ca}");
        assert_eq!(
            (ca["state"].as_str(), ca["rule"].as_str()),
            (Some("ok"), Some("default")),
            "{ca}"
        );
        for key in router_keys.iter().filter(|r| r["name"] != "TLS CA") {
            assert_eq!(key["expires_at"], Value::Null, "{key}");
        }

        // Filters.
        let only = router.get_json(&format!("/v1/management/credentials?agent_id={agent}")).await;
        assert_eq!(kinds(&only), ["curve_key", "workspace_credential"], "{only}");
        let only = router.get_json("/v1/management/credentials?kind=join_key").await;
        assert_eq!(kinds(&only), ["join_key"]);
        // The preview of another regime: fedramp-high's 24 h for unconsumed join keys.
        let preview =
            router.get_json("/v1/management/credentials?kind=join_key&profile=fedramp-high").await;
        assert_eq!(preview["profile"], "fedramp-high");
        assert_eq!(rows(&preview)[0]["rule"], "fedramp-high AC-2(2)");
        assert_eq!(rows(&preview)[0]["max_age_seconds"], 86_400);
        let api = rows(&router.get_json("/v1/management/credentials?kind=api_key").await);
        assert_eq!(api[0]["rule"], "override", "{api:?}");

        // `api_key: 2s`: the admin key is overdue soon; CURVE keys are not.
        let overdue = eventually("the admin key overdue", SETTLE, || async {
            let report = router.get_json("/v1/management/credentials?state=overdue").await;
            (!rows(&report).is_empty()).then_some(report)
        })
        .await;
        assert!(rows(&overdue).iter().all(|r| r["kind"] == "api_key"), "{overdue}");
        let ok = xeroctl(&router, &["credentials", "--kind", "curve_key", "--check"]);
        assert_eq!(ok.status.code(), Some(0), "{ok:?}");
        let failing = xeroctl(&router, &["credentials", "--check"]);
        assert_eq!(failing.status.code(), Some(9), "{failing:?}");
        assert!(failing.stderr.contains("overdue"), "{failing:?}");

        // -o csv: a header row and RFC 4180 lines; -o json: the report.
        let csv = xeroctl(&router, &["credentials", "-o", "csv"]);
        assert!(csv.status.success(), "{csv:?}");
        assert!(csv.stdout.starts_with("KIND,ID,NAME,STATE,AGE,MAX AGE,DUE,RULE,"), "{csv:?}");
        assert!(csv.stdout.contains("\r\n"), "CRLF line ends");
        assert!(csv.stdout.contains(&format!("curve_key,{agent},")), "{csv:?}");
        let json = xeroctl(&router, &["credentials", "-o", "json", "--agent", &agent]);
        let parsed: Value = serde_json::from_str(&json.stdout).unwrap();
        assert_eq!(kinds(&parsed), ["curve_key", "workspace_credential"]);

        // The gauges, zeros included, and one audit record per transition.
        eventually("the gauges", SETTLE, || async {
            let series = r#"xerotier_credentials{kind="api_key",state="overdue"}"#;
            (router.metric(series).await >= 1.0).then_some(())
        })
        .await;
        assert_eq!(
            router.metric(r#"xerotier_credentials{kind="curve_key",state="ok"}"#).await,
            1.0
        );
        let resp = router.api().get("/metrics", None).await;
        assert!(
            resp.text.contains(r#"xerotier_credentials{kind="join_key",state="expired"} 0"#),
            "zeros are printed"
        );
        assert!(resp.text.contains(r#"xerotier_credential_oldest_age_seconds{kind="curve_key"}"#));
        let admin_id = api.iter().find(|r| r["name"] == "bootstrap").unwrap()["id"].clone();
        let admin_id = admin_id.as_str().unwrap();
        eventually("the overdue record", SETTLE, || async {
            let records =
                router.audit(&format!("action=credential.overdue&target_id={admin_id}")).await;
            (!records.is_empty()).then_some(())
        })
        .await;
        // Several more monitor runs: still one record per transition.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let records =
            router.audit(&format!("action=credential.overdue&target_id={admin_id}")).await;
        assert_eq!(records.len(), 1, "[{}] {records:?}", backend.name);
        assert_eq!(records[0]["target_type"], "api_key");
        assert!(records[0]["actor_key_id"].is_null(), "the router acted: {:?}", records[0]);
        assert_eq!(records[0]["details"]["state"], "overdue", "{:?}", records[0]);
        // A monitor run may fall after the 1 s due_soon stage began or after it ended: at
        // most one record of it.
        let soon = router.audit(&format!("action=credential.due_soon&target_id={admin_id}")).await;
        assert!(soon.len() <= 1, "[{}] {soon:?}", backend.name);
    }
}

#[tokio::test]
async fn the_posture_report_refuses_outsiders_and_hostile_queries() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let exec_key = router.create_key("exec-only", &["execution"]).await;
        router
            .api()
            .get("/v1/management/credentials", Some(&exec_key.value))
            .await
            .assert_error(403, "scope_insufficient");
        let denied = xeroctl_with_key(&router, &exec_key.value, &["credentials"]);
        assert_eq!(denied.status.code(), Some(5), "{denied:?}");
        let long = "a".repeat(5_000);
        for query in [
            "kind=password",
            "state=late",
            "profile=sox",
            "agent_id=agt_x",
            "region=a%20b",
            &format!("kind={long}"),
            &format!("region={long}"),
            "kinds=api_key",
        ] {
            let resp = router
                .api()
                .get(&format!("/v1/management/credentials?{query}"), Some(router.admin_key()))
                .await;
            assert_eq!(resp.status, 400, "[{}] {query}: {}", backend.name, resp.text);
        }
        let bad = xeroctl(&router, &["credentials", "--profile", "sox"]);
        assert_eq!(bad.status.code(), Some(3), "{bad:?}");
    }
}

/// Two regions, each with an enrolled agent and an unconsumed join key: `region=eu` lists the
/// eu agent's CURVE key and the eu join key, nothing of the other region and nothing without a
/// region (API keys, the router's keys); a region nobody uses lists nothing.
#[tokio::test]
async fn the_region_filter_keeps_exactly_that_regions_agents_and_join_keys() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let mut agents = Vec::new();
        let mut spare = Vec::new();
        for region in ["eu", "us"] {
            let body = |name: &str| json!({ "name": name, "region": region, "workspaces": [EXAMPLE_WORKSPACE] });
            let used = router.mint_join_key_with(body(&format!("{region}-used"))).await;
            let resp = enroll(&router, &used.token, &format!("agent-{region}")).await.0;
            resp.assert_status(200);
            agents.push(resp.json()["agent_id"].as_str().unwrap().to_string());
            spare.push(router.mint_join_key_with(body(&format!("{region}-spare"))).await.id);
        }
        let listed = |report: &Value| {
            let mut ids: Vec<(String, String)> = rows(report)
                .iter()
                .map(|r| (r["kind"].as_str().unwrap().into(), r["id"].as_str().unwrap().into()))
                .collect();
            ids.sort();
            ids
        };
        let eu = router.get_json("/v1/management/credentials?region=eu").await;
        assert_eq!(
            listed(&eu),
            [("curve_key".to_string(), agents[0].clone()), ("join_key".into(), spare[0].clone())],
            "[{}] {eu}",
            backend.name
        );
        assert!(rows(&eu).iter().all(|r| r["region"] == "eu"), "{eu}");
        let us = router.get_json("/v1/management/credentials?region=us&kind=curve_key").await;
        assert_eq!(listed(&us), [("curve_key".to_string(), agents[1].clone())], "{us}");
        let none = router.get_json("/v1/management/credentials?region=ap").await;
        assert!(rows(&none).is_empty(), "{none}");
        // xeroctl passes the filter through.
        let out = xeroctl(&router, &["credentials", "--region", "eu", "-o", "json"]);
        assert!(out.status.success(), "{out:?}");
        let parsed: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(listed(&parsed), listed(&eu), "[{}] {parsed}", backend.name);
    }
}

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;
const CLOCK_OFFSET: &str = "XEROTIER_ROUTER_TEST_CLOCK_OFFSET_MS";

fn offset(ms: i64) -> Vec<(String, String)> {
    vec![(CLOCK_OFFSET.to_string(), ms.to_string())]
}

/// The state of the admin key's and the agent's CURVE key's rows, as the router reports them.
async fn states(router: &Router, agent: &str) -> (String, String) {
    let report = router.get_json("/v1/management/credentials").await;
    let state = |kind: &str, id: Option<&str>| {
        rows(&report)
            .iter()
            .find(|r| r["kind"] == kind && id.is_none_or(|id| r["id"] == id))
            .map(|r| r["state"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no {kind} row: {report}"))
    };
    (state("api_key", None), state("curve_key", Some(agent)))
}

/// API keys and CURVE keys due after 10 days, due soon 2 days before. The admin key and an
/// agent are made while the router's clock runs 10 days and 1 hour behind; restarted with its
/// clock 2 days 2 hours behind (ages 7 d 23 h), then 2 days behind (8 d 1 h), then right (10
/// d 1 h), both rows flip `ok → due_soon → overdue`, `--check` fails only at the last, and the
/// monitor records each transition once.
#[tokio::test]
async fn states_flip_at_their_boundaries_as_the_routers_clock_moves() {
    for backend in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("router.yaml");
        std::fs::write(
            &file,
            "credential_policy:\n  max_age: { api_key: 10d, curve_key: 10d }\n  due_soon: 2d\n  \
             monitor_interval: 1s\n",
        )
        .unwrap();
        let options = RouterOptions {
            extra_args: vec!["--config".into(), file.to_str().unwrap().into()],
            env: offset(-(10 * DAY_MS + HOUR_MS)),
            ..RouterOptions::default()
        };
        let mut router = Router::start_with(&backend, options).await;
        let join_key = router.mint_join_key("clock").await;
        let resp = enroll(&router, &join_key.token, "clock-agent").await.0;
        resp.assert_status(200);
        let agent = resp.json()["agent_id"].as_str().unwrap().to_string();
        let admin = router.admin_key_id().await;
        let stages = [
            (-(2 * DAY_MS + 2 * HOUR_MS), "ok", Some(0)),
            (-2 * DAY_MS, "due_soon", Some(0)),
            (0, "overdue", Some(9)),
        ];
        for (ms, state, exit) in stages {
            router.restart_with_env(offset(ms)).await;
            let expected = (state.to_string(), state.to_string());
            assert_eq!(states(&router, &agent).await, expected, "[{}] offset {ms}", backend.name);
            let check = xeroctl(&router, &["credentials", "--kind", "api_key", "--check"]);
            assert_eq!(check.status.code(), exit, "[{}] {state}: {check:?}", backend.name);
            if state == "ok" {
                continue;
            }
            for target in [admin.as_str(), agent.as_str()] {
                let query = format!("action=credential.{state}&target_id={target}");
                let records = eventually(&format!("{query} recorded"), SETTLE, || async {
                    let records = router.audit(&query).await;
                    (!records.is_empty()).then_some(records)
                })
                .await;
                assert_eq!(records.len(), 1, "[{}] {records:?}", backend.name);
            }
        }
    }
}
