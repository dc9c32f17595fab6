//! `xeroctl` as an operator uses it: dry runs, JSON output, errors, contexts, completion,
//! pagination.

use std::os::unix::fs::PermissionsExt;

use serde_json::Value;

use crate::harness::{Router, Xeroctl, backends, closed_port, xeroctl};

/// How many requests with `method` the router answered on `route` (a route template), by its
/// own metrics.
pub(crate) async fn requests_seen(router: &Router, method: &str, route: &str) -> f64 {
    let text = router.api().get("/metrics", None).await.text;
    text.lines()
        .filter(|l| l.starts_with("xerotier_router_http_requests_total{"))
        .filter(|l| {
            l.contains(&format!(r#"method="{method}""#))
                && l.contains(&format!(r#"route="{route}""#))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[tokio::test]
async fn dry_run_prints_the_plan_and_sends_nothing() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let victim = router.create_key("victim", &["execution"]).await;
        let creates_before = requests_seen(&router, "POST", "/v1/management/api-keys").await;
        let audit_before = router.audit("").await.len();

        // keys create
        let out = xeroctl(
            &router,
            &["--dry-run", "keys", "create", "--scope", "execution", "--name", "fleet-ops-2026q3"],
        )
        .success();
        assert!(out.stdout.contains("dry run"), "{}", out.stdout);
        assert!(
            out.stdout.contains(&format!("POST {}/v1/management/api-keys", router.base_url())),
            "method and URL: {}",
            out.stdout
        );
        assert!(out.stdout.contains("fleet-ops-2026q3"), "the body: {}", out.stdout);
        assert!(
            !out.all().contains(router.admin_key()),
            "the API key is never printed: {}",
            out.all()
        );
        assert!(!out.all().contains("value:"), "{}", out.all());
        assert!(
            !out.stderr.contains("cannot be shown again"),
            "nothing was created: {}",
            out.stderr
        );

        // keys revoke --name (the id lookup is a read; the revoke is not sent)
        let out = xeroctl(&router, &["keys", "revoke", "--name", "victim", "--dry-run"]).success();
        assert!(
            out.stdout.contains(&format!(
                "POST {}/v1/management/api-keys/{}/revoke",
                router.base_url(),
                victim.id
            )),
            "{}",
            out.stdout
        );
        assert!(!out.all().contains(router.admin_key()), "{}", out.all());

        // keys rotate, in JSON
        let out = xeroctl(
            &router,
            &["-o", "json", "--dry-run", "keys", "rotate", "--name", "victim", "--grace", "0s"],
        )
        .success();
        let plan = out.json();
        assert_eq!(plan["dry_run"], true);
        assert_eq!(plan["method"], "POST");
        assert!(
            plan["url"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/v1/management/api-keys/{}/rotate", victim.id))
        );
        assert_eq!(plan["body"]["grace_seconds"], 0);
        assert!(!out.all().contains(router.admin_key()), "{}", out.all());

        // Nothing happened.
        let keys = router.all_keys().await;
        assert_eq!(keys.len(), 2, "[{}] no key created: {keys:?}", backend.name);
        assert_eq!(router.show_key(&victim.id).await["status"], "active");
        assert!(router.show_key(&victim.id).await["rotated_at"].is_null());
        assert_eq!(router.exec_status(&victim.value).await, 200);
        assert_eq!(router.audit("").await.len(), audit_before, "no audit record");
        assert_eq!(requests_seen(&router, "POST", "/v1/management/api-keys").await, creates_before);
        assert_eq!(
            requests_seen(&router, "POST", "/v1/management/api-keys/{id}/revoke").await,
            0.0
        );
        assert_eq!(
            requests_seen(&router, "POST", "/v1/management/api-keys/{id}/rotate").await,
            0.0
        );
        // Control: the same commands without --dry-run are seen by those counters.
        xeroctl(&router, &["keys", "revoke", "--name", "victim", "--yes"]).success();
        assert_eq!(
            requests_seen(&router, "POST", "/v1/management/api-keys/{id}/revoke").await,
            1.0
        );
        xeroctl(&router, &["keys", "create", "--scope", "execution", "--name", "fleet-ops-2026q3"])
            .success();
        assert_eq!(
            requests_seen(&router, "POST", "/v1/management/api-keys").await,
            creates_before + 1.0
        );

        // A dry run needs no router for a create.
        let offline = Xeroctl::bare()
            .base_url(Some(&format!("http://127.0.0.1:{}", closed_port())))
            .api_key(Some(router.admin_key()))
            .run(&["--dry-run", "keys", "create", "--scope", "execution", "--name", "offline"])
            .success();
        assert!(offline.stdout.contains("POST"), "{}", offline.stdout);
    }
}

#[tokio::test]
async fn json_output_parses() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let created = xeroctl(
            &router,
            &["keys", "create", "--scope", "execution", "--name", "json-key", "-o", "json"],
        )
        .success();
        let issued = created.json();
        let id = issued["key"]["id"].as_str().unwrap().to_string();
        assert!(id.starts_with("key_"));
        assert!(issued["value"].as_str().unwrap().starts_with("xero_"));
        assert_eq!(issued["key"]["scopes"], serde_json::json!(["execution"]));
        assert!(created.stderr.contains("cannot be shown again"), "{}", created.stderr);

        let list = xeroctl(&router, &["keys", "-o", "json"]).success().json();
        let names: Vec<&str> =
            list["data"].as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["bootstrap", "json-key"]);
        assert_eq!(list["has_more"], false);
        let list_sub = xeroctl(&router, &["keys", "list", "-o", "json"]).success().json();
        // The router records `last_used_at` in the background, so it may appear between the
        // two listings; everything else is the same.
        let without_last_used = |mut page: serde_json::Value| {
            for key in page["data"].as_array_mut().unwrap() {
                key.as_object_mut().unwrap().remove("last_used_at");
            }
            page
        };
        assert_eq!(without_last_used(list_sub), without_last_used(list.clone()));

        let shown = xeroctl(&router, &["keys", "show", &id, "-o", "json"]).success().json();
        assert_eq!(shown["id"], id.as_str());
        assert_eq!(shown["status"], "active");
        assert!(shown["created_by"].as_str().is_some_and(|c| c.starts_with("key_")));

        let revoked =
            xeroctl(&router, &["-o", "json", "keys", "revoke", &id, "-y"]).success().json();
        assert_eq!(revoked["status"], "revoked");

        let audit = xeroctl(&router, &["audit", "-o", "json"]).success().json();
        assert!(audit["data"].as_array().is_some_and(|d| d.len() >= 3), "{audit}");

        let contexts = xeroctl(&router, &["config", "list", "-o", "json"]).success().json();
        assert!(contexts.as_array().is_some_and(Vec::is_empty), "{contexts}");

        // A key id that is not one is caught before anything is sent.
        let bad = xeroctl(&router, &["keys", "show", "json-key"]).failure();
        assert!(bad.stderr.contains("--name"), "{}", bad.stderr);
    }
}

#[tokio::test]
async fn unreachable_router_and_missing_key_are_clear_errors() {
    let port = closed_port();
    let out = Xeroctl::bare()
        .base_url(Some(&format!("http://127.0.0.1:{port}")))
        .api_key(Some("xero_whatever"))
        .run(&["keys"])
        .failure();
    assert!(out.stderr.contains("cannot reach the router"), "{}", out.stderr);
    assert!(out.stderr.contains(&port.to_string()), "names the address: {}", out.stderr);
    assert!(!out.stderr.contains("xero_whatever"), "{}", out.stderr);

    for backend in backends().await {
        let router = Router::start(&backend).await;
        let out = Xeroctl::bare().base_url(Some(&router.base_url())).run(&["keys"]).failure();
        assert!(out.stderr.contains("no API key"), "{}", out.stderr);
        assert!(out.stderr.contains("XEROCTL_API_KEY"), "says how to give one: {}", out.stderr);
        let out = Xeroctl::bare()
            .base_url(Some(&router.base_url()))
            .api_key(Some("  "))
            .run(&["keys"])
            .failure();
        assert!(out.stderr.contains("empty"), "{}", out.stderr);
        // A wrong key: the router's refusal, with its code and the request id.
        let out = crate::harness::xeroctl_with_key(&router, "xero_bogus", &["audit"]).failure();
        assert!(
            out.stderr.contains("invalid_api_key") && out.stderr.contains("401"),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("request "), "{}", out.stderr);
        // An unknown key id.
        let out = xeroctl(&router, &["keys", "revoke", "--name", "no-such-key"]).failure();
        assert!(out.stderr.contains("no-such-key"), "{}", out.stderr);
        // A bad flag value is refused locally.
        let out = xeroctl(&router, &["keys", "rotate", "--name", "bootstrap", "--grace", "soon"])
            .failure();
        assert!(out.stderr.contains("--grace"), "{}", out.stderr);
        assert_eq!(router.audit("action=api_key.rotate").await.len(), 0);
    }
}

#[tokio::test]
async fn contexts_in_the_config_file() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let key_file = router.bootstrap_key_path();
        let ca = router.ca_file().expect("the router serves HTTPS");
        let ctl = Xeroctl::bare(); // only XEROCTL_CONFIG is set
        // Without the router's CA the system's CAs are used, which do not know it.
        let untrusted =
            ctl.run(&["--base-url", &router.base_url(), "--api-key", router.admin_key(), "keys"]);
        assert!(!untrusted.status.success());
        assert!(untrusted.stderr.contains("--ca-file"), "says what to do: {}", untrusted.stderr);
        ctl.run(&[
            "config",
            "add",
            "local",
            "--base-url",
            &router.base_url(),
            "--ca-file",
            ca.to_str().unwrap(),
            "--api-key-file",
            key_file.to_str().unwrap(),
        ])
        .success();
        ctl.run(&["config", "use", "local"]).success();
        let keys = ctl.run(&["keys"]).success();
        assert!(keys.stdout.contains("bootstrap"), "{}", keys.stdout);

        let config = ctl.config_path();
        let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the config file is private");
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(
            !text.contains(router.admin_key()),
            "a key file is referenced, not copied:\n{text}"
        );

        // A context with the key stored inline, selected per call with --context.
        let exec = router.create_key("ctx-exec", &["execution"]).await;
        ctl.run(&[
            "config",
            "add",
            "exec-only",
            "--base-url",
            &router.base_url(),
            "--ca-file",
            ca.to_str().unwrap(),
            "--api-key",
            &exec.value,
        ])
        .success();
        let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "still private with a key inside");
        let list = ctl.run(&["config", "list"]).success();
        assert!(
            list.stdout.contains("local") && list.stdout.contains("exec-only"),
            "{}",
            list.stdout
        );
        assert!(
            !list.all().contains(&exec.value),
            "config list never shows a key: {}",
            list.stdout
        );
        let refused = ctl.run(&["--context", "exec-only", "keys"]).failure();
        assert!(refused.stderr.contains("scope_insufficient"), "{}", refused.stderr);
        ctl.run(&["keys"]).success(); // the current context is still `local`

        // Flags beat the context.
        let down = format!("http://127.0.0.1:{}", closed_port());
        let out = ctl.run(&["--base-url", &down, "keys"]).failure();
        assert!(out.stderr.contains("cannot reach the router"), "{}", out.stderr);

        // Unknown contexts are errors, not silent fallbacks.
        let out = ctl.run(&["config", "use", "nope"]).failure();
        assert!(out.stderr.contains("nope"), "{}", out.stderr);
        let out = ctl.run(&["--context", "nope", "keys"]).failure();
        assert!(out.stderr.contains("nope"), "{}", out.stderr);

        ctl.run(&["config", "remove", "local", "--yes"]).success();
        let out = ctl.run(&["keys"]).failure();
        assert!(
            out.stderr.contains("no API key") || out.stderr.contains("cannot reach"),
            "{}",
            out.stderr
        );
    }
}

#[tokio::test]
async fn completion_script() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Xeroctl::bare().run(&["completion", shell]).success();
        assert!(out.stdout.contains("xeroctl"), "{shell}: {}", out.stdout);
        assert!(out.stdout.contains("keys"), "{shell}: subcommands are completed");
    }
    let out = Xeroctl::bare().run(&["completion", "bash"]).success();
    assert!(out.stdout.contains("complete") && out.stdout.contains("_xeroctl"), "{}", out.stdout);
}

#[tokio::test]
async fn pagination_with_limit_and_after() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        for n in 1..=5 {
            router.create_key(&format!("page-{n}"), &["execution"]).await;
        }
        // Table: two rows and a hint on stderr.
        let first = xeroctl(&router, &["keys", "--limit", "2"]).success();
        let rows: Vec<&str> = first.stdout.lines().filter(|l| l.contains("key_")).collect();
        assert_eq!(rows.len(), 2, "{}", first.stdout);
        assert!(
            first.stderr.contains("--after key_"),
            "a hint for the next page: {}",
            first.stderr
        );
        let after = first
            .stderr
            .split("--after ")
            .nth(1)
            .unwrap()
            .trim_end_matches(|c: char| !c.is_alphanumeric());
        let second = xeroctl(&router, &["keys", "--limit", "2", "--after", after]).success();
        let second_rows: Vec<&str> = second.stdout.lines().filter(|l| l.contains("key_")).collect();
        assert_eq!(second_rows.len(), 2, "{}", second.stdout);
        assert!(rows.iter().all(|r| !second_rows.contains(r)), "pages do not overlap");

        // JSON: walk every page.
        let mut names = Vec::new();
        let mut ids = Vec::new();
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut args = vec!["keys", "-o", "json", "--limit", "2"];
            if let Some(after) = &after {
                args.extend(["--after", after.as_str()]);
            }
            let page: Value = xeroctl(&router, &args).success().json();
            pages += 1;
            let data = page["data"].as_array().unwrap();
            assert!(data.len() <= 2);
            names.extend(data.iter().map(|k| k["name"].as_str().unwrap().to_string()));
            ids.extend(data.iter().map(|k| k["id"].as_str().unwrap().to_string()));
            match page["next_after"].as_str() {
                Some(next) => {
                    assert_eq!(page["has_more"], true);
                    assert_eq!(Some(next), data.last().and_then(|k| k["id"].as_str()));
                    after = Some(next.to_string());
                }
                None => {
                    assert_eq!(page["has_more"], false);
                    break;
                }
            }
            assert!(pages < 10, "pagination does not end");
        }
        // Every key exactly once, in id order (the cursor's order). Ids are time-ordered only
        // to the millisecond, so keys made within one millisecond may come in any order.
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "[{}] ids ascend: {ids:?}", backend.name);
        assert_eq!(names[0], "bootstrap");
        names.sort();
        assert_eq!(
            names,
            ["bootstrap", "page-1", "page-2", "page-3", "page-4", "page-5"],
            "[{}]",
            backend.name
        );
        assert_eq!(pages, 3);
        // The last page carries no hint.
        let last = xeroctl(&router, &["keys", "--limit", "10"]).success();
        assert!(!last.stderr.contains("--after"), "{}", last.stderr);

        // Audit pages the same way.
        let audit = xeroctl(&router, &["audit", "--limit", "2"]).success();
        assert!(audit.stderr.contains("--after aud_"), "{}", audit.stderr);
        let out = xeroctl(&router, &["keys", "--limit", "0"]).failure();
        assert!(out.stderr.contains("limit"), "{}", out.stderr);
    }
}
