//! The source document's API key rotation, command for command
//! (`/work/shared/seed/credential-rotation.txt`, "API Keys"):
//!
//! ```text
//! xeroctl keys create --scope execution --name fleet-ops-2026q2
//! xeroctl keys revoke --name fleet-ops-2026q1
//! ```

use crate::harness::{Router, backends, xeroctl};

/// Runs one line of the source document, exactly as written there.
fn seed_line(router: &Router, line: &str) -> crate::harness::CliOutput {
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[0], "xeroctl", "a seed line starts with xeroctl");
    xeroctl(router, &words[1..])
}

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

        let revoke = seed_line(&router, "xeroctl keys revoke --name fleet-ops-2026q1").success();
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
        let again = seed_line(&router, "xeroctl keys revoke --name fleet-ops-2026q1").failure();
        assert!(again.stderr.contains("fleet-ops-2026q1"), "{}", again.stderr);
    }
}
