//! The source document's commands, exactly as written there
//! (`/work/shared/seed/credential-rotation.txt`). "API Keys":
//!
//! ```text
//! xeroctl keys create --scope execution --name fleet-ops-2026q2
//! xeroctl keys revoke --name fleet-ops-2026q1
//! ```
//!
//! `keys revoke` asks for confirmation (the revoke is immediate and cannot be undone): an
//! operator at a terminal answers it, so the line runs on a pseudo-terminal where `y` is typed;
//! without a terminal it refuses and revokes nothing.
//!
//! "Join Keys" (`jk_abc123` is a placeholder there: the id the create printed is used):
//!
//! ```text
//! xeroctl agents join-keys --create --name xem-fleet-02 --region us-east --router-addr tcp://router:5555 --ttl-seconds 600
//! xeroctl agents join-keys
//! xeroctl agents join-keys --include-terminal
//! xeroctl agents join-keys jk_abc123 --revoke --force
//! ```

use std::time::Duration;

use crate::fleet_harness::{enroll, jwt_parts};
use crate::harness::{CliOutput, Router, Xeroctl, backends, xeroctl};

/// The arguments of one line of the source document, exactly as written there.
fn seed_words(line: &str) -> Vec<&str> {
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[0], "xeroctl", "a seed line starts with xeroctl");
    words[1..].to_vec()
}

/// Runs one line of the source document, exactly as written there (no terminal).
fn seed_line(router: &Router, line: &str) -> CliOutput {
    xeroctl(router, &seed_words(line))
}

/// Runs one line of the source document at a terminal where the operator types `typed`.
fn seed_line_on_terminal(router: &Router, line: &str, typed: &str) -> CliOutput {
    Xeroctl::for_router(router).run_on_terminal(&seed_words(line), typed)
}

/// xeroctl's status when a command was not confirmed (README, "Exit codes").
const NOT_CONFIRMED: i32 = 7;

#[tokio::test]
async fn seed_api_key_rotation_works_as_written() {
    for backend in backends().await {
        let router = Router::start(&backend).await;

        // The key being rotated out, as it was issued last quarter.
        let q1 = xeroctl(
            &router,
            &["keys", "create", "--scope", "execution", "--name", "fleet-ops-2026q1"],
        )
        .success();
        let q1_value = q1.issued_value();

        // Create the new key first ...
        let create =
            seed_line(&router, "xeroctl keys create --scope execution --name fleet-ops-2026q2")
                .success();
        let q2_value = create.issued_value();
        assert_ne!(q1_value, q2_value);
        assert_eq!(
            create.stdout.matches(&q2_value).count(),
            1,
            "value printed once:\n{}",
            create.stdout
        );
        assert_eq!(
            create.stdout.matches("xero_").count(),
            1,
            "one value on stdout:\n{}",
            create.stdout
        );
        assert!(
            !create.stderr.contains(&q2_value),
            "value must not go to stderr: {}",
            create.stderr
        );
        assert!(create.stdout.contains("fleet-ops-2026q2"), "{}", create.stdout);
        assert!(create.stdout.contains("key_"), "the key id is shown: {}", create.stdout);
        assert!(
            create.stderr.contains("cannot be shown again"),
            "a warning that the value cannot be shown again, on stderr: {:?}",
            create.stderr
        );

        // ... so that callers have a clean cutover: both work until the revoke.
        assert_eq!(router.exec_status(&q1_value).await, 200, "[{}] q1 before revoke", backend.name);
        assert_eq!(router.exec_status(&q2_value).await, 200, "[{}] q2 before revoke", backend.name);

        // The revoke asks first; the operator answers y.
        let revoke =
            seed_line_on_terminal(&router, "xeroctl keys revoke --name fleet-ops-2026q1", "y\n")
                .success();
        assert!(
            revoke.stderr.contains("Revoke API key fleet-ops-2026q1 (key_")
                && revoke.stderr.contains("[y/N]"),
            "the question names the key: {}",
            revoke.stderr
        );
        assert!(revoke.stdout.contains("fleet-ops-2026q1"), "{}", revoke.stdout);
        assert!(!revoke.all().contains("xero_"), "revoke prints no key value: {}", revoke.all());

        // The revoke is immediate.
        let refused = router.api().get("/v1/exec/tools", Some(&q1_value)).await;
        refused.assert_error(401, "invalid_api_key");
        let accepted = router.api().get("/v1/exec/tools", Some(&q2_value)).await;
        accepted.assert_status(200);
        assert!(accepted.json()["tools"].is_array(), "{}", accepted.text);

        // And the key listing tells the story.
        let keys = router.all_keys().await;
        let status_of = |name: &str| {
            keys.iter()
                .find(|k| k["name"] == name)
                .unwrap_or_else(|| panic!("{name} listed: {keys:?}"))["status"]
                .clone()
        };
        assert_eq!(status_of("fleet-ops-2026q1"), "revoked");
        assert_eq!(status_of("fleet-ops-2026q2"), "active");
        // The old name is gone from the active keys: revoking it again is refused.
        let again =
            seed_line_on_terminal(&router, "xeroctl keys revoke --name fleet-ops-2026q1", "y\n")
                .failure();
        assert!(again.stderr.contains("fleet-ops-2026q1"), "{}", again.stderr);
        assert_eq!(again.status.code(), Some(4), "not found: {}", again.stderr);
    }
}

#[tokio::test]
async fn seed_key_revoke_without_a_terminal_or_with_a_no_revokes_nothing() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let q1 = router.create_key("fleet-ops-2026q1", &["execution"]).await;
        let line = "xeroctl keys revoke --name fleet-ops-2026q1";

        // A script (no terminal on stdin): refused, saying how to confirm.
        let refused = seed_line(&router, line);
        assert_eq!(refused.status.code(), Some(NOT_CONFIRMED), "{refused:?}");
        assert!(refused.stderr.contains("--yes"), "says to add --yes: {}", refused.stderr);
        assert!(refused.stderr.contains("not a terminal"), "{}", refused.stderr);
        assert!(refused.stdout.is_empty(), "{}", refused.stdout);

        // An operator who answers anything but yes.
        for typed in ["n\n", "\n", "nope\n"] {
            let declined = seed_line_on_terminal(&router, line, typed);
            assert_eq!(declined.status.code(), Some(NOT_CONFIRMED), "{typed:?}: {declined:?}");
            assert!(declined.stderr.contains("not confirmed"), "{}", declined.stderr);
        }

        // Nothing was revoked, nothing was sent: the key works, no revoke was audited.
        assert_eq!(router.show_key(&q1.id).await["status"], "active", "[{}]", backend.name);
        assert_eq!(router.exec_status(&q1.value).await, 200);
        assert!(router.audit("action=api_key.revoke").await.is_empty(), "[{}]", backend.name);

        // --yes (or --force) confirms in advance, for scripts.
        let forced = xeroctl(&router, &["keys", "revoke", "--name", "fleet-ops-2026q1", "--force"])
            .success();
        assert!(forced.stdout.contains("Revoked API key fleet-ops-2026q1"), "{}", forced.stdout);
        assert_eq!(router.show_key(&q1.id).await["status"], "revoked");
    }
}

fn rfc3339(text: &str) -> std::time::SystemTime {
    humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"))
}

#[tokio::test]
async fn seed_join_keys_work_as_written() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let admin_id = router.admin_key_id().await;

        let create = seed_line(
            &router,
            "xeroctl agents join-keys --create --name xem-fleet-02 --region us-east \
             --router-addr tcp://router:5555 --ttl-seconds 600",
        )
        .success();
        let id = create.field("join_key_id");
        assert!(id.starts_with("jk_"), "a jk_ id: {}", create.stdout);
        assert_eq!(create.field("name"), "xem-fleet-02");
        assert_eq!(create.field("region"), "us-east");
        assert_eq!(create.field("router_addr"), "tcp://router:5555");
        assert_eq!(create.field("role"), "execution", "the router's default role");
        // The token: printed once, on stdout only, with a warning on stderr.
        let token = create.field("token");
        assert_eq!(create.stdout.matches(&token).count(), 1, "{}", create.stdout);
        assert!(!create.stderr.contains(&token), "the token must not go to stderr");
        assert!(
            create.stderr.contains("WARNING") && create.stderr.contains("shown only now"),
            "a warning that the token is shown only now, on stderr: {:?}",
            create.stderr
        );
        // It is an EdDSA JWT of the router, for this key.
        let (header, claims) = jwt_parts(&token);
        assert_eq!(header["alg"], "EdDSA", "{header}");
        assert!(header["kid"].as_str().is_some_and(|k| !k.is_empty()), "{header}");
        assert_eq!(claims["jti"], id.as_str(), "{claims}");
        assert_eq!(claims["name"], "xem-fleet-02");
        assert_eq!(claims["region"], "us-east");
        assert_eq!(claims["router_addr"], "tcp://router:5555");
        assert_eq!(claims["role"], "execution");
        assert_eq!(claims["aud"], "xerotier-enroll");
        let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
        assert!((599..=600).contains(&lifetime), "exp - iat = {lifetime}: {claims}");
        // The router knows it with its TTL and creator, never its token.
        let view = router.join_key(&id).await;
        assert_eq!(view["state"], "active");
        assert_eq!(view["created_by"], admin_id.as_str());
        let ttl = rfc3339(view["expires_at"].as_str().unwrap())
            .duration_since(rfc3339(view["created_at"].as_str().unwrap()))
            .unwrap();
        assert_eq!(ttl, Duration::from_secs(600), "{view}");
        assert!(!view.to_string().contains(&token));

        let active = seed_line(&router, "xeroctl agents join-keys").success();
        assert_eq!(
            active.header(&["ID", "NAME", "STATE"]),
            ["ID", "NAME", "STATE", "ROLE", "REGION", "EXPIRES", "ENDED", "BY"]
        );
        let row = active.row(&id);
        assert_eq!(row[..5], [id.as_str(), "xem-fleet-02", "active", "execution", "us-east"]);
        assert!(!active.stdout.contains(&token), "listings never show the token");
        let all = seed_line(&router, "xeroctl agents join-keys --include-terminal").success();
        assert_eq!(all.row(&id)[2], "active", "{}", all.stdout);

        let revoke_line = format!("xeroctl agents join-keys {id} --revoke --force");
        let revoke = seed_line(&router, &revoke_line).success();
        assert!(revoke.stdout.contains(&id), "{}", revoke.stdout);
        let view = router.join_key(&id).await;
        assert_eq!(view["state"], "revoked", "{view}");
        assert_eq!(view["revoked_by"], admin_id.as_str(), "{view}");
        let revoked_at = view["revoked_at"].as_str().expect("revoked_at").to_string();

        // The terminal listing says revoked, when and by whom; the active one drops the key.
        let all = seed_line(&router, "xeroctl agents join-keys --include-terminal").success();
        let row = all.row(&id);
        assert_eq!(row[2], "revoked", "{}", all.stdout);
        assert_eq!(row[row.len() - 2..], [revoked_at.as_str(), admin_id.as_str()], "{row:?}");
        let active = seed_line(&router, "xeroctl agents join-keys").success();
        assert!(active.rows_with(&id).is_empty(), "revoked key still listed:\n{}", active.stdout);

        // Revoked means revoked: no enrollment with it, and a second revoke is refused.
        let (resp, _) = enroll(&router, &token, "xem-fleet-02").await;
        resp.assert_error(401, "join_key_revoked");
        let again = seed_line(&router, &revoke_line).failure();
        assert!(again.stderr.contains(&id), "{}", again.stderr);
        assert!(router.all_agents().await.is_empty());
    }
}
