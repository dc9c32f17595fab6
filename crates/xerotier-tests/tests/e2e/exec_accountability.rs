//! Exec API accountability (issue 10, item 4): creating and cancelling an invocation is
//! audited (the key, the request id, the tool, the workspace; refusals too), and an execution
//! key sees and cancels only the invocations it created: another key's answer 404, exactly
//! like an id that does not exist. A key with the `management` scope sees all.

use serde_json::{Value, json};

use crate::exec::{Exec, exec_fleet};
use crate::harness::{Resp, Router, backends};

const INVOCATIONS: &str = "/v1/exec/invocations";
const WORKSPACE: &str = "kubernetes-prod";

/// Every audit record of `action` written by the request that got `resp`.
async fn records_of(router: &Router, resp: &Resp, action: &str) -> Vec<Value> {
    router.audit(&format!("request_id={}&action={action}", resp.request_id())).await
}

/// The one record of `action` by the request that got `resp`, with outcome `outcome`.
async fn one_record(router: &Router, resp: &Resp, action: &str, outcome: &str) -> Value {
    let records = records_of(router, resp, action).await;
    assert_eq!(records.len(), 1, "[{}] one {action} record: {records:?}", router.backend);
    let record = records[0].clone();
    assert_eq!(record["outcome"], outcome, "{record}");
    assert!(
        record["client_addr"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{record}"
    );
    record
}

async fn post(router: &Router, path: &str, key: &str, body: Value) -> Resp {
    router.api().post(path, Some(key), &body).await
}

#[tokio::test]
async fn creating_and_cancelling_invocations_is_audited_refusals_too() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let (_xem, _agent) = exec_fleet(&router, "xem-audit", "v1\n", |_| {}).await;
        router.wait_tool("sleep").await;
        let key = router.create_key("runner", &["execution"]).await;

        // Created: one success record naming the key, the request, the tool and workspace.
        let body = json!({ "workspace": WORKSPACE, "tool": "sleep", "args": { "seconds": 300 } });
        let created = post(&router, INVOCATIONS, &key.value, body).await;
        created.assert_status(202);
        let id = created.json()["id"].as_str().unwrap().to_string();
        let record = one_record(&router, &created, "invocation.create", "success").await;
        assert_eq!(record["actor_key_id"], key.id.as_str(), "{record}");
        assert_eq!(record["actor_name"], "runner", "{record}");
        assert_eq!(record["target_type"], "invocation", "{record}");
        assert_eq!(record["target_id"], id.as_str(), "{record}");
        assert_eq!(record["details"]["tool"], "sleep", "{record}");
        assert_eq!(record["details"]["workspace"], WORKSPACE, "{record}");
        assert_eq!(record["request_id"], created.request_id().as_str());

        // Refused creations are recorded `failed` with the code the caller got, and no id.
        let refusals = [
            (json!({ "workspace": WORKSPACE, "tool": "rm-rf" }), 404, "tool_not_found"),
            (json!({ "workspace": "nowhere", "tool": "sleep" }), 404, "workspace_not_found"),
            (
                json!({ "workspace": WORKSPACE, "tool": "sleep", "args": { "seconds": "x" } }),
                400,
                "invalid_arguments",
            ),
        ];
        for (body, status, code) in refusals {
            let resp = post(&router, INVOCATIONS, &key.value, body).await;
            resp.assert_error(status, code);
            let record = one_record(&router, &resp, "invocation.create", "failed").await;
            assert_eq!(record["details"]["error"], code, "{record}");
            assert_eq!(record["actor_key_id"], key.id.as_str(), "{record}");
            assert!(record["target_id"].is_null(), "nothing was created: {record}");
        }

        // Cancelled: one success record on the invocation.
        router.wait_status(&id, &["running"]).await;
        let cancel =
            post(&router, &format!("{INVOCATIONS}/{id}/cancel"), &key.value, json!({})).await;
        cancel.assert_status(200);
        let record = one_record(&router, &cancel, "invocation.cancel", "success").await;
        assert_eq!(record["target_id"], id.as_str(), "{record}");
        assert_eq!(record["actor_key_id"], key.id.as_str(), "{record}");
        router.wait_status(&id, &["cancelled"]).await;
        // A cancel of what already ended is refused and recorded as such.
        let again =
            post(&router, &format!("{INVOCATIONS}/{id}/cancel"), &key.value, json!({})).await;
        again.assert_error(409, "invocation_finished");
        let record = one_record(&router, &again, "invocation.cancel", "failed").await;
        assert_eq!(record["details"]["error"], "invocation_finished", "{record}");
        // So is a cancel of nothing; a malformed id is not written into the log.
        let junk = format!("{INVOCATIONS}/{}/cancel", "z".repeat(2_000));
        let resp = post(&router, &junk, &key.value, json!({})).await;
        resp.assert_error(404, "not_found");
        let record = one_record(&router, &resp, "invocation.cancel", "failed").await;
        assert!(record["target_id"].is_null(), "{record}");
    }
}

#[tokio::test]
async fn an_execution_key_sees_and_cancels_only_its_own_invocations() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let (_xem, _agent) = exec_fleet(&router, "xem-owners", "v1\n", |_| {}).await;
        router.wait_tool("sleep").await;
        let alice = router.create_key("alice", &["execution"]).await;
        let mallory = router.create_key("mallory", &["execution"]).await;
        let admin = router.admin_key().to_string();
        let api = router.api();

        let long = json!({ "seconds": 300 });
        let alices = router.invoke(&alice.value, "sleep", long.clone()).await;
        let alices = alices["id"].as_str().unwrap().to_string();
        let mallorys = router.invoke(&mallory.value, "noop", json!({})).await;
        let mallorys = mallorys["id"].as_str().unwrap().to_string();
        router.wait_status(&alices, &["running"]).await;

        // Mallory cannot read Alice's invocation (nor its output): 404, like an unknown id.
        let peek = api.get(&format!("{INVOCATIONS}/{alices}"), Some(&mallory.value)).await;
        peek.assert_error(404, "not_found");
        let unknown_id = "inv_00000000000000000000000000";
        let unknown = api.get(&format!("{INVOCATIONS}/{unknown_id}"), Some(&mallory.value)).await;
        unknown.assert_error(404, "not_found");
        assert_eq!(
            peek.json()["error"]["message"].as_str().unwrap().replace(&alices, "ID"),
            unknown.json()["error"]["message"].as_str().unwrap().replace(unknown_id, "ID"),
            "another key's invocation and no invocation answer alike"
        );
        // … nor follow its output stream (404 before any event), while Alice and management
        // can.
        let output = format!("{INVOCATIONS}/{alices}/output");
        let stream = |key: &str| {
            let request = api.request(reqwest::Method::GET, &output);
            crate::harness::with_key(request, Some(key)).header("accept", "text/event-stream")
        };
        let refused = stream(&mallory.value).send().await.unwrap();
        assert_eq!(refused.status().as_u16(), 404, "another key's output is not found");
        let body: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{body}");
        assert_eq!(stream(&admin).send().await.unwrap().status().as_u16(), 200);
        let mut alices_stream = stream(&alice.value).send().await.unwrap();
        assert_eq!(alices_stream.status().as_u16(), 200);
        let first = tokio::time::timeout(std::time::Duration::from_secs(10), alices_stream.chunk())
            .await
            .expect("the first event")
            .unwrap()
            .expect("a status event");
        assert!(String::from_utf8_lossy(&first).contains("status"), "{first:?}");

        // … nor cancel it: 404, nothing changes, and the attempt is on record.
        let cancel = format!("{INVOCATIONS}/{alices}/cancel");
        let refused = post(&router, &cancel, &mallory.value, json!({})).await;
        refused.assert_error(404, "not_found");
        let record = one_record(&router, &refused, "invocation.cancel", "failed").await;
        assert_eq!(record["actor_key_id"], mallory.id.as_str(), "{record}");
        assert_eq!(record["target_id"], alices.as_str(), "{record}");
        let seen = api.get(&format!("{INVOCATIONS}/{alices}"), Some(&alice.value)).await;
        seen.assert_status(200);
        assert_eq!(seen.json()["status"], "running", "[{}] still running", backend.name);
        assert_eq!(seen.json()["cancel_requested"], false);

        // Listings: each key its own; filters cannot widen them; management sees all.
        let ids = |resp: Resp| -> Vec<String> {
            resp.assert_status(200);
            let page = resp.json();
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().into())
                .collect()
        };
        assert_eq!(ids(api.get(INVOCATIONS, Some(&alice.value)).await), [alices.as_str()]);
        assert_eq!(ids(api.get(INVOCATIONS, Some(&mallory.value)).await), [mallorys.as_str()]);
        let filtered = format!("{INVOCATIONS}?tool=sleep&status=running&workspace={WORKSPACE}");
        assert!(ids(api.get(&filtered, Some(&mallory.value)).await).is_empty());
        let mut all = ids(api.get(INVOCATIONS, Some(&admin)).await);
        all.sort();
        let mut both = vec![alices.clone(), mallorys.clone()];
        both.sort();
        assert_eq!(all, both, "[{}] management sees every invocation", backend.name);
        api.get(&format!("{INVOCATIONS}/{alices}"), Some(&admin)).await.assert_status(200);

        // Alice cancels her own; once it ended, Mallory still gets 404 (not 409: nothing about
        // it is confirmed).
        post(&router, &cancel, &alice.value, json!({})).await.assert_status(200);
        router.wait_status(&alices, &["cancelled"]).await;
        post(&router, &cancel, &mallory.value, json!({})).await.assert_error(404, "not_found");
        post(&router, &cancel, &alice.value, json!({}))
            .await
            .assert_error(409, "invocation_finished");

        // A management key cancels anyone's (here: one of Mallory's). First, Mallory follows
        // its output and her key is revoked: the stream ends within a second, though the
        // invocation has not.
        let queued = router.invoke(&mallory.value, "sleep", long).await;
        let queued = queued["id"].as_str().unwrap().to_string();
        let path = format!("{INVOCATIONS}/{queued}/output");
        let request = crate::harness::with_key(
            api.request(reqwest::Method::GET, &path),
            Some(&mallory.value),
        );
        let mut following = request.header("accept", "text/event-stream").send().await.unwrap();
        assert_eq!(following.status().as_u16(), 200);
        router.revoke_key(&mallory.id).await.assert_status(200);
        let ended = tokio::time::timeout(std::time::Duration::from_secs(3), async {
            while let Ok(Some(_)) = following.chunk().await {}
        })
        .await;
        assert!(ended.is_ok(), "the output stream outlived its key's revocation");
        let resp =
            post(&router, &format!("{INVOCATIONS}/{queued}/cancel"), &admin, json!({})).await;
        resp.assert_status(200);
        let record = one_record(&router, &resp, "invocation.cancel", "success").await;
        assert_eq!(record["target_id"], queued.as_str(), "{record}");
    }
}
