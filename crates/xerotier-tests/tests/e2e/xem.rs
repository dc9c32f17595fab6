//! The XEM's configuration: a flat YAML file (nested values and unknown keys refused at start),
//! no start without an identity or a join key, key files private.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::fleet_harness::{AGENT_DEADLINE, Xem, XemConfig};
use crate::harness::{EXIT_DEADLINE, Router, backends, closed_port};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Starts a XEM on `config` alone and expects it to refuse at start with `message`.
fn assert_refused_config(config: &str, message: &str) {
    let router_url = format!("http://127.0.0.1:{}", closed_port());
    let mut xem = Xem::with_config(&router_url, "xem-config", XemConfig::YamlFile);
    xem.start_with_config_text(config);
    let status = xem.wait_exit(EXIT_DEADLINE);
    assert_eq!(status.code(), Some(1), "{config:?}: {status}\n{}", xem.logs());
    let stderr = xem.stderr();
    assert!(stderr.contains(message), "{config:?}: expected {message:?} in: {stderr}");
    assert!(
        stderr.contains(&xem.config_path().display().to_string()),
        "the error names the file: {stderr}"
    );
    assert!(!xem.state_dir().exists(), "nothing was created");
}

#[tokio::test]
async fn a_bad_config_file_is_refused_at_start() {
    // Nested values, whatever the key.
    for config in [
        "router_url:\n  host: router\n  port: 8080\n",
        "registration_name: [a, b]\n",
        "router_url: http://router:8080\nlease_renewal_interval_ms: {ms: 200}\n",
    ] {
        assert_refused_config(config, "flat scalar keys only");
    }
    // Unknown keys (a typo must not be silently ignored).
    assert_refused_config("router_url: http://router:8080\nrouter_urll: http://x\n", "router_urll");
    assert_refused_config("join-key: abc\n", "unknown key");
    // Not a mapping at all.
    assert_refused_config("- router_url\n", "mapping");
}

#[tokio::test]
async fn without_an_identity_or_a_join_key_the_xem_does_not_start() {
    // The config is complete but for the join key; no router is needed to refuse.
    let router_url = format!("http://127.0.0.1:{}", closed_port());
    for config in [XemConfig::Flags, XemConfig::YamlFile] {
        let mut xem = Xem::with_config(&router_url, "xem-unenrolled", config);
        xem.start(None);
        let status = xem.wait_exit(EXIT_DEADLINE);
        assert!(!status.success() && status.code().is_some(), "{config:?}: {status}");
        assert!(
            xem.stderr().contains("not enrolled and no join key"),
            "{config:?}: a clear message: {}",
            xem.stderr()
        );
        assert!(!xem.identity_path().exists());
    }
}

#[tokio::test]
async fn a_xem_from_a_flat_config_file_enrolls_with_private_files() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let key = router.mint_join_key("from-yaml").await;
        let mut xem = Xem::with_config(&router.base_url(), "xem-yaml", XemConfig::YamlFile);
        xem.start(Some(&key.token));
        let id = xem.wait_enrolled().await;
        router.wait_agent_status(&id, "active", AGENT_DEADLINE).await;
        let config = std::fs::read_to_string(xem.config_path()).unwrap();
        assert!(config.contains("join_key_file:"), "the join key came from its file: {config}");

        // Every file the XEM created holds a secret or its identity: owner only.
        for file in [xem.curve_key_path(), xem.signing_key_path(), xem.identity_path()] {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        assert_eq!(mode(&xem.state_dir()), 0o700);
        let secret = std::fs::read_to_string(xem.curve_key_path()).unwrap();
        assert!(!std::fs::read_to_string(xem.identity_path()).unwrap().contains(secret.trim()));
        assert!(!xem.logs().contains(&key.token), "the join key is never logged");

        // Restarted from the file without its join key, it is the same agent.
        assert!(xem.stop_with_sigterm().success());
        router.wait_agent_status(&id, "disconnected", AGENT_DEADLINE).await;
        xem.restart();
        assert!(!std::fs::read_to_string(xem.config_path()).unwrap().contains("join_key"));
        router.wait_agent_status(&id, "active", AGENT_DEADLINE).await;
        assert_eq!(router.all_agents().await.len(), 1);
    }
}
