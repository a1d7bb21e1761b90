//! What one registry entry says, and whether it is stale.
//!
//! Three kinds of entry share the file:
//! - portlease's leases, which carry an `"owner"` field (`"process"` or `"none"`);
//! - the seed's, with `pid` and `timestamp` only, judged as the seed judges them:
//!   stale 300 s after their timestamp, whatever became of the pid;
//! - anything else (a key that is not a port, a value that is not an object, an
//!   object missing its fields). Those are kept as they are, and their ports are never
//!   handed out: portlease cannot tell whether they are still in use.

use serde_json::{Map, Value, json};

use crate::process::{LivenessCache, ProcessId};
use crate::request::Protocol;

/// How long the seed honours an entry after its timestamp.
pub const SEED_LEASE_SECS: f64 = 300.0;

/// One entry, as far as portlease understands it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Record {
    /// A lease written by portlease.
    Lease(LeaseRecord),
    /// A lease written by the seed: pid and timestamp.
    Seed { pid: i64, timestamp: f64 },
    /// Not understood: kept, and its port (if it names one) is not handed out.
    Unknown,
}

/// A lease written by portlease.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LeaseRecord {
    /// The owner pid; for an owner-less lease, the pid that allocated it.
    pub(crate) pid: u32,
    /// Unix seconds of the allocation or last renewal.
    pub(crate) timestamp: f64,
    /// The owner process, or `None` for a lease that lives by its TTL alone.
    pub(crate) owner: Option<ProcessId>,
    /// Seconds the lease lives after `timestamp`; `None` for the owner's lifetime.
    pub(crate) ttl: Option<f64>,
    pub(crate) protocol: Protocol,
    pub(crate) label: Option<String>,
    /// Which tool made it: "library", "cli", "exec", "serve".
    pub(crate) source: Option<String>,
    /// Identifies the guard that holds it, so a guard never releases a port that
    /// expired and went to somebody else.
    pub(crate) token: Option<String>,
}

impl Record {
    pub(crate) fn read(value: &Value) -> Record {
        let Some(entry) = value.as_object() else {
            return Record::Unknown;
        };
        let timestamp = entry.get("timestamp").and_then(Value::as_f64);
        if entry.contains_key("owner") {
            return LeaseRecord::read(entry).map_or(Record::Unknown, Record::Lease);
        }
        match (entry.get("pid").and_then(Value::as_i64), timestamp) {
            (Some(pid), Some(timestamp)) => Record::Seed { pid, timestamp },
            _ => Record::Unknown,
        }
    }

    /// Whether the entry's time has run out: judged without looking up any owner.
    pub(crate) fn has_expired(&self, now: f64) -> bool {
        match self {
            Record::Lease(lease) => lease.has_expired(now),
            Record::Seed { timestamp, .. } => now - timestamp > SEED_LEASE_SECS,
            Record::Unknown => false,
        }
    }

    /// Whether the lease has ended: its owner is gone or its time has run out.
    /// An entry not understood is never stale.
    pub(crate) fn is_stale(&self, now: f64, liveness: &mut LivenessCache) -> bool {
        match self {
            Record::Lease(lease) => lease.is_stale(now, liveness),
            Record::Seed { .. } | Record::Unknown => self.has_expired(now),
        }
    }
}

impl LeaseRecord {
    fn read(entry: &Map<String, Value>) -> Option<LeaseRecord> {
        let pid = u32::try_from(entry.get("pid")?.as_u64()?).ok()?;
        let timestamp = entry.get("timestamp")?.as_f64()?;
        let owner = match entry.get("owner")?.as_str()? {
            "process" => Some(ProcessId {
                pid,
                start_time: entry.get("start_time").and_then(Value::as_u64),
            }),
            "none" => None,
            _ => return None,
        };
        let ttl = match entry.get("ttl") {
            None | Some(Value::Null) => None,
            Some(ttl) => Some(ttl.as_f64().filter(|t| *t >= 0.0)?),
        };
        if owner.is_none() && ttl.is_none() {
            return None;
        }
        let text = |key: &str| entry.get(key).and_then(Value::as_str).map(str::to_owned);
        let protocol = match entry.get("proto").and_then(Value::as_str) {
            Some("udp") => Protocol::Udp,
            Some("both") => Protocol::Both,
            _ => Protocol::Tcp,
        };
        Some(LeaseRecord {
            pid,
            timestamp,
            owner,
            ttl,
            protocol,
            label: text("label"),
            source: text("source"),
            token: text("token"),
        })
    }

    /// The entry as it is written to the file.
    pub(crate) fn to_value(&self) -> Value {
        let mut entry = json!({
            "pid": self.pid,
            "timestamp": self.timestamp,
            "owner": if self.owner.is_some() { "process" } else { "none" },
            "ttl": self.ttl,
            "proto": self.protocol.as_str(),
        });
        let Some(map) = entry.as_object_mut() else {
            unreachable!("json! of an object literal is an object")
        };
        if let Some(start_time) = self.owner.and_then(|o| o.start_time) {
            map.insert("start_time".into(), start_time.into());
        }
        for (key, value) in [
            ("label", &self.label),
            ("source", &self.source),
            ("token", &self.token),
        ] {
            if let Some(value) = value {
                map.insert(key.into(), value.as_str().into());
            }
        }
        entry
    }

    fn has_expired(&self, now: f64) -> bool {
        self.ttl.is_some_and(|ttl| now - self.timestamp > ttl)
    }

    pub(crate) fn is_stale(&self, now: f64, liveness: &mut LivenessCache) -> bool {
        self.has_expired(now) || self.owner.is_some_and(|owner| !liveness.is_alive(owner))
    }
}

/// The port a registry key names, if it names one.
pub(crate) fn port_of_key(key: &str) -> Option<u16> {
    key.trim().parse::<u16>().ok().filter(|&port| port != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_reads_back_as_written() {
        let lease = LeaseRecord {
            pid: 42,
            timestamp: 1000.5,
            owner: Some(ProcessId {
                pid: 42,
                start_time: Some(7),
            }),
            ttl: Some(300.0),
            protocol: Protocol::Both,
            label: Some("db".into()),
            source: Some("cli".into()),
            token: Some("t".into()),
        };
        assert_eq!(Record::read(&lease.to_value()), Record::Lease(lease));
    }

    #[test]
    fn seed_entries_expire_after_300_seconds_whatever_their_pid() {
        let seed = Record::read(&json!({"pid": 999_999_999, "timestamp": 1000.0}));
        let mut liveness = LivenessCache::default();
        assert!(!seed.is_stale(1000.0 + 299.0, &mut liveness));
        assert!(seed.is_stale(1000.0 + 301.0, &mut liveness));
    }

    #[test]
    fn entries_not_understood_are_never_stale() {
        let mut liveness = LivenessCache::default();
        for value in [
            json!(5),
            json!({"pid": "x"}),
            json!({"owner": "alien", "pid": 1, "timestamp": 0}),
        ] {
            let record = Record::read(&value);
            assert_eq!(record, Record::Unknown, "{value}");
            assert!(!record.is_stale(1e12, &mut liveness));
        }
    }
}
