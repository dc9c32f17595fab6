//! A rogue or compromised agent gets nothing it was not granted (SPEC 6.1): join-key grants,
//! candidates and the operator's decisions, tool definitions held per agent, roles, and the
//! XEM's own argument check — each tried the way an attacker holding one join key would, next
//! to the honest path. Real router and XEM processes running the example tools.

use std::time::Duration;

use serde_json::{Value, json};

use crate::fleet_harness::{AGENT_DEADLINE, Xem, prepare_examples};
use crate::harness::{
    EXAMPLE_WORKSPACE as WORKSPACE, Router, RouterOptions, backends, eventually, xeroctl,
};

const SETTLE: Duration = Duration::from_secs(30);
const TOOL: &str = "kubectl-get";
/// Arguments the real `kubectl-get` forbids: a kind outside its enum and an extra flag.
fn hostile_args() -> Value {
    json!({ "kind": "secrets", "extra": "--kubeconfig=/etc/shadow" })
}

/// Replaces `kubectl-get`'s argument schema in `xem`'s tools dir.
fn rewrite_schema(xem: &Xem, schema_yaml: &str) {
    let path = xem.tools_dir().join(TOOL).join("tool.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let head = text.split("args_schema:").next().unwrap().to_string();
    std::fs::write(&path, format!("{head}args_schema:\n{schema_yaml}")).unwrap();
}

/// A XEM with the example tools, enrolled with a join key minted with `body`.
async fn enrolled(
    router: &Router,
    name: &str,
    body: Value,
    prepare: impl FnOnce(&Xem),
) -> (Xem, String) {
    let key = router.mint_join_key_with(body).await;
    let mut xem = Xem::new(router, name);
    prepare(&xem);
    xem.start(Some(&key.token));
    let id = xem.wait_enrolled().await;
    router.wait_agent_status(&id, "active", AGENT_DEADLINE).await;
    (xem, id)
}

async fn post_invocation(router: &Router, args: Value) -> crate::harness::Resp {
    let body = json!({ "workspace": WORKSPACE, "tool": TOOL, "args": args });
    router.api().post("/v1/exec/invocations", Some(router.admin_key()), &body).await
}

async fn wait_ended(router: &Router, id: &str) -> Value {
    eventually(&format!("invocation {id} to end"), SETTLE, || async {
        let view = router.get_json(&format!("/v1/exec/invocations/{id}")).await;
        let ended = ["succeeded", "failed", "timed_out", "cancelled"];
        ended.contains(&view["status"].as_str().unwrap_or_default()).then_some(view)
    })
    .await
}

/// `kubectl-get` as `GET /v1/exec/tools/kubectl-get` shows it, once `offered_by` has `agents`.
async fn wait_offered_by(router: &Router, agents: &[&str]) -> Value {
    let mut wanted: Vec<String> = agents.iter().map(|a| a.to_string()).collect();
    wanted.sort();
    eventually(&format!("{TOOL} offered by exactly {wanted:?}"), SETTLE, || async {
        let resp =
            router.api().get(&format!("/v1/exec/tools/{TOOL}"), Some(router.admin_key())).await;
        if resp.status == 404 && wanted.is_empty() {
            return Some(resp.json());
        }
        if resp.status != 200 {
            return None;
        }
        let detail = resp.json();
        let mut offering: Vec<String> = detail["offered_by"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["agent_id"].as_str().unwrap().to_string())
            .collect();
        offering.sort();
        (offering == wanted).then_some(detail)
    })
    .await
}

async fn candidates(router: &Router) -> Vec<Value> {
    router.get_json("/v1/management/candidates").await["candidates"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_rogue_agent_declaring_the_real_workspace_gets_nothing_until_approved() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let (_honest, honest) = enrolled(
            &router,
            "xem-honest",
            json!({ "name": "honest-key", "workspaces": [WORKSPACE] }),
            prepare_examples,
        )
        .await;
        // The attacker's join key grants nothing (the seed's command, as written); its XEM
        // declares the real workspace and a looser kubectl-get.
        let (_rogue_xem, rogue) =
            enrolled(&router, "xem-rogue", json!({ "name": "rogue-key" }), |xem| {
                prepare_examples(xem);
                rewrite_schema(xem, "  type: object\n");
            })
            .await;
        assert_eq!(
            router.agent(&rogue).await["status"],
            "active",
            "its agent enrolls and is active"
        );

        // It waits as a candidate, with its definitions shown; the honest agent does not.
        let listed = eventually("the rogue's workspace as a candidate", SETTLE, || async {
            let all = candidates(&router).await;
            all.into_iter().find(|c| c["agent_id"] == rogue.as_str() && c["workspace"] == WORKSPACE)
        })
        .await;
        assert!(listed["definitions_hash"].as_str().unwrap().len() == 64, "{listed}");
        assert!(listed["tools"].to_string().contains(TOOL), "{listed}");
        assert!(candidates(&router).await.iter().all(|c| c["agent_id"] != honest.as_str()));
        let table = xeroctl(&router, &["agents", "candidates"]).success();
        assert!(
            table.stdout.contains(&rogue) && table.stdout.contains(WORKSPACE),
            "{}",
            table.stdout
        );

        // Callers see the honest definition only; arguments outside it are refused before
        // anything is stored, and every honest call runs on the honest agent.
        let detail = wait_offered_by(&router, &[&honest]).await;
        assert_eq!(detail["variants"].as_array().unwrap().len(), 1, "{detail}");
        post_invocation(&router, hostile_args()).await.assert_error(400, "invalid_arguments");
        for _ in 0..4 {
            let resp = post_invocation(&router, json!({ "kind": "pods" })).await;
            resp.assert_status(202);
            let done = wait_ended(&router, resp.json()["id"].as_str().unwrap()).await;
            assert_eq!(
                (done["status"].as_str(), done["agent_id"].as_str()),
                (Some("succeeded"), Some(honest.as_str())),
                "{done}"
            );
        }

        // Rejected, it leaves the candidates and still gets nothing; a decision needs an action.
        xeroctl(
            &router,
            &["agents", "candidates", &rogue, "--reject", "--reason", "unknown host", "--yes"],
        )
        .success();
        assert!(candidates(&router).await.iter().all(|c| c["agent_id"] != rogue.as_str()));
        let view = router.get_json(&format!("/v1/management/agents/{rogue}")).await;
        assert_eq!(view["workspaces"][0]["state"], "rejected", "{view}");
        assert_eq!(router.audit("action=agent.candidate_reject").await.len(), 1);
        assert!(!xeroctl(&router, &["agents", "candidates", &rogue]).status.success());
        wait_offered_by(&router, &[&honest]).await;

        // Approved, the two definitions are shown side by side, never merged, and each agent
        // is held to its own: what only the rogue's accepts never reaches the honest XEM.
        xeroctl(
            &router,
            &[
                "agents",
                "candidates",
                &rogue,
                "--approve",
                "--workspace",
                WORKSPACE,
                "--reason",
                "e2e",
            ],
        )
        .success();
        let detail = wait_offered_by(&router, &[&honest, &rogue]).await;
        assert_eq!(detail["variants"].as_array().unwrap().len(), 2, "{detail}");
        let tools = router.get_json("/v1/exec/tools").await;
        let summary =
            tools["tools"].as_array().unwrap().iter().find(|t| t["name"] == TOOL).unwrap().clone();
        assert_eq!(summary["conflict"], true, "{summary}");
        let shown = xeroctl(&router, &["exec", "tool-show", TOOL]).success();
        assert!(shown.stdout.contains("CONFLICT"), "{}", shown.stdout);
        let resp = post_invocation(&router, hostile_args()).await;
        resp.assert_status(202);
        let done = wait_ended(&router, resp.json()["id"].as_str().unwrap()).await;
        assert_eq!(
            done["agent_id"],
            rogue.as_str(),
            "only the agent whose definition accepts it: {done}"
        );
        let audit = router.audit("action=agent.candidate_approve").await;
        assert_eq!(audit.len(), 1, "{audit:?}");
        assert_eq!(audit[0]["target_id"], rogue.as_str());

        // Withdrawn, the rogue serves nothing again.
        xeroctl(&router, &["agents", "withdraw-grant", &rogue, "--workspace", WORKSPACE, "--yes"])
            .success();
        wait_offered_by(&router, &[&honest]).await;
        post_invocation(&router, hostile_args()).await.assert_error(400, "invalid_arguments");
        assert_eq!(router.audit("action=agent.grant_withdraw").await.len(), 1);
        let view = router.get_json(&format!("/v1/management/agents/{rogue}")).await;
        assert_eq!(view["workspaces"][0]["state"], "withdrawn", "{view}");
    }
}

#[tokio::test]
async fn the_xem_refuses_arguments_outside_its_own_schema_when_the_router_does_not_check() {
    for backend in backends().await {
        // A router that skips its own check (test build only): the XEM must hold the line.
        let options = RouterOptions {
            env: vec![("XEROTIER_ROUTER_TEST_FAULT".into(), "skip_argument_check".into())],
            ..RouterOptions::default()
        };
        let router = Router::start_with(&backend, options).await;
        let (_xem, agent) = enrolled(
            &router,
            "xem-own-check",
            json!({ "name": "k", "workspaces": [WORKSPACE] }),
            prepare_examples,
        )
        .await;
        wait_offered_by(&router, &[&agent]).await;
        let resp = post_invocation(&router, hostile_args()).await;
        resp.assert_status(202);
        let done = wait_ended(&router, resp.json()["id"].as_str().unwrap()).await;
        assert_eq!(done["status"], "failed", "{done}");
        assert_eq!(done["agent_id"], agent.as_str(), "it reached the XEM: {done}");
        assert!(done["error"].as_str().unwrap().starts_with("invalid_arguments"), "{done}");
        assert_eq!(
            (done["stdout"].as_str(), done["exit_code"].as_i64()),
            (Some(""), None),
            "never spawned: {done}"
        );
        let ok = post_invocation(&router, json!({ "kind": "pods" })).await;
        let ok = wait_ended(&router, ok.json()["id"].as_str().unwrap()).await;
        assert_eq!(ok["status"], "succeeded", "{ok}");
    }
}

#[tokio::test]
async fn require_approval_holds_work_and_rotation_until_an_operator_approves() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let body = json!({ "name": "strict", "workspaces": [WORKSPACE], "require_approval": true });
        let (_xem, agent) = enrolled(&router, "xem-strict", body, prepare_examples).await;
        let view = router.get_json(&format!("/v1/management/agents/{agent}")).await;
        assert_eq!(view["approval"], "pending", "{view}");
        assert_eq!(
            view["workspaces"][0]["state"], "granted",
            "granted, but the agent waits: {view}"
        );
        // No work and no rotation while it waits.
        post_invocation(&router, json!({ "kind": "pods" }))
            .await
            .assert_error(503, "no_agent_available");
        let rotate = router
            .api()
            .post(
                &format!("/v1/management/agents/{agent}/curve-rotate"),
                Some(router.admin_key()),
                &json!({}),
            )
            .await;
        rotate.assert_error(409, "agent_not_approved");
        let listed = candidates(&router).await;
        let waiting: Vec<&Value> =
            listed.iter().filter(|c| c["agent_id"] == agent.as_str()).collect();
        assert_eq!(waiting.len(), 1, "the whole agent is listed: {listed:?}");
        assert_eq!(waiting[0]["agent_approval"], "pending");
        // Approved as a whole: it serves its grant.
        let decided = router
            .api()
            .post(
                &format!("/v1/management/agents/{agent}/candidates/approve"),
                Some(router.admin_key()),
                &json!({ "reason": "checked the host" }),
            )
            .await;
        decided.assert_status(200);
        assert_eq!(decided.json()["approval"], "approved");
        wait_offered_by(&router, &[&agent]).await;
        let resp = post_invocation(&router, json!({ "kind": "pods" })).await;
        assert_eq!(
            wait_ended(&router, resp.json()["id"].as_str().unwrap()).await["status"],
            "succeeded"
        );
        // A decision with nothing left to decide is a 404 and records nothing.
        let before = router.audit("action=agent.candidate_approve").await.len();
        router
            .api()
            .post(
                &format!("/v1/management/agents/{agent}/candidates/approve"),
                Some(router.admin_key()),
                &json!({}),
            )
            .await
            .assert_error(404, "not_found");
        assert_eq!(
            router.audit("action=agent.candidate_approve").await.len(),
            before + 1,
            "one failed attempt recorded"
        );
    }
}

#[tokio::test]
async fn an_inference_agent_gets_no_tool_work() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let body = json!({ "name": "inf", "agent_role": "inference", "workspaces": [WORKSPACE] });
        let (_xem, agent) = enrolled(&router, "xem-inference", body, prepare_examples).await;
        // Wait until it has told the router everything (its credential report follows its
        // hello and manifest), then nothing of it may be offered.
        eventually("the inference agent's credential report", SETTLE, || async {
            let list = router
                .get_json(&format!(
                    "/v1/management/credentials?agent_id={agent}&kind=workspace_credential"
                ))
                .await;
            (!list["credentials"].as_array().unwrap().is_empty()).then_some(())
        })
        .await;
        let tools = router.get_json("/v1/exec/tools").await;
        assert!(tools["tools"].as_array().unwrap().is_empty(), "{tools}");
        post_invocation(&router, json!({ "kind": "pods" }))
            .await
            .assert_error(503, "no_agent_available");
    }
}

#[tokio::test]
async fn a_changed_tool_definition_needs_approval_again() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let (mut xem, agent) = enrolled(
            &router,
            "xem-changes",
            json!({ "name": "k", "workspaces": [WORKSPACE] }),
            prepare_examples,
        )
        .await;
        wait_offered_by(&router, &[&agent]).await;
        // The host's tool changes (an update, or an intruder loosening it): the grant no
        // longer covers it.
        xem.stop_with_sigterm();
        rewrite_schema(&xem, "  type: object\n");
        xem.restart();
        eventually("the changed workspace as a candidate", SETTLE, || async {
            candidates(&router).await.into_iter().find(|c| c["agent_id"] == agent.as_str())
        })
        .await;
        wait_offered_by(&router, &[]).await;
        post_invocation(&router, json!({ "kind": "pods" }))
            .await
            .assert_error(503, "no_agent_available");
        // The event is written just after the candidate is recorded.
        eventually("the workspace_candidate event", SETTLE, || async {
            let path = format!("/v1/management/agents/{agent}/events?limit=200");
            let events = router.get_json(&path).await;
            events.to_string().contains("workspace_candidate").then_some(())
        })
        .await;
        xeroctl(&router, &["agents", "candidates", &agent, "--approve"]).success();
        wait_offered_by(&router, &[&agent]).await;
    }
}
