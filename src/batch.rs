//! The request board's poster and server sides: a request posted on the [`Board`]
//! waits to be served by whoever holds the lock, or takes the lock and serves every
//! posted request in one transaction. What a transaction does with a request is the
//! [`Engine`]'s business; this module only moves requests and outcomes, following the
//! board's slot protocol, and calls the engine below it.
//!
//! Allocations and releases are posted; every other operation takes the lock itself
//! (and then leaves posted requests to the next holder, whom it wakes).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::board::wire::{Op, Outcome, WireError};
use crate::board::{Board, OUTCOME_MAX, REQUEST_MAX, Taken, Withdrawn};
use crate::engine::{Engine, Locked, Pending};
use crate::error::Result;
use crate::interrupt;
use crate::lock::RegistryLock;
use crate::process::ProcessId;
use crate::test_hooks;

/// How long a poster sleeps before it checks that the processes it waits on live (and
/// consults the caller's interrupt check: at most [`interrupt::SLICE`]).
const LIVENESS_CHECK_INTERVAL: Duration = Duration::from_millis(50);

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

/// Has `op` done for process `me` (the caller): posted for whoever holds the lock to
/// serve, or, where it cannot be posted, in a transaction of its own. An error leaves
/// the registry as it was: a request given up on is withdrawn (see the board's
/// protocol).
pub(crate) fn submit(engine: &Engine, op: &Op, me: ProcessId) -> Result<Outcome> {
    let started = Instant::now();
    let board = engine.board().filter(|b| op.postable() && !b.broken());
    let encoded = board
        .and_then(|_| op.encode())
        .filter(|bytes| bytes.len() <= REQUEST_MAX);
    let (Some(board), Some(encoded)) = (board, encoded) else {
        return engine.run_unposted(op, false);
    };
    let Some(slot) = board.claim(me) else {
        return engine.run_unposted(op, false);
    };
    board.publish(slot, me, &encoded);
    match wait_for_outcome(engine, board, slot, op, me, started) {
        Ok(finished) => finished,
        Err(e) => match board.withdraw(slot) {
            Withdrawn::Served(outcome) => decode_or_redo(engine, &outcome, op),
            Withdrawn::NotServed => Err(e),
        },
    }
}

/// Waits until the request posted in `slot` is served, serving it when the lock comes
/// our way. `Ok` once the slot is no longer ours, with what became of the request;
/// `Err` (the deadline among them) while it still is: the caller withdraws it.
fn wait_for_outcome(
    engine: &Engine,
    board: &Arc<Board>,
    slot: usize,
    op: &Op,
    me: ProcessId,
    started: Instant,
) -> Result<Result<Outcome>> {
    let deadline = engine.deadline(started);
    // Set after a wait that ran its course: then look for dead processes.
    let mut check_liveness = false;
    loop {
        let wakes = board.wakes(slot);
        if let Some(outcome) = board.collect(slot) {
            return Ok(decode_or_redo(engine, &outcome, op));
        }
        if board.broken() {
            // Our slot is gone with the board's file: finish by the token.
            log::debug!("the request board's file shrank under its mapping; going on without it");
            return Ok(engine.run_unposted(op, true));
        }
        if let Some(lock) = engine.lock_site().try_lock(me.pid)? {
            if let Some(own) = serve_posted(engine, lock, board, me, Some((slot, op))) {
                return Ok(own);
            }
            // Ours is with a server that has just let go: its outcome comes next.
        } else {
            // A portlease holder wakes a poster when it lets go: wait for that. Only a
            // holder that does not use the board needs a poster blocking on the flock.
            let holder = board.holder();
            if holder.is_none() && board.designate(me, check_liveness) {
                if let Some(own) = wait_designated(engine, board, (slot, op), me, deadline)? {
                    return Ok(own);
                }
            } else if check_liveness && let Some(holder) = holder {
                board.clear_dead_holder(holder);
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(engine.timed_out(started));
        }
        board.wait(slot, wakes, (deadline - now).min(LIVENESS_CHECK_INTERVAL));
        // Told to stop: given up as at the deadline (the caller withdraws the request).
        interrupt::check(engine.lock_site().path())?;
        check_liveness = now.elapsed() >= LIVENESS_CHECK_INTERVAL;
    }
}

/// As the designated waiter: waits with the lock site's helper thread for the lock,
/// and on the poster's futex for either the lock or its request served by a holder
/// that barged in first. Returns its own outcome when it served it.
fn wait_designated(
    engine: &Engine,
    board: &Arc<Board>,
    (slot, op): (usize, &Op),
    me: ProcessId,
    deadline: Instant,
) -> Result<Option<Result<Outcome>>> {
    let _designation = Designation { board, me };
    let waker = Arc::clone(board);
    let wait = engine.lock_site().start_wait(move || waker.wake(slot))?;
    loop {
        let wakes = board.wakes(slot);
        if let Some(lock) = wait.take(engine.lock_site())? {
            return Ok(serve_posted(engine, lock, board, me, Some((slot, op))));
        }
        let now = Instant::now();
        if board.is_done(slot) || board.broken() || now >= deadline {
            // Served, or out of time: the next poster takes over the waiting.
            engine.wake_next();
            return Ok(None);
        }
        board.wait(
            slot,
            wakes,
            deadline
                .saturating_duration_since(now)
                .min(LIVENESS_CHECK_INTERVAL),
        );
        if let Err(e) = interrupt::check(engine.lock_site().path()) {
            // As out of time: the next poster takes over the waiting.
            engine.wake_next();
            return Err(e);
        }
    }
}

/// With the lock held: serves every posted request in one transaction, completes
/// each before letting go of the lock, and wakes their posters. `own` is the slot and
/// request of the caller's own post, if any: its outcome is returned if it was among
/// them, with its error as it was raised.
pub(crate) fn serve_posted(
    engine: &Engine,
    lock: RegistryLock<'_>,
    board: &Board,
    me: ProcessId,
    own_post: Option<(usize, &Op)>,
) -> Option<Result<Outcome>> {
    let own = own_post.map(|(slot, _)| slot);
    // Requests a dead server left: taken ones are posted again (and taken below),
    // withdrawn ones have their leases ended in this transaction.
    let mut locked = engine.locked(lock, me.pid);
    let batch = board.take_posted(me);
    let mut own_result = None;
    if !batch.is_empty() || locked.has_orphans() {
        let requests: Vec<Pending> = batch
            .iter()
            .map(|taken| Pending {
                // Our own request is at hand: no need to read it back.
                op: match own_post {
                    Some((slot, op)) if slot == taken.slot => Some(op.clone()),
                    _ => Op::decode(&taken.request),
                },
                retried: taken.retried,
            })
            .collect();
        let wanted = |i: usize| {
            let slot = batch[i].slot;
            Some(slot) == own || board.still_taken(slot, me)
        };
        if batch.iter().any(|taken| Some(taken.slot) != own) {
            test_hooks::stop_here("taken");
        }
        let results = match locked.serve(&requests, &wanted) {
            Ok(results) => {
                if batch.iter().any(|taken| Some(taken.slot) != own) {
                    test_hooks::stop_here("saved");
                }
                locked.settle_orphans();
                results
            }
            // Nothing was written: every request in the batch fails alike.
            Err(e) => {
                let wire = WireError::from(&e);
                batch
                    .iter()
                    .map(|_| Err(wire.clone().into_error()))
                    .collect()
            }
        };
        let mut withdrawn = Vec::new();
        for ((Taken { slot, .. }, request), result) in batch.iter().zip(&requests).zip(results) {
            if Some(*slot) == own {
                board.finish_own(*slot, me);
                own_result = Some(result);
                continue;
            }
            let token = request.op.as_ref().map_or("", Op::token);
            let outcome = match result {
                Ok(outcome) => outcome,
                Err(e) => Outcome::Failed(WireError::from(&e)),
            };
            let leased = matches!(outcome, Outcome::Allocated(_));
            if leased && board.poster_gone(*slot) {
                // Killed while it waited (say, by Ctrl-C): nobody will have the ports.
                board.withdraw(*slot);
                withdrawn.push((*slot, token));
                continue;
            }
            if !board.complete(*slot, me, &outcome.encode(token, OUTCOME_MAX)) {
                // Withdrawn since the check before saving: what it leased must go. (A
                // release given up on stays done: its lease ends as was asked.)
                if leased {
                    withdrawn.push((*slot, token));
                } else {
                    board.settle_own(*slot, me);
                }
            }
        }
        settle_withdrawn(&mut locked, board, me, &withdrawn);
        if !batch.is_empty() {
            log::debug!("served {} requests in one transaction", batch.len());
        }
    }
    locked.unlock();
    for Taken { slot, .. } in &batch {
        if Some(*slot) != own {
            board.wake(*slot);
        }
    }
    engine.wake_next();
    own_result
}

/// Ends, still under the lock, what was saved for requests withdrawn after the check
/// before saving; on failure they stay WITHDRAWN for the next lock holder to settle.
fn settle_withdrawn(
    locked: &mut Locked<'_>,
    board: &Board,
    me: ProcessId,
    withdrawn: &[(usize, &str)],
) {
    if withdrawn.is_empty() {
        return;
    }
    let tokens: Vec<&str> = withdrawn.iter().map(|(_, token)| *token).collect();
    match locked.end_tokens(&tokens) {
        Ok(()) => {
            for (slot, _) in withdrawn {
                board.settle_own(*slot, me);
            }
            log::debug!("ended {} leases whose posters gave up", tokens.len());
        }
        Err(e) => log::warn!("cannot end the leases of requests given up on: {e}"),
    }
}

/// The outcome in `bytes`, checked to answer `op`; `None` when it does not.
fn decode(bytes: &[u8], op: &Op) -> Option<Result<Outcome>> {
    match Outcome::decode(bytes, op)? {
        Outcome::Failed(error) => Some(Err(error.into_error())),
        outcome => Some(Ok(outcome)),
    }
}

/// The outcome in `bytes`; where it does not answer `op` (bytes no portlease of this
/// version wrote), `op` is finished in a transaction of its own, by its token: what
/// was saved for it is handed out, and nothing is done twice.
fn decode_or_redo(engine: &Engine, bytes: &[u8], op: &Op) -> Result<Outcome> {
    decode(bytes, op).unwrap_or_else(|| {
        log::warn!("the request board handed back an outcome that does not answer the request; finishing it alone");
        engine.run_unposted(op, true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Allocator;
    use crate::error::Error;
    use crate::request::Request;

    #[test]
    #[cfg_attr(not(linux_kernel), ignore = "no request board without linux_kernel")]
    fn a_server_validates_a_posted_request_as_its_poster_does() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let allocator = Allocator::with_dir(dir.path()).expect("an allocator");
        let engine = allocator.engine();
        let board = Arc::clone(engine.board().expect("a board"));
        // A request no poster of this version would post: a count of 0.
        let op = Op::Allocate {
            request: Box::new(Request::new().range(20000..=20009).count(0)),
            owner: None,
            pid: std::process::id(),
            token: "t".into(),
        };
        let poster = ProcessId::current();
        let slot = board.claim(poster).expect("a free slot");
        board.publish(slot, poster, &op.encode().expect("encodes"));

        let lock = engine
            .lock_site()
            .try_lock(poster.pid)
            .expect("lock")
            .expect("free");
        // Served as another process's request: it is not ours to get back directly.
        assert!(serve_posted(engine, lock, &board, poster, None).is_none());
        let outcome = board.collect(slot).expect("served");
        match decode(&outcome, &op).expect("an outcome for this request") {
            Err(Error::InvalidRequest(message)) => assert!(message.contains("count of 0")),
            other => panic!("expected an invalid request, got {other:?}"),
        }
        assert!(allocator.leases().expect("leases").is_empty());
    }

    #[test]
    fn the_longest_lock_timeout_does_not_overflow() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let allocator = Allocator::with_dir(dir.path())
            .expect("an allocator")
            .lock_timeout(Duration::MAX);
        let lease = allocator
            .allocate(&Request::new().range(20000..=20009))
            .expect("a port");
        lease.release().expect("released");
        assert!(allocator.engine().deadline(Instant::now()) > Instant::now());
    }
}
