//! Deciding checked requests: applies the limits, serves the rest in one registry
//! transaction, logs every refusal with its reason (grants are logged once the client
//! is told), and warns when the pool runs out.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use portlease::{Allocator, Error, Lease, LeaseInfo, Owner, ProcessId, Request};

use super::peer::{self, Peer};
use super::stats::Stats;

/// What kind of refusal, for the statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Not a pid at all (portpicker's client request errors).
    BadRequest,
    /// A pid that is no process, or not one the client may ask for.
    NotPermitted,
    /// `--max-per-pid` or `--max-per-uid`.
    OverLimit,
    /// No free port in the pool.
    Exhausted,
    /// Anything else (the registry could not be used).
    Failed,
}

/// Hands out the pool's ports to clients.
pub(super) struct Granter {
    allocator: Allocator,
    /// The request every grant makes, but for its owner.
    request: Request,
    /// The pool's ports, ascending.
    pool: Vec<u16>,
    max_per_uid: Option<usize>,
    /// Per uid, the ports granted to that user's clients (and their owners): what
    /// `--max-per-uid` counts. Dead owners are dropped as met; a release by anyone
    /// else is found when the count reaches the limit and the registry is asked.
    ledger: HashMap<u32, Vec<(u16, ProcessId)>>,
    /// The last port handed out, for `num-ports-checked-for-last-request`.
    last_port: Option<u16>,
    /// Refusals since the pool ran out; `None` while it has free ports.
    exhausted: Option<u64>,
    pub(super) stats: Stats,
}

/// One request read off a connection, its pid checked (`peer::check`).
pub(super) struct Asked {
    pub(super) peer: Peer,
    /// The process the lease is for.
    pub(super) owner: ProcessId,
}

impl Granter {
    pub(super) fn new(
        allocator: Allocator,
        request: Request,
        max_per_uid: Option<usize>,
    ) -> Granter {
        let mut pool: Vec<u16> = request
            .ranges()
            .iter()
            .flat_map(|range| range.clone())
            .collect();
        pool.sort_unstable();
        pool.dedup();
        let mut granter = Granter {
            allocator,
            request,
            pool,
            max_per_uid,
            ledger: HashMap::new(),
            last_port: None,
            exhausted: None,
            stats: Stats::default(),
        };
        if max_per_uid.is_some() {
            granter.seed_ledger();
        }
        granter
    }

    pub(super) fn pool_description(&self) -> String {
        self.request.describe_ranges()
    }

    pub(super) fn pool_size(&self) -> usize {
        self.pool.len()
    }

    pub(super) fn dir(&self) -> &Path {
        self.allocator.dir()
    }

    /// Answers every request: a lease, to keep once the client is told its port, or
    /// `None` to close the connection in silence. Those within the limits are served
    /// in one transaction.
    pub(super) fn serve(&mut self, asked: &[Asked]) -> Vec<Option<Lease>> {
        let mut answers: Vec<Option<Lease>> = asked.iter().map(|_| None).collect();
        let mut chosen = Vec::new();
        let mut planned: HashMap<u32, usize> = HashMap::new();
        let mut resynced = false;
        for (index, request) in asked.iter().enumerate() {
            let owner = request.owner;
            if let Some(limit) = self.max_per_uid {
                let uid = request.peer.uid;
                let extra = planned.get(&uid).copied().unwrap_or(0);
                let mut held = self.held_by(uid) + extra;
                if held >= limit && !resynced {
                    resynced = true;
                    self.resync_ledger();
                    held = self.held_by(uid) + extra;
                }
                if held >= limit {
                    let reason = format!(
                        "uid {uid} holds {held} ports from this server (--max-per-uid {limit})"
                    );
                    self.refuse(request.peer, &reason, Refusal::OverLimit);
                    continue;
                }
                *planned.entry(uid).or_default() += 1;
            }
            chosen.push((index, owner));
        }
        if chosen.is_empty() {
            return answers;
        }
        let requests: Vec<Request> = chosen
            .iter()
            .map(|&(_, owner)| self.request.clone().owner(Owner::Running(owner)))
            .collect();
        log::debug!("serving {} request(s) in one transaction", requests.len());
        self.stats.transactions += 1;
        self.stats.largest_transaction = self.stats.largest_transaction.max(requests.len());
        let results = match self.allocator.allocate_each(&requests) {
            Ok(results) => results,
            Err(e) => {
                let reason = format!("the registry transaction failed: {e}");
                for &(index, _) in &chosen {
                    self.refuse(asked[index].peer, &reason, Refusal::Failed);
                }
                return answers;
            }
        };
        for ((index, owner), result) in chosen.into_iter().zip(results) {
            let pid = owner.pid;
            let asker = asked[index].peer;
            match result {
                Ok(lease) => {
                    self.granted(asker, owner, lease.port());
                    answers[index] = Some(lease);
                }
                Err(Error::Exhausted { .. }) => self.refuse_exhausted(asker, pid),
                Err(e @ Error::OwnerLimit { .. }) => {
                    self.refuse(asker, &format!("{e} (--max-per-pid)"), Refusal::OverLimit);
                }
                Err(Error::NoSuchProcess { pid }) => {
                    self.refuse(
                        asker,
                        &format!("pid {pid}: no such process"),
                        Refusal::NotPermitted,
                    );
                }
                Err(e) => self.refuse(asker, &e.to_string(), Refusal::Failed),
            }
        }
        answers
    }

    fn granted(&mut self, asker: Peer, owner: ProcessId, port: u16) {
        self.stats.total_allocations += 1;
        self.stats.ports_checked_for_last_request = self.passed_over(port);
        self.last_port = Some(port);
        if let Some(refused) = self.exhausted.take() {
            log::info!("the pool has free ports again, after {refused} refused request(s)");
        }
        if self.max_per_uid.is_some() {
            self.ledger
                .entry(asker.uid)
                .or_default()
                .push((port, owner));
        }
        // Logged once the client is told (`worker`), off the transactions' thread.
    }

    /// Logs and counts a refusal; the connection is then closed without a word.
    pub(super) fn refuse(&mut self, asker: Peer, reason: &str, kind: Refusal) {
        match kind {
            Refusal::BadRequest => self.stats.client_request_errors += 1,
            other => {
                self.stats.denied_allocations += 1;
                match other {
                    Refusal::NotPermitted => self.stats.denied_not_permitted += 1,
                    Refusal::OverLimit => self.stats.denied_over_limit += 1,
                    Refusal::Exhausted => self.stats.denied_pool_exhausted += 1,
                    Refusal::BadRequest | Refusal::Failed => {}
                }
            }
        }
        log::info!(
            "refused a request from uid {} (pid {}): {reason}",
            asker.uid,
            asker.pid
        );
    }

    /// A refusal for want of ports: a warning with the pool's state when the pool runs
    /// out, so the operator sees why clients guess ports on their own.
    fn refuse_exhausted(&mut self, asker: Peer, pid: u32) {
        self.stats.ports_checked_for_last_request = self.pool.len();
        if self.exhausted.is_none() {
            log::warn!(
                "pool exhausted: no port free for pid {pid} in {} ({}); refused clients fall \
                 back to guessing a port (portpicker's client does so silently); widen --pool, \
                 or find who holds the ports with `portlease list`",
                self.pool_description(),
                self.pool_state()
            );
        }
        *self.exhausted.get_or_insert(0) += 1;
        let reason = format!("no port free in {}", self.pool_description());
        self.refuse(asker, &reason, Refusal::Exhausted);
    }

    /// The pool's state, for the exhaustion warning: who holds its ports.
    fn pool_state(&self) -> String {
        let size = self.pool.len();
        let leases = match self.allocator.leases() {
            Ok(leases) => leases,
            Err(e) => return format!("{size} ports; the registry could not be read: {e}"),
        };
        let live: Vec<&LeaseInfo> = leases
            .iter()
            .filter(|l| !l.stale && l.port.is_some_and(|p| self.pool.binary_search(&p).is_ok()))
            .collect();
        let through_me = live
            .iter()
            .filter(|l| l.source.as_deref() == Some("serve"))
            .count();
        let mut by_pid: HashMap<i64, usize> = HashMap::new();
        for lease in &live {
            *by_pid.entry(lease.pid.unwrap_or(0)).or_default() += 1;
        }
        let mut holders: Vec<(i64, usize)> = by_pid.into_iter().collect();
        holders.sort_by_key(|&(pid, n)| (std::cmp::Reverse(n), pid));
        let top: Vec<String> = holders
            .iter()
            .take(3)
            .map(|&(pid, n)| {
                let command = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .map_or_else(|_| "?".into(), |c| c.trim().to_string());
                format!("{n} held by pid {pid} ({command})")
            })
            .collect();
        format!(
            "{size} ports: {} leased, {through_me} of them through this server, by {} \
             process(es): {}; {} not leased but bound by other processes",
            live.len(),
            holders.len(),
            top.join(", "),
            size.saturating_sub(live.len())
        )
    }

    /// How many pool ports next-fit went through to reach `port`, from the last one
    /// handed out.
    fn passed_over(&self, port: u16) -> usize {
        // The pool holds a port at least: `--pool` takes no empty range.
        let n = self.pool.len().max(1);
        let Ok(index) = self.pool.binary_search(&port) else {
            return 1;
        };
        let start = self
            .last_port
            .map_or(0, |last| self.pool.partition_point(|&p| p <= last))
            % n;
        (index + n - start) % n + 1
    }

    /// The live leases the ledger counts for `uid`, dropping those whose owner ended.
    fn held_by(&mut self, uid: u32) -> usize {
        let Some(held) = self.ledger.get_mut(&uid) else {
            return 0;
        };
        held.retain(|(_, owner)| owner.is_alive());
        held.len()
    }

    /// Drops from the ledger every lease the registry no longer holds (released by
    /// someone else, or reclaimed).
    fn resync_ledger(&mut self) {
        let live: HashSet<(u16, i64)> = match self.allocator.leases() {
            Ok(leases) => leases
                .iter()
                .filter(|l| !l.stale)
                .filter_map(|l| Some((l.port?, l.pid?)))
                .collect(),
            Err(e) => {
                log::warn!("cannot check the leases counted for --max-per-uid: {e}");
                return;
            }
        };
        for held in self.ledger.values_mut() {
            held.retain(|(port, owner)| live.contains(&(*port, i64::from(owner.pid))));
        }
    }

    /// Counts the leases a previous server gave, by their owners' uids.
    fn seed_ledger(&mut self) {
        let leases = match self.allocator.leases() {
            Ok(leases) => leases,
            Err(e) => {
                log::warn!("cannot count the leases already held, for --max-per-uid: {e}");
                return;
            }
        };
        for lease in leases
            .iter()
            .filter(|l| !l.stale && l.source.as_deref() == Some("serve"))
        {
            let (Some(port), Some(pid)) = (lease.port, lease.pid) else {
                continue;
            };
            let Ok(pid) = u32::try_from(pid) else {
                continue;
            };
            if let (Some(uid), Some(owner)) = (peer::uid_of(pid), ProcessId::of_running(pid)) {
                self.ledger.entry(uid).or_default().push((port, owner));
            }
        }
    }

    /// The live leases this server's pool holds through it, for the statistics.
    pub(super) fn leases_held(&self) -> Option<usize> {
        let leases = self.allocator.leases().ok()?;
        Some(
            leases
                .iter()
                .filter(|l| {
                    !l.stale
                        && l.source.as_deref() == Some("serve")
                        && l.port.is_some_and(|p| self.pool.binary_search(&p).is_ok())
                })
                .count(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_checked_count_next_fit_from_the_last_port_handed_out() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let allocator = Allocator::with_dir(dir.path()).expect("an allocator");
        let mut granter = Granter::new(allocator, Request::new().range(10..=13), None);
        assert_eq!(granter.passed_over(10), 1);
        assert_eq!(granter.passed_over(12), 3);
        granter.last_port = Some(10);
        assert_eq!(granter.passed_over(11), 1);
        assert_eq!(granter.passed_over(13), 3);
        // After the last port, next-fit wraps around to the first.
        granter.last_port = Some(13);
        assert_eq!(granter.passed_over(10), 1);
        assert_eq!(granter.passed_over(12), 3);
    }
}
