//! The router replicas this agent may hold its session with, and which one it is on.
//!
//! The router names every live replica's mesh address in its enrollment answer and after every
//! hello. A router is not trusted to choose what the agent dials: a list is taken only if every
//! entry is a mesh address (`tcp://host:port`, `formats::is_mesh_addr`) and it has at most
//! [`MAX_REPLICA_ADDRS`] of them; otherwise it is refused whole and the previous list stays.
//! The address the agent enrolled with (pinned by its join key) is always kept. All replicas
//! share the router's CURVE identity, so the agent keeps the same server key whichever it
//! dials, and a replica that is not the router cannot complete the handshake.
//!
//! The list is kept next to the identity (`replicas.json`, 0600, written atomically), so an
//! agent restarted while its replica is down still knows where else to go.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use xerotier_credentials::write_secret_file;
use xerotier_proto::formats::is_mesh_addr;
use xerotier_proto::mesh::MAX_REPLICA_ADDRS;

const REPLICAS_FILE: &str = "replicas.json";

/// Why a received list was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ListRefused {
    #[error("the list is empty")]
    Empty,
    #[error("the list has {0} addresses, more than {MAX_REPLICA_ADDRS}")]
    TooLong(usize),
    #[error("entry {0} is not a mesh address (tcp://host:port)")]
    NotMeshAddr(usize),
}

/// Checks a received list; duplicates are dropped, the order kept.
pub fn parse(addrs: Vec<String>) -> Result<Vec<String>, ListRefused> {
    if addrs.is_empty() {
        return Err(ListRefused::Empty);
    }
    if addrs.len() > MAX_REPLICA_ADDRS {
        return Err(ListRefused::TooLong(addrs.len()));
    }
    if let Some(bad) = addrs.iter().position(|a| !is_mesh_addr(a)) {
        return Err(ListRefused::NotMeshAddr(bad));
    }
    let mut unique: Vec<String> = Vec::with_capacity(addrs.len());
    for addr in addrs {
        if !unique.contains(&addr) {
            unique.push(addr);
        }
    }
    Ok(unique)
}

#[derive(Debug, Serialize, Deserialize)]
struct OnDisk {
    mesh_addrs: Vec<String>,
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(REPLICAS_FILE)
}

/// The addresses, the enrolled one always among them, and the one in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replicas {
    state_dir: PathBuf,
    enrolled: String,
    addrs: Vec<String>,
    current: usize,
}

impl Replicas {
    /// The saved list (when there is a valid one), else the enrolled address alone. Starts on
    /// the enrolled address.
    pub fn load(state_dir: &Path, enrolled: &str) -> Self {
        let saved = std::fs::read(path(state_dir))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<OnDisk>(&bytes).ok())
            .map(|disk| parse(disk.mesh_addrs));
        let mut replicas = Self {
            state_dir: state_dir.to_path_buf(),
            enrolled: enrolled.to_string(),
            addrs: vec![enrolled.to_string()],
            current: 0,
        };
        match saved {
            Some(Ok(addrs)) => replicas.set(addrs),
            Some(Err(err)) => {
                tracing::warn!(error = %err, "ignoring the saved replica list");
            }
            None => {}
        }
        replicas
    }

    /// Saves an enrollment answer's list (refused lists leave the enrolled address alone).
    pub fn save_enrolled(state_dir: &Path, enrolled: &str, received: Vec<String>) {
        let mut replicas = Self::load(state_dir, enrolled);
        if let Err(err) = replicas.update(received) {
            tracing::warn!(error = %err, "the router's replica list was refused");
        }
    }

    /// The address to connect to now.
    pub fn current(&self) -> &str {
        self.addrs.get(self.current).unwrap_or(&self.enrolled)
    }

    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// Moves to the next address (round robin) and returns it.
    pub fn advance(&mut self) -> &str {
        self.current = (self.current + 1) % self.addrs.len().max(1);
        self.current()
    }

    /// Takes a list received from the router: checked, the enrolled address kept, saved when
    /// it changed. The address in use stays in use when it is still listed.
    pub fn update(&mut self, received: Vec<String>) -> Result<bool, ListRefused> {
        let addrs = parse(received)?;
        let before = self.addrs.clone();
        self.set(addrs);
        if self.addrs == before {
            return Ok(false);
        }
        if let Err(err) = self.save() {
            tracing::warn!(error = %err, "could not save the replica list");
        }
        Ok(true)
    }

    fn set(&mut self, mut addrs: Vec<String>) {
        if !addrs.contains(&self.enrolled) {
            // Never more than the bound: the enrolled address takes the last place.
            addrs.truncate(MAX_REPLICA_ADDRS - 1);
            addrs.push(self.enrolled.clone());
        }
        let in_use = self.current().to_string();
        self.current = addrs.iter().position(|a| *a == in_use).unwrap_or(0);
        self.addrs = addrs;
    }

    fn save(&self) -> anyhow::Result<()> {
        let text = serde_json::to_vec_pretty(&OnDisk { mesh_addrs: self.addrs.clone() })?;
        let file = path(&self.state_dir);
        write_secret_file(&file, &text).with_context(|| format!("writing {}", file.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const ENROLLED: &str = "tcp://router-a:5555";

    fn list(addrs: &[&str]) -> Vec<String> {
        addrs.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn a_valid_list_is_taken_saved_0600_and_keeps_the_enrolled_address() {
        let dir = tempfile::tempdir().unwrap();
        let mut replicas = Replicas::load(dir.path(), ENROLLED);
        assert_eq!(replicas.addrs(), [ENROLLED]);
        let changed = replicas.update(list(&["tcp://router-b:5555", "tcp://[::1]:6000"])).unwrap();
        assert!(changed);
        assert_eq!(replicas.addrs(), ["tcp://router-b:5555", "tcp://[::1]:6000", ENROLLED]);
        // Still on the enrolled one: it is listed.
        assert_eq!(replicas.current(), ENROLLED);
        let mode = std::fs::metadata(path(dir.path())).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A restart reads it back.
        assert_eq!(Replicas::load(dir.path(), ENROLLED).addrs(), replicas.addrs());
        // The same list again writes nothing new.
        assert!(!replicas.update(list(&["tcp://router-b:5555", "tcp://[::1]:6000"])).unwrap());
    }

    #[test]
    fn failover_goes_round_the_list() {
        let dir = tempfile::tempdir().unwrap();
        let mut replicas = Replicas::load(dir.path(), ENROLLED);
        replicas.update(list(&[ENROLLED, "tcp://b:1", "tcp://c:2"])).unwrap();
        assert_eq!(replicas.current(), ENROLLED);
        assert_eq!(replicas.advance(), "tcp://b:1");
        assert_eq!(replicas.advance(), "tcp://c:2");
        assert_eq!(replicas.advance(), ENROLLED);
        // A new list keeps the one in use.
        replicas.advance();
        replicas.update(list(&["tcp://c:2", "tcp://b:1"])).unwrap();
        assert_eq!(replicas.current(), "tcp://b:1");
    }

    /// Hostile: a router (compromised, or a man in the middle of nothing, since the mesh is
    /// CURVE) tries to make the agent dial something other than a mesh endpoint, or to make it
    /// hold an unbounded list.
    #[test]
    fn hostile_lists_are_refused_whole_and_the_previous_list_stays() {
        let dir = tempfile::tempdir().unwrap();
        let mut replicas = Replicas::load(dir.path(), ENROLLED);
        replicas.update(list(&["tcp://b:1"])).unwrap();
        let before = replicas.clone();
        let long_host = format!("tcp://{}:1", "a".repeat(254));
        let hostile: Vec<(Vec<String>, ListRefused)> = vec![
            (list(&[]), ListRefused::Empty),
            (list(&["tcp://b:1", "ipc:///var/run/docker.sock"]), ListRefused::NotMeshAddr(1)),
            (list(&["http://evil.example:80"]), ListRefused::NotMeshAddr(0)),
            (list(&["pgm://eth0;239.192.1.1:5555"]), ListRefused::NotMeshAddr(0)),
            (list(&["inproc://zeromq.zap.01"]), ListRefused::NotMeshAddr(0)),
            (list(&["tcp://eth0;evil:5555"]), ListRefused::NotMeshAddr(0)),
            (list(&["tcp://host"]), ListRefused::NotMeshAddr(0)),
            (list(&["tcp://host:0"]), ListRefused::NotMeshAddr(0)),
            (list(&["tcp://host:65536"]), ListRefused::NotMeshAddr(0)),
            (list(&["tcp://host:5555/path"]), ListRefused::NotMeshAddr(0)),
            (list(&["tcp://ho st:5555"]), ListRefused::NotMeshAddr(0)),
            (vec![long_host], ListRefused::NotMeshAddr(0)),
            (vec!["tcp://b:1".to_string(); MAX_REPLICA_ADDRS + 1], ListRefused::TooLong(33)),
            ((0..10_000).map(|i| format!("tcp://h{i}:1")).collect(), ListRefused::TooLong(10_000)),
        ];
        for (addrs, why) in hostile {
            assert_eq!(replicas.update(addrs.clone()), Err(why), "{addrs:?}");
            assert_eq!(replicas, before);
        }
        assert_eq!(Replicas::load(dir.path(), ENROLLED).addrs(), before.addrs());
    }

    #[test]
    fn a_tampered_or_corrupt_saved_list_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), br#"{"mesh_addrs":["ipc:///tmp/x"]}"#).unwrap();
        assert_eq!(Replicas::load(dir.path(), ENROLLED).addrs(), [ENROLLED]);
        std::fs::write(path(dir.path()), b"not json").unwrap();
        assert_eq!(Replicas::load(dir.path(), ENROLLED).addrs(), [ENROLLED]);
    }

    #[test]
    fn a_full_list_without_the_enrolled_address_still_ends_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut replicas = Replicas::load(dir.path(), ENROLLED);
        let full: Vec<String> = (0..MAX_REPLICA_ADDRS).map(|i| format!("tcp://h{i}:1")).collect();
        replicas.update(full).unwrap();
        assert_eq!(replicas.addrs().len(), MAX_REPLICA_ADDRS);
        assert_eq!(replicas.addrs().last().map(String::as_str), Some(ENROLLED));
    }
}
