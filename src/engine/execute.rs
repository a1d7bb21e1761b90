//! What each operation does to the registry, in a transaction already begun: an
//! [`Op`] (allocation or release, posted or not), and the operations only the
//! allocator asks (releases by a filter, hand-overs, renewals). Everything here works
//! through the [`Transaction`]'s methods; nothing takes the lock or touches the board.

use std::time::{Duration, Instant};

use super::Engine;
use crate::board::wire::{Op, Outcome};
use crate::error::{Error, Result};
use crate::process::ProcessId;
use crate::record::{LeaseRecord, Record, Tenure};
use crate::request::Request;
use crate::snapshot::LeaseInfo;
use crate::transaction::Transaction;

/// How often allocation looks up the owner of every lease, not just of those it meets.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

impl Engine {
    /// Does `op` in the transaction; an error of the request alone is its outcome.
    /// A request read from the board is validated again, as its poster did.
    pub(super) fn execute(&self, txn: &mut Transaction<'_>, op: &Op) -> Result<Outcome> {
        match op {
            Op::Allocate {
                request,
                owner,
                pid,
                token,
            } => {
                request.validate()?;
                self.allocate(txn, request, *owner, *pid, token)
                    .map(Outcome::Allocated)
            }
            Op::Release { ports, token } => Ok(Outcome::Released {
                lost: release(txn, ports, token),
            }),
        }
    }

    /// Does `op`, which may have been done already (by a server that died, or on a
    /// board that went away): an allocation whose leases are in the registry gets
    /// them back; a release finds its ports released.
    pub(super) fn execute_again(&self, txn: &mut Transaction<'_>, op: &Op) -> Result<Outcome> {
        match op {
            Op::Allocate { token, .. } => {
                let done = txn.ports_of_token(token);
                if done.is_empty() {
                    self.execute(txn, op)
                } else {
                    Ok(Outcome::Allocated(done))
                }
            }
            Op::Release { ports, token } => {
                release(txn, ports, token);
                Ok(Outcome::Released { lost: None })
            }
        }
    }

    /// Leases ports in the transaction as `request` asks, for `owner`, recorded as
    /// allocated by `pid` under `token`.
    fn allocate(
        &self,
        txn: &mut Transaction<'_>,
        request: &Request,
        owner: Option<ProcessId>,
        pid: u32,
        token: &str,
    ) -> Result<Vec<u16>> {
        // Judging a lease costs parsing it, and its owner a /proc read: so the leases
        // the search meets are judged, and all of them only in a full sweep, once a
        // second per allocator and before giving up.
        let mut swept = self.sweep_due();
        if swept {
            txn.reclaim_stale();
        }
        if let (Some(limit), Some(owner)) = (request.max_per_owner, owner) {
            let held = txn.leases_of(owner);
            if held >= limit {
                return Err(Error::OwnerLimit {
                    pid: owner.pid,
                    held,
                });
            }
        }
        let candidates = request.candidates();
        let ports = loop {
            match txn.pick_ports(request, &candidates) {
                Err(Error::Exhausted { .. }) if !swept => {
                    swept = true;
                    txn.reclaim_stale();
                }
                picked => break picked?,
            }
        };
        for &port in &ports {
            let mut record = LeaseRecord {
                pid: owner.map_or(pid, |o| o.pid),
                since: txn.now(),
                timestamp: txn.now(),
                owner,
                ttl: request.effective_ttl().map(|ttl| ttl.as_secs_f64()),
                protocol: request.protocol,
                label: request.label.clone(),
                source: Some(request.source.clone()),
                token: Some(token.to_owned()),
            };
            record.restamp(txn.now());
            txn.insert_lease(port, record);
        }
        log::debug!(
            "leased {} to {} in {}",
            list_ports(&ports),
            owner.map_or("no process".to_owned(), |o| format!("pid {}", o.pid)),
            self.shared.dir.display()
        );
        Ok(ports)
    }

    /// Whether a full sweep of owners is due (and if so, it counts as done now).
    fn sweep_due(&self) -> bool {
        let Ok(mut last) = self.shared.last_sweep.lock() else {
            return true;
        };
        let due = last.is_none_or(|at| at.elapsed() >= SWEEP_INTERVAL);
        if due {
            *last = Some(Instant::now());
        }
        due
    }
}

/// Removes the entries of `ports` held under `token`; returns the first port now
/// held by another lease. A port with no entry at all counts as released: that
/// makes a release done twice harmless (a request is served again when the process
/// serving it died before it could hand out the outcome).
fn release(txn: &mut Transaction<'_>, ports: &[u16], token: &str) -> Option<u16> {
    let mut lost = None;
    for &port in ports {
        let key = port.to_string();
        match txn.record(&key) {
            None => {}
            Some(Record::Lease(lease)) if lease.token.as_deref() == Some(token) => {
                txn.remove_entry(&key);
            }
            Some(_) => lost = lost.or(Some(port)),
        }
    }
    lost
}

/// Ends every lease for which `matches` is true, unless one of them is held by a live
/// process that `may_end` does not accept: then nothing ends.
pub(super) fn release_where(
    txn: &mut Transaction<'_>,
    matches: impl Fn(&LeaseInfo) -> bool,
    may_end: impl Fn(ProcessId) -> bool,
) -> Result<Vec<LeaseInfo>> {
    let released = txn
        .snapshot()
        .into_iter()
        .filter(|info| matches(info))
        .collect::<Vec<_>>();
    for info in &released {
        if let Some(holder) = txn.live_holder(&info.key)
            && !may_end(holder)
        {
            return Err(Error::held_by(info.key.clone(), holder));
        }
    }
    for info in &released {
        txn.remove_entry(&info.key);
    }
    Ok(released)
}

/// Hands the live leases on `ports` (held under `token`, when given) to `to`. The one
/// rule of handing: any TTL is cleared, so each lasts exactly as long as that process.
/// A lease held by another live process is handed on only if `may_take` accepts that
/// process. All of them, or none. Returns what each held before (see [`Tenure`]).
pub(super) fn hand_to(
    txn: &mut Transaction<'_>,
    ports: &[u16],
    token: Option<&str>,
    to: ProcessId,
    may_take: impl Fn(ProcessId) -> bool,
) -> Result<Vec<Tenure>> {
    let mut before = Vec::with_capacity(ports.len());
    for &port in ports {
        let key = port.to_string();
        if let Some(holder) = txn.live_holder(&key)
            && !(holder.pid == to.pid && holder.is_in_own_pid_namespace())
            && !may_take(holder)
        {
            return Err(Error::held_by(key, holder));
        }
        if let Some(lease) = txn.live_lease(port, token) {
            before.push(Tenure::of(port, &lease));
        }
    }
    change_leases(txn, ports, token, |lease, now| {
        lease.pid = to.pid;
        lease.owner = Some(to);
        lease.ttl = None;
        lease.since = now;
    })?;
    Ok(before)
}

/// Puts back on the leases held under `token` what they held before a hand-over
/// (`before`: owner and TTL). The process they were handed to may have ended since:
/// that leaves them stale, not another's, so they are put back all the same. Fails
/// with [`Error::LeaseLost`] for a port whose entry is gone or another's. All of
/// them, or none.
pub(super) fn restore(txn: &mut Transaction<'_>, token: &str, before: &[Tenure]) -> Result<()> {
    for tenure in before {
        let port = tenure.port;
        let mut lease = match txn.record(&port.to_string()) {
            Some(Record::Lease(lease)) if lease.token.as_deref() == Some(token) => lease.clone(),
            _ => return Err(Error::LeaseLost { port }),
        };
        tenure.restore(&mut lease);
        lease.restamp(txn.now());
        txn.update_lease(port, lease);
    }
    Ok(())
}

/// Changes the live leases on `ports` (held under `token`, when given) with `change`;
/// fails with [`Error::LeaseLost`] if any is gone. Without a token, the error says
/// what the port holds instead of a live lease.
pub(super) fn change_leases(
    txn: &mut Transaction<'_>,
    ports: &[u16],
    token: Option<&str>,
    change: impl Fn(&mut LeaseRecord, f64),
) -> Result<()> {
    for &port in ports {
        let Some(mut lease) = txn.live_lease(port, token) else {
            return Err(match (token, txn.record(&port.to_string())) {
                (None, None) => Error::NotLeased { port },
                (None, Some(Record::Seed { pid, .. })) => Error::NotPortlease {
                    port,
                    what: format!("a lease of the seed (pid {pid}), which only the seed ends"),
                },
                (None, Some(Record::Unknown)) => Error::NotPortlease {
                    port,
                    what: "an entry portlease does not understand".into(),
                },
                _ => Error::LeaseLost { port },
            });
        };
        change(&mut lease, txn.now());
        lease.restamp(txn.now());
        txn.update_lease(port, lease);
    }
    Ok(())
}

/// Ports as people write them: "30001, 30002".
fn list_ports(ports: &[u16]) -> String {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    ports.join(", ")
}
