//! What one registry entry says, and whether it is stale.
//!
//! Three kinds of entry share the file:
//! - portlease's leases, which carry an `"owner"` field (`"process"` or `"none"`);
//! - the seed's, with `pid` and `timestamp` only, judged as the seed judges them:
//!   stale 300 s after their timestamp (or the [`Request::seed_lease`] of the request
//!   being served), whatever became of the pid. An object without `"owner"` is one
//!   of these even if `pid` or `timestamp` is missing: the seed counts a missing
//!   timestamp as 0, so such an entry is stale at once, as the seed reclaims it;
//! - anything else (a key that is not a port, a value that is not an object, a
//!   field of the wrong type). Those are kept as they are, and their ports are never
//!   handed out: portlease cannot tell whether they are still in use.
//!
//! [`Request::seed_lease`]: crate::Request::seed_lease
//!
//! # The `timestamp` portlease writes
//! The seed reclaims an entry once `now - timestamp > 300`, whatever else it says. So
//! in its own leases portlease writes `timestamp` as the moment the seed should start
//! counting, and keeps the truth in its own fields (`leased_at`, `ttl`, `owner`):
//! - a lease with a TTL: its end plus a day ([`SKEW_ALLOWANCE_SECS`]) minus 300 s,
//!   so the seed reclaims it a day after it ends, unless a portlease transaction
//!   removes it first (an allocation that meets it, a sweep, a `gc`). The day is for
//!   clocks that disagree: a writer whose clock is behind the seed's by D stamps
//!   everything D early, and with `end - 300` the seed would end the lease D before
//!   its writer does (at once, for a day behind and a TTL under a day). With the
//!   day, the seed never ends a TTL lease before its writer's clock says it ended,
//!   unless that clock is more than a day behind the seed's;
//! - a lease that lives as long as its owner process: a day ahead
//!   ([`OWNER_HORIZON_SECS`]), moved ahead again by any transaction that meets the lease
//!   alive once it is an hour old ([`REFRESH_AFTER_SECS`]). When the owner is gone, the
//!   first allocation or `gc` that meets the lease removes it, and the seed may take
//!   the port from then on.

use serde_json::{Value, json};

use crate::process::{LivenessCache, ProcessId};
use crate::request::Protocol;

/// How long the seed honours an entry after its timestamp.
pub const SEED_LEASE_SECS: f64 = 300.0;

/// How far ahead of now a lease owned by a process (with no TTL) sets the `timestamp`
/// the seed judges it by: the seed leaves it alone for this long even if no portlease
/// process runs meanwhile.
pub const OWNER_HORIZON_SECS: f64 = 86_400.0;

/// How far behind the seed's clock a writer's clock may be without the seed ending
/// one of its TTL leases early: a TTL lease's `timestamp` is its end plus this,
/// minus [`SEED_LEASE_SECS`] (see the module docs).
pub const SKEW_ALLOWANCE_SECS: f64 = 86_400.0;

/// A live process-owned lease met by a transaction gets a new `timestamp` once its
/// current one is this much older than a fresh one would be: so a busy registry is
/// rewritten for this at most once an hour per lease.
pub const REFRESH_AFTER_SECS: f64 = 3_600.0;

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

/// Who held a lease on one port, and for how long: what handing it to a process
/// changes, kept so that a hand-over that came to nothing can be undone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Tenure {
    pub(crate) port: u16,
    pub(crate) pid: u32,
    pub(crate) owner: Option<ProcessId>,
    pub(crate) since: f64,
    pub(crate) ttl: Option<f64>,
}

impl Tenure {
    /// The tenure `lease` on `port` has now.
    pub(crate) fn of(port: u16, lease: &LeaseRecord) -> Tenure {
        Tenure {
            port,
            pid: lease.pid,
            owner: lease.owner,
            since: lease.since,
            ttl: lease.ttl,
        }
    }

    /// Puts it back on `lease`.
    pub(crate) fn restore(&self, lease: &mut LeaseRecord) {
        lease.pid = self.pid;
        lease.owner = self.owner;
        lease.since = self.since;
        lease.ttl = self.ttl;
    }
}

/// A lease written by portlease.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LeaseRecord {
    /// The owner pid; for an owner-less lease, the pid that allocated it.
    pub(crate) pid: u32,
    /// Unix seconds of the allocation or last renewal (`leased_at` in the file).
    pub(crate) since: f64,
    /// The `timestamp` written for the seed: when it should start counting its 300 s
    /// (see the module docs). portlease itself never judges by it.
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

/// The fields of an entry that portlease reads; any other field is left as it is.
/// A field of the wrong type makes the whole entry one not understood.
#[derive(serde::Deserialize)]
struct Fields<'a> {
    pid: Option<i64>,
    timestamp: Option<f64>,
    leased_at: Option<f64>,
    #[serde(borrow)]
    owner: Option<&'a str>,
    start_time: Option<u64>,
    pid_ns: Option<u64>,
    pidfs_inode: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    ttl: Option<Option<f64>>,
    proto: Option<&'a str>,
    label: Option<String>,
    source: Option<String>,
    token: Option<String>,
}

/// Tells a field set to `null` (`Some(None)`) from a missing one (`None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<f64>>, D::Error> {
    serde::Deserialize::deserialize(d).map(Some)
}

impl Record {
    /// Reads an entry from its JSON text.
    pub(crate) fn parse(text: &str) -> Record {
        let Ok(fields) = serde_json::from_str::<Fields<'_>>(text) else {
            return Record::Unknown;
        };
        if fields.owner.is_some() {
            return LeaseRecord::from_fields(fields).map_or(Record::Unknown, Record::Lease);
        }
        // The seed reads a missing timestamp as 0 (stale at once), and never reads pid.
        Record::Seed {
            pid: fields.pid.unwrap_or(0),
            timestamp: fields.timestamp.unwrap_or(0.0),
        }
    }

    /// Whether the lease has ended: its owner is gone or its time has run out.
    /// An entry not understood is never stale.
    pub(crate) fn is_stale(&self, now: f64, liveness: &mut LivenessCache) -> bool {
        self.is_stale_with(now, liveness, SEED_LEASE_SECS)
    }

    /// [`is_stale`](Record::is_stale), with seed entries honoured `seed_lease_secs`
    /// after their timestamp instead of the seed's default 300 s.
    pub(crate) fn is_stale_with(
        &self,
        now: f64,
        liveness: &mut LivenessCache,
        seed_lease_secs: f64,
    ) -> bool {
        match self {
            Record::Lease(lease) => lease.is_stale(now, liveness),
            Record::Seed { timestamp, .. } => now - timestamp > seed_lease_secs,
            Record::Unknown => false,
        }
    }
}

impl LeaseRecord {
    fn from_fields(fields: Fields<'_>) -> Option<LeaseRecord> {
        let pid = u32::try_from(fields.pid?).ok()?;
        let timestamp = fields.timestamp?;
        let owner = match fields.owner? {
            "process" => Some(ProcessId {
                pid,
                start_time: fields.start_time,
                pid_ns: fields.pid_ns,
                pidfs_inode: fields.pidfs_inode,
            }),
            "none" => None,
            _ => return None,
        };
        let ttl = match fields.ttl {
            None | Some(None) => None,
            Some(Some(ttl)) if ttl >= 0.0 => Some(ttl),
            Some(Some(_)) => return None,
        };
        if owner.is_none() && ttl.is_none() {
            return None;
        }
        let protocol = match fields.proto {
            Some("udp") => Protocol::Udp,
            Some("both") => Protocol::Both,
            _ => Protocol::Tcp,
        };
        Some(LeaseRecord {
            pid,
            // Entries from before `leased_at` was written stamped the allocation.
            since: fields.leased_at.unwrap_or(timestamp),
            timestamp,
            owner,
            ttl,
            protocol,
            label: fields.label,
            source: fields.source,
            token: fields.token,
        })
    }

    /// The entry as it is written to the file.
    pub(crate) fn to_value(&self) -> Value {
        let mut entry = json!({
            "pid": self.pid,
            "timestamp": self.timestamp,
            "leased_at": self.since,
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
        if let Some(pid_ns) = self.owner.and_then(|o| o.pid_ns) {
            map.insert("pid_ns".into(), pid_ns.into());
        }
        if let Some(pidfs_inode) = self.owner.and_then(|o| o.pidfs_inode) {
            map.insert("pidfs_inode".into(), pidfs_inode.into());
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
        self.ttl.is_some_and(|ttl| now - self.since > ttl)
    }

    /// The `timestamp` to write at `now` so that the seed reclaims the lease only once
    /// it has ended: a day past its end (less the seed's 300 s), so that a writer's
    /// clock up to a day behind the seed's does not end it early; or, for a lease
    /// that lasts while its owner lives, a day ahead.
    pub(crate) fn seed_timestamp(&self, now: f64) -> f64 {
        match self.ttl {
            Some(ttl) => self.since + ttl + SKEW_ALLOWANCE_SECS - SEED_LEASE_SECS,
            None => now + OWNER_HORIZON_SECS,
        }
    }

    /// Sets the `timestamp` written for the seed, as of `now`.
    pub(crate) fn restamp(&mut self, now: f64) {
        self.timestamp = self.seed_timestamp(now);
    }

    /// Whether a transaction meeting this lease alive at `now` should move its
    /// `timestamp` ahead: a lease with no TTL whose stamp has aged an hour or more
    /// (or that is stamped in the seed's old way, at its allocation), and whose owner
    /// this process can judge. An owner of another PID namespace counts as alive here
    /// without having been seen alive, so its lease is not moved on from here: the
    /// seed's day then bounds a lease that no process of its namespace ends.
    pub(crate) fn needs_restamp(&self, now: f64) -> bool {
        self.ttl.is_none()
            && self.owner.is_some_and(|owner| owner.judged_here())
            && self.seed_timestamp(now) - self.timestamp >= REFRESH_AFTER_SECS
    }

    pub(crate) fn is_stale(&self, now: f64, liveness: &mut LivenessCache) -> bool {
        self.has_expired(now) || self.owner.is_some_and(|owner| !liveness.is_alive(owner))
    }
}

/// Now, in seconds since the epoch, as timestamps are written (0 before 1970).
pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
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
            since: 1000.5,
            timestamp: 900.5,
            owner: Some(ProcessId {
                pid: 42,
                start_time: Some(7),
                pid_ns: Some(4026531836),
                pidfs_inode: Some(1234),
            }),
            ttl: Some(300.0),
            protocol: Protocol::Both,
            label: Some("db".into()),
            source: Some("cli".into()),
            token: Some("t".into()),
        };
        assert_eq!(
            Record::parse(&lease.to_value().to_string()),
            Record::Lease(lease)
        );
    }

    fn lease(ttl: Option<f64>, owner: bool) -> LeaseRecord {
        LeaseRecord {
            pid: 42,
            since: 1000.0,
            timestamp: 1000.0,
            owner: owner.then_some(ProcessId {
                pid: 42,
                start_time: None,
                pid_ns: None,
                pidfs_inode: None,
            }),
            ttl,
            protocol: Protocol::Tcp,
            label: None,
            source: None,
            token: None,
        }
    }

    #[test]
    fn a_lease_of_an_owner_in_another_pid_namespace_is_not_moved_on_from_here() {
        let mut foreign = lease(None, true);
        if let Some(owner) = foreign.owner.as_mut() {
            // No namespace has inode 1: never this process's.
            owner.pid_ns = Some(1);
        }
        assert!(!foreign.needs_restamp(1e9));
    }

    #[test]
    fn a_ttl_lease_tells_the_seed_to_count_from_a_day_past_its_end_minus_300_seconds() {
        let mut ttl_lease = lease(Some(900.0), false);
        ttl_lease.restamp(1000.0);
        assert_eq!(
            ttl_lease.timestamp,
            1000.0 + 900.0 + SKEW_ALLOWANCE_SECS - SEED_LEASE_SECS
        );
        // The seed's rule, on a clock a day (less a second) ahead of the writer's,
        // a second before the lease ends by the writer's clock: not yet stale.
        let seed_now = 1000.0 + 900.0 - 1.0 + SKEW_ALLOWANCE_SECS - 1.0;
        assert!(seed_now - ttl_lease.timestamp <= SEED_LEASE_SECS);
        assert!(!ttl_lease.needs_restamp(1e9), "a TTL lease keeps its stamp");
    }

    #[test]
    fn an_owned_lease_is_stamped_a_day_ahead_and_moved_on_hourly() {
        let mut owned = lease(None, true);
        assert!(
            owned.needs_restamp(1000.0),
            "stamped the seed's way, at allocation"
        );
        owned.restamp(1000.0);
        assert_eq!(owned.timestamp, 1000.0 + OWNER_HORIZON_SECS);
        assert!(!owned.needs_restamp(1000.0 + REFRESH_AFTER_SECS - 1.0));
        assert!(owned.needs_restamp(1000.0 + REFRESH_AFTER_SECS));
    }

    #[test]
    fn entries_without_leased_at_count_from_their_timestamp() {
        let old = json!({"pid": 1, "timestamp": 500.0, "owner": "none", "ttl": 10.0});
        let Record::Lease(lease) = Record::parse(&old.to_string()) else {
            panic!("a portlease lease");
        };
        assert_eq!(lease.since, 500.0);
    }

    #[test]
    fn seed_entries_expire_after_300_seconds_whatever_their_pid() {
        let seed = Record::parse(&json!({"pid": 999_999_999, "timestamp": 1000.0}).to_string());
        let mut liveness = LivenessCache::default();
        assert!(!seed.is_stale(1000.0 + 299.0, &mut liveness));
        assert!(seed.is_stale(1000.0 + 301.0, &mut liveness));
    }

    #[test]
    fn seed_entries_expire_after_the_requests_seed_lease() {
        let seed = Record::parse(&json!({"pid": 1, "timestamp": 1000.0}).to_string());
        let mut liveness = LivenessCache::default();
        assert!(!seed.is_stale_with(1000.0 + 59.0, &mut liveness, 60.0));
        assert!(seed.is_stale_with(1000.0 + 61.0, &mut liveness, 60.0));
        // portlease's own leases keep their rules whatever the seed lease.
        let ours = json!({"pid": 1, "timestamp": 1000.0, "owner": "none", "ttl": 600.0});
        assert!(!Record::parse(&ours.to_string()).is_stale_with(1100.0, &mut liveness, 60.0));
    }

    #[test]
    fn seed_style_entries_missing_a_field_are_judged_as_the_seed_judges_them() {
        // The seed reads a missing timestamp as 0: stale at once. It never reads pid.
        let mut liveness = LivenessCache::default();
        for value in [json!({"pid": 1}), json!({}), json!({"note": "x"})] {
            let record = Record::parse(&value.to_string());
            assert!(matches!(record, Record::Seed { .. }), "{value}");
            assert!(record.is_stale(1000.0, &mut liveness), "{value}");
        }
        let no_pid = Record::parse(&json!({"timestamp": 1000.0}).to_string());
        assert!(!no_pid.is_stale(1000.0 + 299.0, &mut liveness));
    }

    #[test]
    fn entries_not_understood_are_never_stale() {
        let mut liveness = LivenessCache::default();
        for value in [
            json!(5),
            json!({"pid": "x"}),
            json!({"pid": 1, "timestamp": "yesterday"}),
            json!({"owner": "alien", "pid": 1, "timestamp": 0}),
        ] {
            let record = Record::parse(&value.to_string());
            assert_eq!(record, Record::Unknown, "{value}");
            assert!(!record.is_stale(1e12, &mut liveness));
        }
    }
}
