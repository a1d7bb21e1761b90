//! A read-only view of one registry entry, for listing and reporting.

use serde::{Deserialize, Serialize};

use crate::process::LivenessCache;
use crate::record::{Record, port_of_key};
use crate::request::Protocol;

/// Who wrote an entry, as far as portlease can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum EntryKind {
    /// A lease made by portlease.
    Portlease,
    /// A lease made by the seed (pid and timestamp only), honoured for 300 s.
    Seed,
    /// An entry portlease does not understand: kept, its port never handed out.
    Unknown,
}

/// One entry of the registry as it stood when it was read.
///
/// This is also the schema of `portlease list --json` (an array of these). Fields will
/// be added as the registry learns more, hence `#[non_exhaustive]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LeaseInfo {
    /// The registry key, as written in the file.
    pub key: String,
    /// The port the key names (`None` for a key that is not a port).
    pub port: Option<u16>,
    /// Who wrote the entry.
    pub kind: EntryKind,
    /// The pid of the process that holds the lease: a portlease lease's owner, a seed
    /// entry's pid; `None` for a lease owned by no process (the pid of the command
    /// that made it, long gone, would mislead).
    pub pid: Option<i64>,
    /// Whether the lease ends with a process (`false`: it lives by its TTL alone).
    pub owned_by_process: bool,
    /// Whether the owner process still runs (`None` when there is no owner).
    pub owner_alive: Option<bool>,
    /// Whether the owner is a process of another PID namespace than the reader's (a
    /// container's, say): its `pid` is that namespace's, and names another process
    /// here, or none. `false` when there is no owner.
    #[serde(default)]
    pub owner_in_other_pid_namespace: bool,
    /// Seconds since the lease was made or last renewed.
    pub age_secs: Option<f64>,
    /// The lease's lifetime in seconds (`None`: for its owner's lifetime).
    pub ttl_secs: Option<f64>,
    /// Seconds until the TTL runs out (0 when it has); `None` with no TTL.
    pub ttl_left_secs: Option<f64>,
    /// The protocols leased.
    pub protocol: Option<Protocol>,
    /// The label given when it was made.
    pub label: Option<String>,
    /// The tool that made it: "library", "cli", "exec" or "serve".
    pub source: Option<String>,
    /// Whether the lease has ended and will be reclaimed.
    pub stale: bool,
}

impl LeaseInfo {
    pub(crate) fn describe(
        key: &str,
        record: &Record,
        now: f64,
        liveness: &mut LivenessCache,
    ) -> LeaseInfo {
        let mut info = LeaseInfo {
            key: key.to_owned(),
            port: port_of_key(key),
            kind: EntryKind::Unknown,
            pid: None,
            owned_by_process: false,
            owner_alive: None,
            owner_in_other_pid_namespace: false,
            age_secs: None,
            ttl_secs: None,
            ttl_left_secs: None,
            protocol: None,
            label: None,
            source: None,
            stale: record.is_stale(now, liveness),
        };
        match record {
            Record::Lease(lease) => {
                info.kind = EntryKind::Portlease;
                info.pid = lease.owner.map(|owner| owner.pid.into());
                info.owned_by_process = lease.owner.is_some();
                info.owner_alive = lease.owner.map(|owner| liveness.is_alive(owner));
                info.owner_in_other_pid_namespace = lease
                    .owner
                    .is_some_and(|owner| !owner.is_in_own_pid_namespace());
                info.age_secs = Some(now - lease.since);
                info.ttl_secs = lease.ttl;
                info.ttl_left_secs = lease.ttl.map(|ttl| (ttl - (now - lease.since)).max(0.0));
                info.protocol = Some(lease.protocol);
                info.label = lease.label.clone();
                info.source = lease.source.clone();
            }
            Record::Seed { pid, timestamp } => {
                info.kind = EntryKind::Seed;
                info.pid = Some(*pid);
                info.age_secs = Some(now - timestamp);
                info.ttl_secs = Some(crate::record::SEED_LEASE_SECS);
                info.ttl_left_secs =
                    Some((crate::record::SEED_LEASE_SECS - (now - timestamp)).max(0.0));
            }
            Record::Unknown => {}
        }
        info
    }
}
