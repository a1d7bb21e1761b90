//! Serving many processes' requests in one transaction: what a request and its outcome
//! look like on the [`Board`], and the loop that waits for one to be served (or
//! serves them all).
//!
//! Allocations and releases are posted; every other operation takes the lock itself
//! (and then leaves posted requests to the next holder, whom it wakes).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::allocator::{Allocator, Transaction};
use crate::board::{Board, GaveUp, PAYLOAD_MAX, Posted, Taken};
use crate::error::{Error, Result};
use crate::lock::RegistryLock;
use crate::process::ProcessId;
use crate::request::Request;

/// How long a poster sleeps before it checks that the processes it waits on live.
const CHECK: Duration = Duration::from_millis(50);
/// The most ports a posted request may ask for, so its outcome fits in a slot.
const MAX_POSTED_PORTS: usize = 64;

/// A request that any lock holder can serve.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Op {
    /// Lease ports, for `owner` (the asker resolved it), recorded as allocated by `pid`.
    Allocate {
        request: Request,
        owner: Option<ProcessId>,
        pid: u32,
        token: String,
    },
    /// End the leases on `ports` held under `token`.
    Release { ports: Vec<u16>, token: String },
}

/// What became of a request.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Outcome {
    Allocated(Vec<u16>),
    /// The first port that was no longer the token's, if any.
    Released {
        lost: Option<u16>,
    },
    Failed(WireError),
}

/// An [`Error`] as one process hands it to another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum WireError {
    Exhausted {
        wanted: String,
        ranges: String,
    },
    Invalid(String),
    NoSuchProcess {
        pid: u32,
    },
    OwnerLimit {
        pid: u32,
        held: usize,
    },
    LeaseLost {
        port: u16,
    },
    Io {
        path: PathBuf,
        errno: Option<i32>,
        message: String,
    },
    Unsafe {
        path: PathBuf,
        reason: String,
    },
    Other(String),
}

impl From<&Error> for WireError {
    fn from(error: &Error) -> WireError {
        match error {
            Error::Exhausted { wanted, ranges } => WireError::Exhausted {
                wanted: wanted.clone(),
                ranges: ranges.clone(),
            },
            Error::InvalidRequest(message) => WireError::Invalid(message.clone()),
            Error::NoSuchProcess { pid } => WireError::NoSuchProcess { pid: *pid },
            Error::OwnerLimit { pid, held } => WireError::OwnerLimit {
                pid: *pid,
                held: *held,
            },
            Error::LeaseLost { port } => WireError::LeaseLost { port: *port },
            Error::Io { path, source, .. } => WireError::Io {
                path: path.clone(),
                errno: source.raw_os_error(),
                message: error.to_string(),
            },
            Error::Unsafe { path, reason } => WireError::Unsafe {
                path: path.clone(),
                reason: reason.clone(),
            },
            other => WireError::Other(other.to_string()),
        }
    }
}

impl WireError {
    fn into_error(self, dir: &std::path::Path) -> Error {
        match self {
            WireError::Exhausted { wanted, ranges } => Error::Exhausted { wanted, ranges },
            WireError::Invalid(message) => Error::InvalidRequest(message),
            WireError::NoSuchProcess { pid } => Error::NoSuchProcess { pid },
            WireError::OwnerLimit { pid, held } => Error::OwnerLimit { pid, held },
            WireError::LeaseLost { port } => Error::LeaseLost { port },
            WireError::Io {
                path,
                errno,
                message,
            } => Error::Io {
                action: "the transaction that served this request (in another process) failed on",
                path,
                source: match errno {
                    Some(errno) => std::io::Error::from_raw_os_error(errno),
                    None => std::io::Error::other(message),
                },
            },
            WireError::Unsafe { path, reason } => Error::Unsafe { path, reason },
            WireError::Other(message) => Error::Io {
                action: "the process that served this request reports a failure in",
                path: dir.to_path_buf(),
                source: std::io::Error::other(message),
            },
        }
    }
}

impl Op {
    /// Whether a lock holder may serve it: small enough for a slot, both ways.
    fn postable(&self) -> bool {
        match self {
            Op::Allocate { request, .. } => request.count <= MAX_POSTED_PORTS,
            Op::Release { ports, .. } => ports.len() <= MAX_POSTED_PORTS,
        }
    }
}

/// Undoes a designation however the designated waiter's wait ends.
struct Designation<'b> {
    board: &'b Board,
    me: ProcessId,
}

impl Drop for Designation<'_> {
    fn drop(&mut self) {
        self.board.undesignate(self.me);
    }
}

impl Allocator {
    /// Has `op` done: posted for whoever holds the lock to serve, or, where it cannot
    /// be posted, in a transaction of its own.
    pub(crate) fn submit(&self, op: Op) -> Result<Outcome> {
        let started = Instant::now();
        let deadline = self.deadline(started);
        let me = ProcessId::current();
        let encoded = serde_json::to_vec(&op)
            .ok()
            .filter(|bytes| bytes.len() <= PAYLOAD_MAX / 2);
        let board = self.board().filter(|_| op.postable());
        let (Some(board), Some(encoded)) = (board, encoded) else {
            return self.transact(|txn| self.perform(txn, &op));
        };
        let Some(posted) = board.post(me, &encoded) else {
            return self.transact(|txn| self.perform(txn, &op));
        };
        // Set after a wait that ran its course: then look for dead processes.
        let mut quiet = false;
        loop {
            let wakes = posted.wakes();
            if let Some(outcome) = posted.outcome() {
                return self.decode(&outcome);
            }
            if let Some(lock) = self.lock_site().try_lock()? {
                if let Some(own) = self.serve_with_own(lock, board, &posted, me) {
                    return own;
                }
                // Ours is with a server that has just let go: its outcome comes next.
            } else {
                // A portlease holder wakes a poster when it lets go: wait for that.
                // Only a holder that does not use the board needs a poster blocking
                // on the flock itself.
                let holder = board.holder();
                if holder.is_none() && board.designate(me, quiet) {
                    if let Some(own) = self.wait_designated(board, &posted, me, deadline)? {
                        return own;
                    }
                } else if quiet {
                    // Nothing happened for a while: is whoever we wait on still there?
                    if let Some(holder) = holder {
                        board.clear_dead_holder(holder);
                    }
                    posted.repost_if_server_died();
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return match posted.give_up() {
                    GaveUp::Served(outcome) => self.decode(&outcome),
                    GaveUp::NotServed => Err(self.timed_out(started)),
                };
            }
            posted.wait(wakes, (deadline - now).min(CHECK));
            quiet = now.elapsed() >= CHECK;
        }
    }

    /// With the lock held: serves the posted requests, ours among them (taken back
    /// first from a server that died with it: with the lock ours, no live server can
    /// be in the middle of it).
    fn serve_with_own(
        &self,
        lock: RegistryLock<'_>,
        board: &Board,
        posted: &Posted<'_>,
        me: ProcessId,
    ) -> Option<Result<Outcome>> {
        posted.repost_if_server_died();
        self.serve_posted(lock, board, me, Some(posted.slot()))
    }

    /// As the designated waiter: waits on a helper thread for the lock, and on the
    /// poster's futex for either the lock or its request served by a holder that
    /// barged in first. Returns its own outcome when it served it.
    fn wait_designated(
        &self,
        board: &Arc<Board>,
        posted: &Posted<'_>,
        me: ProcessId,
        deadline: Instant,
    ) -> Result<Option<Result<Outcome>>> {
        let _designation = Designation { board, me };
        let wake = board.waker(posted.slot());
        let wait = self.lock_site().start_wait(move || wake.wake())?;
        loop {
            let wakes = posted.wakes();
            if let Some(lock) = wait.take(self.lock_site())? {
                return Ok(self.serve_with_own(lock, board, posted, me));
            }
            let now = Instant::now();
            if posted.outcome().is_some() || now >= deadline {
                // Served, or out of time: the next poster takes over the waiting.
                self.wake_next();
                return Ok(None);
            }
            posted.wait(wakes, deadline.saturating_duration_since(now).min(CHECK));
        }
    }

    /// With the lock held: serves every posted request in one transaction, releases
    /// the lock, hands out the outcomes, and wakes the next poster. Returns the
    /// outcome of slot `own` if it was among them, with its error as it was raised.
    fn serve_posted(
        &self,
        lock: RegistryLock<'_>,
        board: &Board,
        me: ProcessId,
        own: Option<usize>,
    ) -> Option<Result<Outcome>> {
        let holding = board.mark_holder(me.pid);
        let batch = board.take_posted(me);
        let results: Vec<Result<Outcome>> = if batch.is_empty() {
            Vec::new()
        } else {
            let ops: Vec<Option<Op>> = batch
                .iter()
                .map(|taken| serde_json::from_slice(&taken.request).ok())
                .collect();
            let served = self.in_transaction(|txn| {
                Ok(ops
                    .iter()
                    .zip(&batch)
                    .map(|(op, taken)| match op {
                        Some(op) if taken.retried => self.perform_again(txn, op),
                        Some(op) => self.perform(txn, op),
                        None => Ok(Outcome::Failed(WireError::Other(
                            "a request it could not read".into(),
                        ))),
                    })
                    .collect::<Vec<_>>())
            });
            match served {
                Ok(results) => results,
                // Nothing was written: every request in the batch fails alike.
                Err(e) => batch
                    .iter()
                    .map(|_| Err(Error::clone_for_batch(&e)))
                    .collect(),
            }
        };
        drop(holding);
        drop(lock);
        let mut own_result = None;
        for (Taken { slot, .. }, result) in batch.iter().zip(results) {
            let outcome = match &result {
                Ok(outcome) => serde_json::to_vec(outcome),
                Err(e) => serde_json::to_vec(&Outcome::Failed(WireError::from(e))),
            };
            board.complete(*slot, me, &outcome.unwrap_or_default());
            if Some(*slot) == own {
                own_result = Some(result);
            }
        }
        if !batch.is_empty() {
            log::debug!("served {} requests in one transaction", batch.len());
        }
        self.wake_next();
        own_result
    }

    /// Does `op`, which a server that died may have done already: an allocation whose
    /// leases are in the registry gets them back; a release finds its ports released.
    fn perform_again(&self, txn: &mut Transaction<'_>, op: &Op) -> Result<Outcome> {
        match op {
            Op::Allocate { token, .. } => {
                let done = txn.ports_of_token(token);
                if done.is_empty() {
                    self.perform(txn, op)
                } else {
                    Ok(Outcome::Allocated(done))
                }
            }
            Op::Release { ports, token } => {
                Allocator::release_in(txn, ports, token);
                Ok(Outcome::Released { lost: None })
            }
        }
    }

    /// Does `op` in the transaction; an error of the request alone is its outcome.
    fn perform(&self, txn: &mut Transaction<'_>, op: &Op) -> Result<Outcome> {
        match op {
            Op::Allocate {
                request,
                owner,
                pid,
                token,
            } => self
                .allocate_in(txn, request, *owner, *pid, token)
                .map(Outcome::Allocated),
            Op::Release { ports, token } => Ok(Outcome::Released {
                lost: Allocator::release_in(txn, ports, token),
            }),
        }
    }

    fn decode(&self, outcome: &[u8]) -> Result<Outcome> {
        serde_json::from_slice(outcome).map_err(|e| Error::Io {
            action: "cannot read the outcome of a request served by another process, in",
            path: self.dir().to_path_buf(),
            source: e.into(),
        })
    }
}

impl Outcome {
    /// The error of an outcome that is not the one asked for.
    pub(crate) fn into_error(self, dir: &std::path::Path) -> Error {
        match self {
            Outcome::Failed(error) => error.into_error(dir),
            other => Error::Io {
                action: "got an outcome of another kind than asked for, in",
                path: dir.to_path_buf(),
                source: std::io::Error::other(format!("{other:?}")),
            },
        }
    }
}
