//! Membership and failover (issue 12 part 4): which router replicas exist and which are live,
//! the mesh addresses agents may fail over to, and the sweep that releases the work of agents
//! whose replica died.
//!
//! The registry itself (`router_replicas`: each replica's addresses and lease) is written by
//! the replicas' registration and lease renewal; this module only reads it, and judges a
//! replica by the database's clock, never this process's.

pub mod handlers;
pub mod sweep;

use std::sync::Arc;

use parking_lot::Mutex;
use xerotier_core::{SharedClock, UnixMillis};
use xerotier_proto::formats::is_mesh_addr;
use xerotier_proto::mesh::MAX_REPLICA_ADDRS;
use xerotier_proto::status::ReplicaStatus;
use xerotier_store::{ReplicaRecord, Store};

use crate::mesh_link::MeshLink;
use crate::service_error::ServiceError;

/// How long a read of the live replicas' addresses is reused for hellos: a replica's death
/// reconnects all its agents to the others at once, and one read serves them all.
const ADDRS_TTL_MS: i64 = 1_000;

/// A replica as of the database's clock.
#[derive(Debug, Clone)]
pub struct Replica {
    pub record: ReplicaRecord,
    pub status: ReplicaStatus,
    /// Since its last lease renewal, by the database's clock (0 if that reads as future).
    pub heartbeat_age_ms: i64,
}

impl Replica {
    pub fn at(record: ReplicaRecord, db_now: UnixMillis) -> Self {
        let status = if record.stopped_at.is_some() {
            ReplicaStatus::Stopped
        } else if record.lease_expires_at > db_now {
            ReplicaStatus::Live
        } else {
            ReplicaStatus::Expired
        };
        let heartbeat_age_ms = (db_now - record.heartbeat_at).max(0);
        Self { record, status, heartbeat_age_ms }
    }
}

/// The live replicas' addresses as last read, and when.
type CachedAddrs = Option<(UnixMillis, Vec<String>)>;

#[derive(Debug, Clone)]
pub struct ReplicaService {
    store: Store,
    clock: SharedClock,
    link: Arc<MeshLink>,
    addrs: Arc<Mutex<CachedAddrs>>,
}

impl ReplicaService {
    pub fn new(store: Store, clock: SharedClock, link: Arc<MeshLink>) -> Self {
        Self { store, clock, link, addrs: Arc::new(Mutex::new(None)) }
    }

    /// This replica's mesh link.
    pub fn link(&self) -> &Arc<MeshLink> {
        &self.link
    }

    /// Every registered replica, newest first, with its status.
    pub async fn list(&self) -> Result<Vec<Replica>, ServiceError> {
        let db_now = self.store.db_now().await?;
        let records = self.store.list_replicas().await?;
        Ok(records.into_iter().map(|r| Replica::at(r, db_now)).collect())
    }

    /// The mesh addresses an agent may connect to: this replica's first (it is the one
    /// answering), then every other live replica's, without duplicates, at most
    /// [`MAX_REPLICA_ADDRS`]. When the registry cannot be read (or has no rows yet), this
    /// replica's alone.
    pub async fn live_mesh_addrs(&self) -> Vec<String> {
        let now = self.clock.now_millis();
        if let Some((at, addrs)) = self.addrs.lock().as_ref()
            && now - at < ADDRS_TTL_MS
            && now >= *at
        {
            return addrs.clone();
        }
        let own = self.link.advertised_mesh_addr();
        let mut addrs = vec![own];
        match self.list().await {
            Ok(replicas) => {
                let live = replicas
                    .into_iter()
                    .filter(|r| r.status == ReplicaStatus::Live)
                    .map(|r| r.record.mesh_addr);
                for addr in live {
                    if addrs.len() >= MAX_REPLICA_ADDRS {
                        break;
                    }
                    if is_mesh_addr(&addr) && !addrs.contains(&addr) {
                        addrs.push(addr);
                    }
                }
                *self.addrs.lock() = Some((now, addrs.clone()));
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not read the replica registry; agents are told this replica's address only");
            }
        }
        addrs
    }
}
