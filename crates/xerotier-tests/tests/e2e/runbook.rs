//! `docs/RUNBOOK.md` uses only real commands: every `xeroctl` line of its `sh` blocks is run
//! here, in the order written, exactly as written but for its shell variables, against a live
//! router with real XEM agents, and must exit as the runbook says (0, or the `# exits N` at the
//! end of the line). A command renamed or a flag dropped fails this test, not an operator
//! during an incident.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::exec::exec_fleet;
use crate::fleet_harness::Xem;
use crate::harness::{JoinKey, Router, backends, xeroctl};

/// One runnable line of the runbook.
#[derive(Debug)]
struct Step {
    /// 1-based line number in RUNBOOK.md, for the failure message.
    line: usize,
    text: String,
    expected_exit: i32,
}

fn runbook_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/RUNBOOK.md")
}

/// Every `xeroctl …` line inside a fenced `sh` block, in order.
fn steps(text: &str) -> Vec<Step> {
    let mut in_sh = false;
    let mut steps = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(info) = line.strip_prefix("```") {
            in_sh = !in_sh && info.trim() == "sh";
            continue;
        }
        if !in_sh || !line.starts_with("xeroctl ") {
            continue;
        }
        let (command, expected_exit) = match line.split_once("# exits ") {
            Some((command, code)) => (command.trim(), code.trim().parse().expect("exit code")),
            None => (line, 0),
        };
        steps.push(Step { line: index + 1, text: command.to_string(), expected_exit });
    }
    steps
}

/// Splits a command line as a POSIX shell would for the subset the runbook uses: words,
/// double-quoted strings, `$NAME` variables (from `vars`; an unknown one fails the test).
fn words(command: &str, vars: &BTreeMap<&str, String>) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = command.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '$' => {
                let mut name = String::new();
                while let Some(&n) = chars.peek() {
                    if n.is_ascii_uppercase() || n == '_' {
                        name.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                let value = vars
                    .get(name.as_str())
                    .unwrap_or_else(|| panic!("the runbook uses ${name}, which the test lacks"));
                current.push_str(value);
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            c => {
                current.push(c);
                in_word = true;
            }
        }
    }
    assert!(!quoted, "unbalanced quotes in {command:?}");
    if in_word {
        words.push(current);
    }
    words
}

/// A join key minted with `key` (not the admin key), for `--minted-by`.
async fn join_key_minted_by(router: &Router, key: &str, body: Value) -> JoinKey {
    let resp = router.api().post("/v1/management/join-keys", Some(key), &body).await;
    resp.assert_status(201);
    JoinKey::from_json(&resp.json())
}

/// A XEM enrolled with `key`, active: its agent id.
async fn enroll(router: &Router, name: &str, key: &JoinKey) -> (Xem, String) {
    let mut xem = Xem::new(router, name);
    xem.start(Some(&key.token));
    let id = xem.wait_enrolled().await;
    router.wait_agent_status(&id, "active", std::time::Duration::from_secs(20)).await;
    (xem, id)
}

#[test]
fn the_runbook_has_a_command_for_every_credential_kind_and_parses() {
    let text = std::fs::read_to_string(runbook_path()).expect("docs/RUNBOOK.md");
    let steps = steps(&text);
    for needle in [
        "xeroctl credentials --check",
        "xeroctl agents curve-rotate $AGENT",
        "xeroctl keys revoke",
        "xeroctl agents join-keys --revoke --all-unconsumed",
        "xeroctl agents revoke-credentials --enrolled-via",
        "xeroctl router rotate-keys --kind mesh --auto",
        "xeroctl router rotate-keys --kind join-signing --auto",
        "xeroctl router rotate-keys --kind tls",
    ] {
        assert!(steps.iter().any(|s| s.text.starts_with(needle)), "the runbook lacks {needle}");
    }
    let vars: BTreeMap<&str, String> =
        ["AGENT", "OTHER_AGENT", "KEY_NAME", "NEW_KEY_NAME", "UNUSED_JOIN_KEY", "JOIN_KEY"]
            .into_iter()
            .chain(["MINTING_KEY", "REGION", "OP"])
            .map(|name| (name, format!("<{name}>")))
            .collect();
    for step in &steps {
        assert_eq!(words(&step.text, &vars)[0], "xeroctl", "line {}", step.line);
    }
    assert_eq!(
        words(r#"xeroctl a "b c" $AGENT"#, &vars),
        ["xeroctl", "a", "b c", "<AGENT>"],
        "quoting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_in_the_runbook_runs() {
    let text = std::fs::read_to_string(runbook_path()).expect("docs/RUNBOOK.md");
    let steps = steps(&text);
    for backend in backends().await {
        let router = Router::start(&backend).await;
        // $AGENT: an execution agent with a workspace credential file.
        let (_exec_xem, agent) =
            exec_fleet(&router, "xem-runbook", "apiVersion: v1\n", |_| {}).await;
        // $OTHER_AGENT: revoked alone in section 5.
        let eu = router
            .mint_join_key_with(json!({ "name": "xem-runbook-eu", "region": "eu-west" }))
            .await;
        let (_other_xem, other_agent) = enroll(&router, "xem-runbook-eu", &eu).await;
        // $MINTING_KEY minted $JOIN_KEY, through which the us-east agent enrolled.
        let minter = router.create_key("runbook-minter", &["management"]).await;
        let join_key = join_key_minted_by(
            &router,
            &minter.value,
            json!({ "name": "xem-runbook-us", "region": "us-east", "router_addr": router.mesh_addr() }),
        )
        .await;
        let (_us_xem, _us_agent) = enroll(&router, "xem-runbook-us", &join_key).await;
        let unused = router.mint_join_key("runbook-unused").await;
        router.create_key("fleet-ops-2026q1", &["execution"]).await;

        let mut vars: BTreeMap<&str, String> = BTreeMap::new();
        vars.insert("AGENT", agent.clone());
        vars.insert("OTHER_AGENT", other_agent.clone());
        vars.insert("KEY_NAME", "fleet-ops-2026q1".into());
        vars.insert("NEW_KEY_NAME", "fleet-ops-2026q2".into());
        vars.insert("UNUSED_JOIN_KEY", unused.id.clone());
        vars.insert("JOIN_KEY", join_key.id.clone());
        vars.insert("MINTING_KEY", minter.id.clone());
        vars.insert("REGION", "us-east".into());
        for step in &steps {
            if step.text.contains("$OP") {
                vars.insert("OP", newest_operation(&router).await);
            }
            let words = words(&step.text, &vars);
            let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
            let out = xeroctl(&router, &args);
            assert_eq!(
                out.status.code(),
                Some(step.expected_exit),
                "[{}] RUNBOOK.md line {}: {}\nstdout: {}\nstderr: {}",
                backend.name,
                step.line,
                step.text,
                out.stdout,
                out.stderr
            );
        }
    }
}

/// The id of the most recently created operation.
async fn newest_operation(router: &Router) -> String {
    let list = router.get_json("/v1/management/operations").await;
    let items = list["data"].as_array().cloned().unwrap_or_default();
    items
        .iter()
        .max_by_key(|op| op["created_at"].as_str().unwrap_or_default().to_string())
        .and_then(|op| op["id"].as_str())
        .unwrap_or_else(|| panic!("no operation to name: {list}"))
        .to_string()
}
