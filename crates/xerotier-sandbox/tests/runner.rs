//! The runner binary on its own: a bad spec never starts anything, a probe applies a spec and
//! reports what holds, and a tool that asks for Landlock on a spec it cannot meet is not run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

use xerotier_sandbox::{Identity, LandlockMode, LandlockStatus, LaunchSpec, ProbeReport};

fn runner() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xerotier-tool-runner"))
}

fn spec(executable: &str, identity: Option<Identity>) -> LaunchSpec {
    LaunchSpec::with_defaults(PathBuf::from(executable), identity)
}

#[test]
fn malformed_specs_start_nothing_and_say_why() {
    for (args, expected) in [
        (vec![], "usage: xerotier-tool-runner"),
        (vec!["{not json"], "the launch spec is not valid"),
        (vec![r#"{"executable":"/bin/true","surprise":1}"#], "unknown field"),
    ] {
        let out = runner().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(127), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let relative = serde_json::to_string(&spec("true", None)).unwrap();
    let out = runner().arg(relative).output().unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("absolute path"));
}

#[test]
fn a_spec_that_asks_for_a_credential_it_was_not_given_is_refused() {
    let mut wanted = spec("/bin/true", None);
    wanted.has_credential = true;
    let out = runner().arg(serde_json::to_string(&wanted).unwrap()).output().unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("credential snapshot is missing"));
}

#[test]
fn the_probe_drops_to_the_tool_user_and_reports_landlock() {
    assert!(nix::unistd::geteuid().is_root(), "the probe test drops to `nobody`: run as root");
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let identity = Identity { uid: nobody.uid.as_raw(), gid: nobody.gid.as_raw() };
    let out = runner()
        .arg("--probe")
        .arg(serde_json::to_string(&spec("/bin/true", Some(identity))).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: ProbeReport = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report.uid, report.gid), (identity.uid, identity.gid));
    assert_ne!(report.landlock, LandlockStatus::Off);
    // Root as the target is a spec a XEM never writes; the runner still proves what it got.
    let mut off = spec("/bin/true", None);
    off.landlock = LandlockMode::Off;
    let out = runner().arg("--probe").arg(serde_json::to_string(&off).unwrap()).output().unwrap();
    let report: ProbeReport = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report.landlock, LandlockStatus::Off);
}

#[test]
fn limits_reach_the_tool() {
    let mut limited = spec("/bin/sh", None);
    limited.limits.open_files = 40;
    limited.landlock = LandlockMode::Off;
    // /bin/sh reads its script from stdin here.
    let mut child = runner()
        .arg(serde_json::to_string(&limited).unwrap())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"ulimit -n\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "40\n");
}
