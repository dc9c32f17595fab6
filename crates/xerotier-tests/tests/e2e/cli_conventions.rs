//! `xeroctl`'s conventions (kubectl, vault and tctl are the references): distinct exit codes,
//! confirmation of irreversible and fleet-wide commands (asked on a terminal, refused without
//! one unless `--yes`), `-o table|wide|json|yaml|name` and `--no-headers` on every listing and
//! show, plain aligned columns when stdout is not a terminal, and times with offsets.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::fleet_harness::{AgentKeys, enroll_body};
use crate::harness::{CliOutput, Router, Xeroctl, backends, closed_port, table_cells, xeroctl};

// The exit codes, as README.md ("Exit codes") documents them.
const USAGE: i32 = 2;
const REFUSED: i32 = 3;
const NOT_FOUND: i32 = 4;
const UNAUTHORIZED: i32 = 5;
const UNAVAILABLE: i32 = 6;
const NOT_CONFIRMED: i32 = 7;

fn assert_code(out: &CliOutput, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "xeroctl {:?}: exit {:?}, expected {code}\nstdout: {}\nstderr: {}",
        out.args,
        out.status.code(),
        out.stdout,
        out.stderr
    );
}

/// An agent enrolled over HTTP (no XEM process) with a join key that grants nothing, declaring
/// workspace `staging`: a candidate. Its id and the join key's.
pub(crate) async fn candidate_agent(router: &Router, name: &str) -> (String, String) {
    let join = router.mint_join_key_with(json!({ "name": name })).await;
    let mut body = enroll_body(&join.token, name, &AgentKeys::fresh());
    body["manifest"]["workspaces"] =
        json!([{ "id": "staging", "type": "kubernetes", "credentials_ref": null }]);
    let resp = router.post_enroll(&body).await;
    resp.assert_status(200);
    (resp.json()["agent_id"].as_str().unwrap().to_string(), join.id)
}

// ---------------------------------------------------------------------------------------------
// Exit codes and --help
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn help_shows_global_options_under_their_heading_and_the_exit_codes() {
    let help = Xeroctl::bare().run(&["--help"]).success();
    let global = help.stdout.split("Global options:").nth(1).unwrap_or_else(|| {
        panic!("no `Global options:` heading:\n{}", help.stdout);
    });
    for flag in ["--base-url", "--api-key", "--context", "--output", "--no-headers", "--dry-run"] {
        assert!(global.contains(flag), "{flag} under Global options:\n{}", help.stdout);
    }
    for flag in ["--yes", "--ca-file"] {
        assert!(global.contains(flag), "{flag} under Global options:\n{}", help.stdout);
    }
    assert!(help.stdout.contains("Exit codes"), "{}", help.stdout);
    for line in ["7    not confirmed", "6    router unreachable", "8    still running"] {
        assert!(help.stdout.contains(line), "{line:?} in:\n{}", help.stdout);
    }
    // The short help points to it; a subcommand's help keeps the heading.
    let short = Xeroctl::bare().run(&["-h"]).success();
    assert!(short.stdout.contains("Exit codes: see `xeroctl --help`"), "{}", short.stdout);
    let sub = Xeroctl::bare().run(&["keys", "revoke", "--help"]).success();
    assert!(sub.stdout.contains("Global options:"), "{}", sub.stdout);
}

#[tokio::test]
async fn exit_codes_tell_outcomes_apart() {
    // Usage, locally: clap's own errors and values checked before anything is sent.
    let bare = Xeroctl::bare();
    assert_code(&bare.run(&["--no-such-flag"]), USAGE);
    assert_code(&bare.run(&["keys", "revoke"]), USAGE);
    let down = format!("http://127.0.0.1:{}", closed_port());
    let offline = Xeroctl::bare().base_url(Some(&down)).api_key(Some("xero_whatever"));
    assert_code(&offline.run(&["keys", "rotate", "--name", "x", "--grace", "soon"]), USAGE);
    assert_code(&offline.run(&["agents", "not-an-agent-id"]), USAGE);
    // Unreachable.
    let out = offline.run(&["keys"]);
    assert_code(&out, UNAVAILABLE);
    assert!(out.stderr.contains("cannot reach the router"), "{}", out.stderr);
    // No API key is a usage error.
    assert_code(&Xeroctl::bare().base_url(Some(&down)).run(&["keys"]), USAGE);

    for backend in backends().await {
        let router = Router::start(&backend).await;
        // Not found: by the router (404) and by name.
        let out = xeroctl(&router, &["keys", "show", "key_00000000000000000000000000"]);
        assert_code(&out, NOT_FOUND);
        assert!(out.stderr.contains("not_found"), "{}", out.stderr);
        assert_code(
            &xeroctl(&router, &["keys", "revoke", "--name", "no-such", "--yes"]),
            NOT_FOUND,
        );
        assert_code(&xeroctl(&router, &["agents", "agt_00000000000000000000000000"]), NOT_FOUND);
        // Refused: revoking twice (409), a bad value the router checks (400).
        router.create_key("twice", &["execution"]).await;
        xeroctl(&router, &["keys", "revoke", "--name", "twice", "--yes"]).success();
        let id = router.all_keys().await.into_iter().find(|k| k["name"] == "twice").unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let out = xeroctl(&router, &["keys", "revoke", &id, "--yes"]);
        assert_code(&out, REFUSED);
        assert!(out.stderr.contains("already_revoked"), "{}", out.stderr);
        assert_code(&xeroctl(&router, &["keys", "--limit", "0"]), REFUSED);
        // Unauthorized and forbidden.
        let out = crate::harness::xeroctl_with_key(&router, "xero_bogus", &["audit"]);
        assert_code(&out, UNAUTHORIZED);
        let exec_only = router.create_key("exec-only", &["execution"]).await;
        let out = crate::harness::xeroctl_with_key(&router, &exec_only.value, &["keys"]);
        assert_code(&out, UNAUTHORIZED);
        assert!(out.stderr.contains("scope_insufficient"), "{}", out.stderr);
        // Not confirmed.
        router.create_key("kept", &["execution"]).await;
        assert_code(&xeroctl(&router, &["keys", "revoke", "--name", "kept"]), NOT_CONFIRMED);
        // -o name would lose a value shown only once: refused before anything is created.
        let out = xeroctl(
            &router,
            &["keys", "create", "--scope", "execution", "--name", "lost", "-o", "name"],
        );
        assert_code(&out, USAGE);
        assert!(out.stderr.contains("shown only once"), "{}", out.stderr);
        assert!(router.all_keys().await.iter().all(|k| k["name"] != "lost"));
        // A naive time is a usage error, before anything is sent.
        assert_code(&xeroctl(&router, &["audit", "--since", "2026-11-25T10:00:00"]), USAGE);
    }
}

// ---------------------------------------------------------------------------------------------
// Confirmation
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn irreversible_commands_refuse_without_a_terminal_and_send_nothing() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let doomed = router.create_key("doomed", &["execution"]).await;
        let (agent, _) = candidate_agent(&router, "xem-candidate").await;
        let join = router.mint_join_key("spare").await;
        let ctl = Xeroctl::for_router(&router);
        ctl.run(&["config", "add", "ctx", "--base-url", &router.base_url()]).success();
        let audit_before = router.audit("").await.len();

        let commands: Vec<Vec<&str>> = vec![
            vec!["keys", "revoke", "--name", "doomed"],
            vec!["keys", "rotate", "--name", "doomed", "--grace", "0s"],
            vec!["agents", "revoke-credentials", &agent, "--reason", "test"],
            vec!["agents", "join-keys", &join.id, "--revoke"],
            vec!["agents", "candidates", &agent, "--reject"],
            vec!["agents", "withdraw-grant", &agent, "--workspace", "staging"],
            vec!["exec", "cancel", "inv_00000000000000000000000000"],
            vec!["config", "remove", "ctx"],
        ];
        for args in &commands {
            let out = ctl.run(args);
            assert_code(&out, NOT_CONFIRMED);
            assert!(out.stderr.contains("add --yes"), "{args:?}: {}", out.stderr);
            assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
        }

        // Nothing changed, nothing was recorded.
        assert_eq!(router.show_key(&doomed.id).await["status"], "active");
        assert!(router.show_key(&doomed.id).await["rotated_at"].is_null());
        assert_eq!(router.exec_status(&doomed.value).await, 200);
        assert_ne!(router.agent(&agent).await["status"], "revoked", "[{}]", backend.name);
        assert_eq!(router.join_key(&join.id).await["state"], "active");
        let candidates = router.get_json("/v1/management/candidates").await;
        assert_eq!(candidates["candidates"][0]["workspace"], "staging", "{candidates}");
        assert_eq!(
            router.audit("").await.len(),
            audit_before,
            "[{}] nothing audited",
            backend.name
        );
        assert!(ctl.run(&["config", "list"]).success().stdout.contains("ctx"));

        // --dry-run never asks: it sends nothing.
        let plan = ctl.run(&["keys", "revoke", "--name", "doomed", "--dry-run"]).success();
        assert!(plan.stdout.contains("dry run"), "{}", plan.stdout);
        assert_eq!(router.show_key(&doomed.id).await["status"], "active");

        // At a terminal the operator's answer decides: no, then yes.
        let no = ctl.run_on_terminal(&["agents", "candidates", &agent, "--reject"], "n\n");
        assert_code(&no, NOT_CONFIRMED);
        assert!(no.stderr.contains("Reject the candidates of agent"), "{}", no.stderr);
        let yes = ctl.run_on_terminal(&["agents", "candidates", &agent, "--reject"], "y\n");
        assert!(yes.status.success(), "{yes:?}");
        let view = router.agent(&agent).await;
        assert_eq!(view["workspaces"][0]["state"], "rejected", "{view}");
        ctl.run_on_terminal(&["agents", "revoke-credentials", &agent], "yes\n").success();
        assert_eq!(router.agent(&agent).await["status"], "revoked");
        // -y confirms in advance.
        ctl.run(&["agents", "join-keys", &join.id, "--revoke", "-y"]).success();
        assert_eq!(router.join_key(&join.id).await["state"], "revoked");
    }
}

// ---------------------------------------------------------------------------------------------
// Output formats
// ---------------------------------------------------------------------------------------------

/// `value` without the fields a background writer may change between two reads.
fn settled(mut value: Value) -> Value {
    match &mut value {
        Value::Object(map) => {
            map.remove("last_used_at");
            // A replica's lease is renewed (and its age read) between two calls; an age in
            // whole seconds moves on when the two calls straddle a second.
            for volatile in [
                "heartbeat_age_ms",
                "heartbeat_at",
                "sessions",
                "curve_key_age_seconds",
                "age_seconds",
            ] {
                map.remove(volatile);
            }
            for v in map.values_mut() {
                *v = settled(v.take());
            }
        }
        Value::Array(items) => {
            for v in items.iter_mut() {
                *v = settled(v.take());
            }
        }
        _ => {}
    }
    value
}

/// How many items a listing's JSON holds.
fn item_count(value: &Value) -> usize {
    if let Some(items) = value.as_array() {
        return items.len();
    }
    for field in ["data", "candidates", "pauses", "tools", "replicas"] {
        if let Some(items) = value[field].as_array() {
            return items.len();
        }
    }
    panic!("not a listing: {value}")
}

/// Plain aligned columns: no box characters, and every cell of every row starts where its
/// column's header does (columns are separated by at least two spaces).
fn assert_plain_columns(out: &CliOutput) {
    assert!(!out.stdout.contains(['│', '─', '┆', '╭', '┌', '═']), "borders:\n{}", out.stdout);
    let lines: Vec<Vec<char>> = out.stdout.lines().map(|l| l.chars().collect()).collect();
    let header = lines.first().unwrap_or_else(|| panic!("no table: {:?}", out.args));
    let column_starts = |line: &[char]| -> Vec<usize> {
        (0..line.len())
            .filter(|&i| {
                line[i] != ' ' && (i == 0 || (i >= 2 && line[i - 1] == ' ' && line[i - 2] == ' '))
            })
            .collect()
    };
    let starts = column_starts(header);
    for line in &lines[1..] {
        for start in column_starts(line) {
            assert!(
                starts.contains(&start),
                "a cell at column {start} under no header ({:?}):\n{}",
                out.args,
                out.stdout
            );
        }
    }
}

/// Checks every output format of one listing (`kind` is what `-o name` prints before `/`).
fn check_listing(ctl: &Xeroctl, args: &[&str], kind: &str, wide_adds: bool) {
    let with = |extra: &[&str]| -> CliOutput {
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(extra);
        ctl.run(&all).success()
    };
    let json = with(&["-o", "json"]).json();
    let yaml: Value = serde_norway::from_str(&with(&["-o", "yaml"]).stdout)
        .unwrap_or_else(|e| panic!("{args:?} -o yaml: {e}"));
    assert_eq!(settled(yaml), settled(json.clone()), "{args:?}: YAML and JSON say the same");
    let names = with(&["-o", "name"]);
    let lines: Vec<&str> = names.stdout.lines().collect();
    assert_eq!(lines.len(), item_count(&json), "{args:?} -o name:\n{}", names.stdout);
    for line in &lines {
        let (k, id) = line.split_once('/').unwrap_or_else(|| panic!("{line:?} is not kind/id"));
        assert!(k == kind && !id.is_empty() && !id.contains(' '), "{args:?}: {line:?}");
    }
    let table = with(&[]);
    assert_plain_columns(&table);
    assert_eq!(table.stdout.lines().count(), item_count(&json) + 1, "{}", table.stdout);
    let bare = with(&["--no-headers"]);
    assert_eq!(bare.stdout.lines().count(), item_count(&json), "{}", bare.stdout);
    assert_eq!(
        bare.stdout.lines().map(table_cells).collect::<Vec<_>>(),
        table.stdout.lines().skip(1).map(table_cells).collect::<Vec<_>>(),
        "{args:?} --no-headers drops the header line only"
    );
    let wide = with(&["-o", "wide"]);
    assert_plain_columns(&wide);
    let header_cells = |out: &CliOutput| out.stdout.lines().next().unwrap().split("  ").count();
    if wide_adds {
        assert!(header_cells(&wide) > header_cells(&table), "{args:?}:\n{}", wide.stdout);
    }
}

/// Checks every output format of one show command.
fn check_show(ctl: &Xeroctl, args: &[&str], kind: &str, id: &str) {
    let with = |extra: &[&str]| -> CliOutput {
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(extra);
        ctl.run(&all).success()
    };
    let json = with(&["-o", "json"]).json();
    let yaml: Value = serde_norway::from_str(&with(&["-o", "yaml"]).stdout).unwrap();
    assert_eq!(settled(yaml), settled(json), "{args:?}");
    assert_eq!(with(&["-o", "name"]).stdout, format!("{kind}/{id}\n"), "{args:?}");
    let text = with(&[]);
    assert!(text.stdout.contains(id), "{args:?}: {}", text.stdout);
    assert!(!text.stdout.contains(['│', '─', '┆']), "{args:?}: {}", text.stdout);
}

#[tokio::test]
async fn every_listing_and_show_speaks_every_output_format() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        router.create_key("fleet-ops-2026q2", &["execution"]).await;
        let (agent, join_id) = candidate_agent(&router, "xem-formats").await;
        let spare = router.mint_join_key("spare").await;
        xeroctl(&router, &["agents", "pause-exec", &agent, "--workspace", "staging"]).success();
        xeroctl(&router, &["agents", "pause-exec", &agent]).success();
        let ctl = Xeroctl::for_router(&router);
        ctl.run(&["config", "add", "local", "--base-url", &router.base_url()]).success();

        check_listing(&ctl, &["keys", "--include-revoked"], "apikey", true);
        check_listing(&ctl, &["agents"], "agent", true);
        check_listing(&ctl, &["agents", &agent, "--events"], "event", true);
        check_listing(&ctl, &["agents", "join-keys", "--include-terminal"], "joinkey", true);
        check_listing(&ctl, &["agents", "candidates"], "candidate", true);
        check_listing(&ctl, &["agents", "pauses", &agent], "pause", false);
        check_listing(&ctl, &["audit"], "audit", true);
        check_listing(&ctl, &["config", "list"], "context", true);
        check_listing(&ctl, &["exec", "list"], "invocation", true);
        check_listing(&ctl, &["router", "replicas"], "replica", true);

        let bootstrap = router.admin_key_id().await;
        check_show(&ctl, &["keys", "show", "--name", "bootstrap"], "apikey", &bootstrap);
        check_show(&ctl, &["agents", &agent], "agent", &agent);
        check_show(&ctl, &["agents", "join-keys", &join_id], "joinkey", &join_id);
        check_show(&ctl, &["agents", "join-keys", &spare.id], "joinkey", &spare.id);

        // The candidate's name says which agent and workspace.
        let names = ctl.run(&["agents", "candidates", "-o", "name"]).success();
        assert_eq!(names.stdout, format!("candidate/{agent}/staging\n"));
        let pauses = ctl.run(&["agents", "pauses", &agent, "-o", "name"]).success();
        assert!(pauses.stdout.contains(&format!("pause/{agent}\n")), "{}", pauses.stdout);
        assert!(pauses.stdout.contains(&format!("pause/{agent}/staging\n")), "{}", pauses.stdout);
    }
}

// ---------------------------------------------------------------------------------------------
// Times
// ---------------------------------------------------------------------------------------------

/// `at` written with the UTC offset `+HH:MM` (`sign` -1 for west of UTC).
fn with_offset(at: SystemTime, sign: i64, hours: u64, minutes: u64) -> String {
    let shift = Duration::from_secs(hours * 3600 + minutes * 60);
    let local = if sign > 0 { at + shift } else { at - shift };
    let text = humantime::format_rfc3339_seconds(local).to_string();
    let sign = if sign > 0 { '+' } else { '-' };
    format!("{}{sign}{hours:02}:{minutes:02}", text.trim_end_matches('Z'))
}

#[tokio::test]
async fn times_take_offsets_and_refuse_naive_ones() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        router.create_key("timed", &["execution"]).await;
        let count = |out: &CliOutput| out.json()["data"].as_array().unwrap().len();
        let audit = |since: &str| {
            xeroctl(
                &router,
                &["audit", "--action", "api_key.create", "--since", since, "-o", "json"],
            )
        };
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);

        // An hour ago, written in India's and New York's offsets, and in UTC: the record.
        for since in [
            with_offset(now - hour, 1, 5, 30),
            with_offset(now - hour, -1, 5, 0),
            humantime::format_rfc3339_seconds(now - hour).to_string(),
            "15m".to_string(),
        ] {
            assert_eq!(count(&audit(&since).success()), 1, "[{}] --since {since}", backend.name);
        }
        // An hour from now, with an offset: nothing yet. Read as UTC, +01:00 would be wrong.
        let later = with_offset(now + hour, 1, 1, 0);
        assert_eq!(count(&audit(&later).success()), 0, "--since {later}");
        let until =
            xeroctl(&router, &["audit", "--until", "2000-01-01T01:00:00+01:00", "-o", "json"])
                .success();
        assert_eq!(count(&until), 0);

        // A time without an offset is refused, saying what to add; so is nonsense.
        let naive = audit("2026-11-25T10:00:00");
        assert_code(&naive, USAGE);
        assert!(naive.stderr.contains("no UTC offset"), "{}", naive.stderr);
        assert!(naive.stderr.contains("+01:00"), "an example with an offset: {}", naive.stderr);
        assert_code(&audit("yesterday"), USAGE);

        // The API takes offsets too, and refuses a naive time.
        let path = |since: &str| {
            format!("/v1/management/audit?since={}", since.replace('+', "%2B").replace(':', "%3A"))
        };
        let resp = router
            .api()
            .get(&path(&with_offset(now - hour, 1, 1, 0)), Some(router.admin_key()))
            .await;
        resp.assert_status(200);
        assert!(!resp.json()["data"].as_array().unwrap().is_empty(), "{}", resp.text);
        let resp = router.api().get(&path("2026-11-25T10:00:00"), Some(router.admin_key())).await;
        resp.assert_error(400, "invalid_request");
    }
}

// ---------------------------------------------------------------------------------------------
// Trusting the router's CA
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn config_add_fetch_ca_trusts_the_routers_ca_only_once_confirmed() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let pin = crate::tls::pin_of(&router.ca_file().expect("the router serves HTTPS"));
        let key_file = router.bootstrap_key_path();
        let ctl = Xeroctl::bare(); // no CA: the system's CAs do not know the router's
        let saved_ca = ctl.config_path().with_file_name("prod-ca.pem");
        let base_url = router.base_url();
        let add = |name: &str, extra: &[&str]| -> Vec<String> {
            let mut args: Vec<String> = ["config", "add", name, "--base-url", &base_url]
                .iter()
                .map(|a| a.to_string())
                .collect();
            args.extend(["--api-key-file".into(), key_file.to_str().unwrap().into()]);
            args.push("--fetch-ca".into());
            args.extend(extra.iter().map(|a| a.to_string()));
            args
        };
        let run = |args: &[String], typed: Option<&str>| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            match typed {
                Some(typed) => ctl.run_on_terminal(&args, typed),
                None => ctl.run(&args),
            }
        };
        let nothing_saved = |what: &str| {
            assert!(!saved_ca.exists(), "{what}: no CA saved");
            assert!(!ctl.config_path().exists(), "{what}: no context saved");
        };

        // Never trusted silently: no terminal and no --ca-fingerprint refuses, --yes too.
        for extra in [&[][..], &["--yes"][..]] {
            let out = run(&add("prod", extra), None);
            assert_code(&out, NOT_CONFIRMED);
            assert!(out.stderr.contains(&pin), "shows the fingerprint: {}", out.stderr);
            nothing_saved("no terminal");
        }
        let wrong = format!("sha256:{}", "0".repeat(64));
        let out = run(&add("prod", &["--ca-fingerprint", &wrong]), None);
        assert_code(&out, NOT_CONFIRMED);
        assert!(out.stderr.contains("not trusted"), "{}", out.stderr);
        nothing_saved("a wrong fingerprint");
        // At a terminal the operator compares and answers.
        let no = run(&add("prod", &[]), Some("n\n"));
        assert_code(&no, NOT_CONFIRMED);
        assert!(no.stderr.contains(&pin) && no.stderr.contains("[y/N]"), "{}", no.stderr);
        nothing_saved("answered no");
        run(&add("prod", &[]), Some("y\n")).success();
        assert_eq!(crate::tls::pin_of(&saved_ca), pin, "the router's CA is saved");
        let config = std::fs::read_to_string(ctl.config_path()).unwrap();
        assert!(config.contains("ca_file") && config.contains("prod-ca.pem"), "{config}");
        assert!(ctl.run(&["keys"]).success().stdout.contains("bootstrap"));
        // Without a terminal, the matching fingerprint is the confirmation.
        run(&add("prod2", &["--ca-fingerprint", &pin]), None).success();
        ctl.run(&["--context", "prod2", "keys"]).success();

        // Replicas of one store present its one CA (SPEC §9: the CA lives in the store).
        if !backend.is_sqlite() {
            let replica = router.replica().await;
            assert_eq!(crate::tls::pin_of(&replica.ca_file().unwrap()), pin, "one CA per store");
        }
        // The context trusts only that CA: another router's certificate (its own store, its
        // own CA) is refused.
        let other = Router::start(&backends().await.remove(0)).await;
        assert_ne!(crate::tls::pin_of(&other.ca_file().unwrap()), pin);
        let out = ctl.run(&[
            "--context",
            "prod",
            "--base-url",
            &other.base_url(),
            "--api-key",
            other.admin_key(),
            "keys",
        ]);
        assert_code(&out, UNAVAILABLE);
        assert!(out.stderr.contains("TLS") && out.stderr.contains("--ca-file"), "{}", out.stderr);
        // --fetch-ca is for https:// URLs.
        let plain = ctl.run(&[
            "config",
            "add",
            "plain",
            "--base-url",
            "http://127.0.0.1:1",
            "--fetch-ca",
            "--ca-fingerprint",
            &pin,
        ]);
        assert_code(&plain, USAGE);
    }
}
