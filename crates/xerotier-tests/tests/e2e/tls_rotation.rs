//! The router's TLS CA rotated in phases (SPEC §9, issue 14), end to end on SQLite and
//! PostgreSQL with a real router, real XEMs and `xeroctl router rotate-keys --kind tls`.
//!
//! What is shown: during `update_clients` the CA file holds the old and the new CA and the
//! agents are told both (acknowledged; the rotation waits for them); in `update_servers` the
//! listener presents a certificate of the new CA that a client trusting only the old CA still
//! accepts (cross-signed), and a join key minted before the switch (pinning the old CA) still
//! enrolls a real XEM; after `standby` only the new CA is presented: a client that never
//! refreshed its CA file is refused, while xeroctl with the router's CA file, the XEMs and new
//! join keys keep working. The router is killed -9 in every phase. A rollback from
//! `update_clients` leaves the old CA alone; plain HTTP answers that there is no CA to rotate.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use xerotier_tls::{ca_fingerprint, cert_der};

use crate::fleet_harness::{AGENT_DEADLINE, Xem, enrolled_xem};
use crate::harness::{CliOutput, Router, RouterOptions, Xeroctl, backends, eventually, xeroctl};
use crate::router_keys::{key_kind, kid_in};

const SETTLE: Duration = Duration::from_secs(30);

fn rotate(router: &Router, phase: &str) -> CliOutput {
    xeroctl(router, &["router", "rotate-keys", "--kind", "tls", "--phase", phase, "--yes"])
}

/// The certificates of a PEM file, as their pins, in order.
fn pins_in(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("the CA file");
    text.split_inclusive("-----END CERTIFICATE-----")
        .filter(|block| block.contains("-----BEGIN CERTIFICATE-----"))
        .map(|block| ca_fingerprint(&cert_der(block).expect("a certificate")))
        .collect()
}

/// The pin of the router key `kid` (a TLS CA) as the router lists it: `tls-` is the first 16
/// hex digits of the pin.
fn pin_named(pins: &[String], kid: &str) -> String {
    let hex = kid.strip_prefix("tls-").expect("a tls kid");
    pins.iter()
        .find(|pin| pin.starts_with(&format!("sha256:{hex}")))
        .unwrap_or_else(|| panic!("{kid} among {pins:?}"))
        .clone()
}

/// The CAs the XEM's identity says it trusts for the router's HTTPS.
fn trusted_by(xem: &Xem) -> Vec<String> {
    let Some(identity) = xem.identity() else { return Vec::new() };
    identity["tls_ca_pins"]
        .as_array()
        .map(|pins| pins.iter().filter_map(|p| p.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

async fn wait_trusted(xem: &Xem, want: &[&str]) {
    eventually(&format!("the XEM trusts {want:?}"), SETTLE, || async {
        (trusted_by(xem) == want).then_some(())
    })
    .await;
}

/// A copy of the router's CA file now, as an operator who never refreshes it holds it.
fn frozen_copy(router: &Router, dir: &Path, name: &str) -> PathBuf {
    let copy = dir.join(name);
    std::fs::copy(router.ca_file().expect("a TLS router"), &copy).expect("copying the CA file");
    copy
}

/// Whether a client trusting exactly the CAs in `ca_file` gets `/healthz`.
async fn reaches(router: &Router, ca_file: &Path) -> bool {
    let pem = std::fs::read(ca_file).expect("the CA file");
    let mut builder = reqwest::Client::builder().tls_built_in_root_certs(false);
    for ca in reqwest::Certificate::from_pem_bundle(&pem).expect("PEM certificates") {
        builder = builder.add_root_certificate(ca);
    }
    let client = builder.timeout(Duration::from_secs(10)).build().expect("a client");
    client
        .get(format!("{}/healthz", router.base_url()))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

/// Whether the XEM's trusted pins, used as the XEM's signed key fetch uses them, accept the
/// router's HTTPS.
async fn pinned_reaches(router: &Router, pins: &[String]) -> bool {
    let clock: xerotier_core::SharedClock = std::sync::Arc::new(xerotier_core::SystemClock);
    let tls = xerotier_tls::pinned_client_config_any(pins, clock).expect("pins");
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client");
    client
        .get(format!("{}/healthz", router.base_url()))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

async fn tls_kind(router: &Router) -> Value {
    key_kind(router, "tls").await
}

#[tokio::test]
async fn the_tls_ca_rotates_in_phases_and_xeroctl_xems_and_join_keys_keep_working() {
    for backend in backends().await {
        let files = tempfile::tempdir().expect("tempdir");
        let mut router = Router::start_with(&backend, RouterOptions::fixed_ports()).await;
        let (a, id_a) = enrolled_xem(&router, "xem-tls-a").await;
        let (b, id_b) = enrolled_xem(&router, "xem-tls-b").await;
        let before = tls_kind(&router).await;
        assert_eq!(before["phase"], "standby", "[{}] {before}", backend.name);
        assert!(before["unavailable"].is_null(), "[{}] {before}", backend.name);
        let old = kid_in(&before, "current").expect("the router's CA is imported as current");
        let old_pin = pin_named(&pins_in(&router.ca_file().unwrap()), &old);
        // Agents are told the CA they trust at their first hello.
        wait_trusted(&a, &[&old_pin]).await;
        let old_only = frozen_copy(&router, files.path(), "old-ca.pem");

        rotate(&router, "init").success();
        router.kill();
        router.restart().await;
        let kind = tls_kind(&router).await;
        assert_eq!(kind["phase"], "init", "[{}] {kind}", backend.name);
        let new = kid_in(&kind, "next").expect("the new CA");
        assert_eq!(pins_in(&router.ca_file().unwrap()), [old_pin.as_str()], "init changes no file");

        let told = rotate(&router, "update_clients").success();
        assert!(told.stdout.contains("ca.pem") || told.stderr.contains("ca.pem"), "{told:?}");
        let bundle = pins_in(&router.ca_file().unwrap());
        assert_eq!(bundle.len(), 2, "[{}] the CA file holds old and new: {bundle:?}", backend.name);
        let new_pin = pin_named(&bundle, &new);
        assert_eq!(bundle, [old_pin.clone(), new_pin.clone()]);
        wait_trusted(&a, &[&old_pin, &new_pin]).await;
        // A remote operator refreshes its own CA file over the connection the old CA secures.
        let remote = files.path().join("remote-ca.pem");
        std::fs::copy(&old_only, &remote).unwrap();
        let remote_ctl = Xeroctl::for_router(&router).ca_file(Some(&remote));
        let write = ["router", "ca-bundle", "--write", remote.to_str().unwrap()];
        let dry = remote_ctl.run(&[&["--dry-run"][..], &write[..]].concat()).success();
        assert!(dry.stderr.contains("would write 2"), "{}", dry.stderr);
        assert_eq!(pins_in(&remote), [old_pin.as_str()], "a dry run writes nothing");
        remote_ctl.run(&write).success();
        assert_eq!(pins_in(&remote), bundle, "[{}] the same bundle as ca.pem", backend.name);
        router.kill();
        router.restart().await;
        router.wait_agent_status(&id_b, "active", AGENT_DEADLINE).await;
        wait_trusted(&b, &[&old_pin, &new_pin]).await;
        // The join key an operator hands out now still pins the CA the listener presents.
        let early = router.mint_join_key("before-the-switch").await;
        eventually("update_servers once every live agent trusts the new CA", SETTLE, || async {
            rotate(&router, "update_servers").status.success().then_some(())
        })
        .await;
        router.kill();
        router.restart().await;
        assert_eq!(tls_kind(&router).await["phase"], "update_servers", "[{}]", backend.name);
        assert_eq!(pins_in(&router.ca_file().unwrap()), [new_pin.clone(), old_pin.clone()]);
        // The new CA issues; a client that trusts only the old CA still gets in (cross-signed).
        let new_only = files.path().join("new-ca.pem");
        let new_pem = std::fs::read_to_string(router.ca_file().unwrap()).unwrap();
        let first = new_pem.split_inclusive("-----END CERTIFICATE-----\n").next().unwrap();
        std::fs::write(&new_only, first).unwrap();
        assert!(reaches(&router, &new_only).await, "[{}] a client of the new CA", backend.name);
        assert!(reaches(&router, &old_only).await, "[{}] a client of the old CA", backend.name);
        Xeroctl::for_router(&router).ca_file(Some(&old_only)).run(&["agents"]).success();
        assert!(pinned_reaches(&router, &trusted_by(&a)).await, "[{}]", backend.name);
        assert!(pinned_reaches(&router, std::slice::from_ref(&old_pin)).await);
        // A join key minted before the switch pins the old CA: a real XEM still enrolls.
        let mut late = Xem::new(&router, "xem-tls-late");
        late.start(Some(&early.token));
        let id_late = late.wait_enrolled().await;
        router.wait_agent_status(&id_late, "active", AGENT_DEADLINE).await;

        rotate(&router, "standby").success();
        router.kill();
        router.restart().await;
        let kind = tls_kind(&router).await;
        assert_eq!(kind["phase"], "standby", "[{}] {kind}", backend.name);
        assert_eq!(kid_in(&kind, "current").as_deref(), Some(new.as_str()));
        assert!(
            kid_in(&kind, "next").is_none() && kid_in(&kind, "verify_only").is_none(),
            "{kind}"
        );
        assert_eq!(pins_in(&router.ca_file().unwrap()), [new_pin.as_str()]);
        // Only the new CA is presented now: the frozen old file no longer gets in.
        assert!(!reaches(&router, &old_only).await, "[{}] the old CA is dropped", backend.name);
        assert!(!pinned_reaches(&router, std::slice::from_ref(&old_pin)).await);
        let refused = Xeroctl::for_router(&router).ca_file(Some(&old_only)).run(&["agents"]);
        assert!(!refused.status.success(), "{refused:?}");
        xeroctl(&router, &["agents"]).success();
        remote_ctl.run(&["agents"]).success();
        for (xem, id) in [(&a, &id_a), (&b, &id_b), (&late, &id_late)] {
            wait_trusted(xem, &[&new_pin]).await;
            router.wait_agent_status(id, "active", AGENT_DEADLINE).await;
            assert!(pinned_reaches(&router, &trusted_by(xem)).await, "[{}]", backend.name);
        }
        // New join keys pin the new CA and enroll.
        let (_fresh, id_fresh) = enrolled_xem(&router, "xem-tls-fresh").await;
        router.wait_agent_status(&id_fresh, "active", AGENT_DEADLINE).await;
        for action in ["init", "update_clients", "update_servers", "complete"] {
            let records = router.audit(&format!("action=router_key.{action}")).await;
            assert!(
                records.iter().any(|r| r["target_id"] == "tls"),
                "[{}] {action} audited: {records:?}",
                backend.name
            );
        }
        // Neither CA's private key is in the store in clear (sealed_keys searches for the key
        // bytes themselves on both backends).
        router.kill();
        if backend.is_sqlite() {
            for file in ["router.db", "router.db-wal"] {
                let Ok(bytes) = std::fs::read(router.state_dir().join(file)) else { continue };
                assert!(
                    !bytes.windows(11).any(|w| w == b"PRIVATE KEY"),
                    "{file}: a PEM key in clear"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_tls_rotation_rolled_back_from_update_clients_leaves_the_old_ca() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let (a, _) = enrolled_xem(&router, "xem-tls-rollback").await;
        let old = kid_in(&tls_kind(&router).await, "current").expect("a current CA");
        let old_pin = pin_named(&pins_in(&router.ca_file().unwrap()), &old);
        let old_only_text = std::fs::read(router.ca_file().unwrap()).unwrap();
        rotate(&router, "init").success();
        rotate(&router, "update_clients").success();
        assert_eq!(pins_in(&router.ca_file().unwrap()).len(), 2);
        rotate(&router, "rollback").success();
        let kind = tls_kind(&router).await;
        assert_eq!(kind["phase"], "standby", "[{}] {kind}", backend.name);
        assert_eq!(kind["last_outcome"], "rolled_back", "[{}] {kind}", backend.name);
        assert_eq!(kid_in(&kind, "current").as_deref(), Some(old.as_str()));
        assert_eq!(
            std::fs::read(router.ca_file().unwrap()).unwrap(),
            old_only_text,
            "the old file again"
        );
        wait_trusted(&a, &[&old_pin]).await;
        xeroctl(&router, &["agents"]).success();
    }
}

#[tokio::test]
async fn without_a_ca_of_its_own_the_router_says_why_tls_does_not_rotate() {
    let backend = backends().await.remove(0);
    let router = Router::start_with(
        &backend,
        RouterOptions { extra_args: vec!["--insecure-http".into()], ..RouterOptions::default() },
    )
    .await;
    let kind = tls_kind(&router).await;
    assert!(kind["unavailable"].as_str().is_some_and(|why| why.contains("plain HTTP")), "{kind}");
    let refused = router
        .post_json("/v1/management/router/keys/tls/rotation", &json!({ "phase": "init" }))
        .await;
    refused.assert_error(409, "operation_state");
    assert!(refused.text.contains("plain HTTP"), "{}", refused.text);
    let none = xeroctl(&router, &["router", "ca-bundle"]).failure();
    assert_eq!(none.status.code(), Some(4), "{none:?}");
    assert!(none.stderr.contains("plain HTTP"), "{}", none.stderr);
}

/// Two replicas on one PostgreSQL: a phase changed through one is in force on the other when
/// the call returns (its listener, its `ca.pem`), and the mesh key then rotates through the
/// other replica with the agent moving along.
#[tokio::test]
async fn tls_and_mesh_rotations_changed_through_one_replica_are_in_force_on_the_other() {
    for backend in backends().await {
        if backend.is_sqlite() {
            continue;
        }
        let files = tempfile::tempdir().expect("tempdir");
        let a = Router::start(&backend).await;
        let b = a.replica().await;
        let (xem, id) = enrolled_xem(&a, "xem-tls-replicas").await;
        assert_eq!(pins_in(&b.ca_file().unwrap()), pins_in(&a.ca_file().unwrap()), "one CA");
        let old_only = frozen_copy(&a, files.path(), "old-ca.pem");
        let old = kid_in(&tls_kind(&a).await, "current").expect("a current CA");
        let old_pin = pin_named(&pins_in(&old_only), &old);

        rotate(&a, "init").success();
        rotate(&a, "update_clients").success();
        // Returned once every live replica applied it: B's CA file holds both already.
        let bundle = pins_in(&b.ca_file().unwrap());
        assert_eq!(bundle.len(), 2, "{bundle:?}");
        assert_eq!(bundle, pins_in(&a.ca_file().unwrap()));
        let new_pin = bundle.iter().find(|p| **p != old_pin).expect("the new CA").clone();
        wait_trusted(&xem, &[&old_pin, &new_pin]).await;
        eventually("update_servers through B", SETTLE, || async {
            rotate(&b, "update_servers").status.success().then_some(())
        })
        .await;
        let new_only = files.path().join("new-ca.pem");
        let text = std::fs::read_to_string(a.ca_file().unwrap()).unwrap();
        std::fs::write(
            &new_only,
            text.split_inclusive("-----END CERTIFICATE-----\n").next().unwrap(),
        )
        .unwrap();
        assert_eq!(pins_in(&new_only), [new_pin.as_str()], "the new CA issues on A");
        for replica in [&a, &b] {
            assert!(reaches(replica, &new_only).await, "a client of the new CA");
            assert!(reaches(replica, &old_only).await, "a client of the old CA (cross-signed)");
        }
        rotate(&b, "standby").success();
        for replica in [&a, &b] {
            assert!(reaches(replica, &new_only).await);
            assert!(!reaches(replica, &old_only).await, "the old CA is dropped on every replica");
            assert_eq!(pins_in(&replica.ca_file().unwrap()), [new_pin.as_str()]);
        }
        wait_trusted(&xem, &[&new_pin]).await;

        // The mesh key, through B, with the agent moving along.
        let args =
            ["router", "rotate-keys", "--kind", "mesh", "--auto", "--yes", "--timeout", "60s"];
        xeroctl(&b, &args).success();
        // (The harness's own client of B trusts the CA B had at start: xeroctl reads B's file.)
        let keys = xeroctl(&b, &["-o", "json", "router", "keys"]).success();
        let keys: Value = serde_json::from_str(&keys.stdout).expect("JSON");
        let mesh = keys["kinds"].as_array().unwrap().iter().find(|k| k["kind"] == "mesh").unwrap();
        assert_eq!(mesh["phase"], "standby", "{mesh}");
        assert_eq!(mesh["last_outcome"], "completed", "{mesh}");
        let agent = xeroctl(&a, &["-o", "json", "agents", &id]).success();
        assert!(agent.stdout.contains("\"active\""), "{}", agent.stdout);
    }
}
