//! The slot protocol: a state machine whose every transition is one function here.
//! See the module docs of [`board`](super) for the states and who moves each.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Board;
use crate::process::ProcessId;

pub(crate) const SLOTS: usize = 64;
pub(crate) const SLOT_SIZE: usize = 2048;

// A slot: byte offsets of its words. TAG holds the state and, in its high half, a pid
// (the poster's while it fills or posts, the server's while it serves), changed only by
// compare-and-swap, so no party can move a slot that is no longer in the state it saw.
const TAG: usize = 0;
const REQUEST_LEN: usize = 8;
const OWNER_PID: usize = 12;
const OWNER_START: usize = 16;
/// The poster's futex word: whoever wakes the poster bumps it first, so a poster
/// about to sleep on an old value does not.
const WAKE: usize = 32;
/// Set when a request is posted again after its server died: it may have been done.
const RETRY: usize = 40;
const OUTCOME_LEN: usize = 44;
/// The request's bytes: written by the poster while FILLING, then only read.
const REQUEST_AT: usize = 64;
pub(crate) const REQUEST_MAX: usize = 512;
/// The outcome's bytes: written by the server while TAKEN, read by the poster once DONE.
/// Apart from the request's, so a request stays readable in every state.
const OUTCOME_AT: usize = REQUEST_AT + REQUEST_MAX;
pub(crate) const OUTCOME_MAX: usize = SLOT_SIZE - OUTCOME_AT;

/// A slot's states.
const FREE: u32 = 0;
const FILLING: u32 = 1;
pub(crate) const POSTED: u32 = 2;
pub(crate) const TAKEN: u32 = 3;
const DONE: u32 = 4;
pub(crate) const WITHDRAWN: u32 = 5;

fn tag(state: u32, pid: u32) -> u64 {
    u64::from(pid) << 32 | u64::from(state)
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "the state is the tag's low half, by design"
)]
fn state_of(tag: u64) -> u32 {
    tag as u32
}

fn pid_of(tag: u64) -> u32 {
    (tag >> 32) as u32
}

/// Whether a process with this pid runs (no start time: used only to free slots of
/// posters that are gone, where a reused pid merely keeps a slot busy longer).
fn runs(pid: u32) -> bool {
    ProcessId {
        pid,
        start_time: None,
        pid_ns: None,
        pidfs_inode: None,
    }
    .is_alive()
}

/// A request taken from the board, to serve.
pub(crate) struct Taken {
    pub(crate) slot: usize,
    pub(crate) request: Vec<u8>,
    /// Posted again after a server died with it: it may have been done already.
    pub(crate) retried: bool,
}

/// A request whose poster withdrew it while a server that has since died held it:
/// whatever that server saved under its token must be ended.
pub(crate) struct Orphan {
    slot: usize,
    seen: u64,
    pub(crate) request: Vec<u8>,
}

/// What withdrawing a request found.
pub(crate) enum Withdrawn {
    /// It had been served: the outcome.
    Served(Vec<u8>),
    /// It had not, and now will not be (or its server ends what it did).
    NotServed,
}

impl Board {
    fn slot_u32(&self, slot: usize, word: usize) -> &std::sync::atomic::AtomicU32 {
        self.map.u32_at(super::HEADER + slot * SLOT_SIZE + word)
    }

    fn slot_tag(&self, slot: usize) -> &std::sync::atomic::AtomicU64 {
        self.map.u64_at(super::HEADER + slot * SLOT_SIZE + TAG)
    }

    fn swap_tag(&self, slot: usize, from: u64, to: u64) -> bool {
        self.slot_tag(slot)
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    #[expect(
        clippy::cast_possible_truncation,
        reason = "the bytes fit a slot of a few KiB"
    )]
    fn write_bytes(&self, slot: usize, at: usize, len_word: usize, bytes: &[u8]) {
        let area = self
            .map
            .bytes(super::HEADER + slot * SLOT_SIZE + at, bytes.len());
        for (cell, &byte) in area.iter().zip(bytes) {
            cell.store(byte, Ordering::Relaxed);
        }
        self.slot_u32(slot, len_word)
            .store(bytes.len() as u32, Ordering::Release);
    }

    fn read_bytes(&self, slot: usize, at: usize, len_word: usize, max: usize) -> Vec<u8> {
        let len = (self.slot_u32(slot, len_word).load(Ordering::Acquire) as usize).min(max);
        let area = self.map.bytes(super::HEADER + slot * SLOT_SIZE + at, len);
        area.iter()
            .map(|cell| cell.load(Ordering::Relaxed))
            .collect()
    }

    fn request_bytes(&self, slot: usize) -> Vec<u8> {
        self.read_bytes(slot, REQUEST_AT, REQUEST_LEN, REQUEST_MAX)
    }

    fn owner(&self, slot: usize) -> ProcessId {
        let start = self
            .map
            .u64_at(super::HEADER + slot * SLOT_SIZE + OWNER_START)
            .load(Ordering::Acquire);
        ProcessId {
            pid: self.slot_u32(slot, OWNER_PID).load(Ordering::Acquire),
            start_time: Some(start).filter(|&s| s != 0),
            pid_ns: None,
            pidfs_inode: None,
        }
    }

    // ---- The poster's transitions ----

    /// FREE → FILLING (or a slot its poster left behind by dying): a slot made `me`'s.
    /// Starts where `me`'s pid points, so posters rarely race for one slot.
    pub(crate) fn claim(&self, me: ProcessId) -> Option<usize> {
        let first = me.pid as usize % SLOTS;
        let order = || (0..SLOTS).map(|i| (first + i) % SLOTS);
        let mine = tag(FILLING, me.pid);
        if let Some(slot) = order().find(|&slot| self.swap_tag(slot, tag(FREE, 0), mine)) {
            return Some(slot);
        }
        order().find(|&slot| {
            let seen = self.slot_tag(slot).load(Ordering::Acquire);
            let left_behind = match state_of(seen) {
                FILLING | POSTED => !runs(pid_of(seen)),
                DONE => !self.owner(slot).is_alive(),
                // TAKEN and WITHDRAWN are a server's, settled by lock holders.
                _ => false,
            };
            left_behind && self.swap_tag(slot, seen, mine)
        })
    }

    /// FILLING → POSTED: the request in `bytes` (at most `REQUEST_MAX`) is up for any
    /// lock holder to take.
    pub(crate) fn publish(&self, slot: usize, me: ProcessId, bytes: &[u8]) {
        self.slot_u32(slot, OWNER_PID)
            .store(me.pid, Ordering::Release);
        self.map
            .u64_at(super::HEADER + slot * SLOT_SIZE + OWNER_START)
            .store(me.start_time.unwrap_or(0), Ordering::Release);
        self.write_bytes(slot, REQUEST_AT, REQUEST_LEN, bytes);
        self.slot_u32(slot, RETRY).store(0, Ordering::Release);
        self.slot_tag(slot)
            .store(tag(POSTED, me.pid), Ordering::Release);
    }

    /// DONE → FREE: the outcome, once served; `None` while it is not.
    pub(crate) fn collect(&self, slot: usize) -> Option<Vec<u8>> {
        let seen = self.slot_tag(slot).load(Ordering::Acquire);
        if state_of(seen) != DONE {
            return None;
        }
        let outcome = self.read_bytes(slot, OUTCOME_AT, OUTCOME_LEN, OUTCOME_MAX);
        self.swap_tag(slot, seen, tag(FREE, 0));
        Some(outcome)
    }

    /// The poster gives up: FILLING or POSTED → FREE (never taken), TAKEN → WITHDRAWN
    /// (its server leaves it out, or ends what it saved, before anyone else can get
    /// its ports), DONE → FREE with the outcome.
    pub(crate) fn withdraw(&self, slot: usize) -> Withdrawn {
        loop {
            let seen = self.slot_tag(slot).load(Ordering::Acquire);
            let next = match state_of(seen) {
                FILLING | POSTED => tag(FREE, 0),
                TAKEN => tag(WITHDRAWN, pid_of(seen)),
                DONE => match self.collect(slot) {
                    Some(outcome) => return Withdrawn::Served(outcome),
                    None => continue,
                },
                _ => return Withdrawn::NotServed,
            };
            if self.swap_tag(slot, seen, next) {
                return Withdrawn::NotServed;
            }
        }
    }

    /// The poster's wake count: read it before looking at anything, then `wait` with it.
    pub(crate) fn wakes(&self, slot: usize) -> u32 {
        self.slot_u32(slot, WAKE).load(Ordering::Acquire)
    }

    /// Sleeps until the poster of `slot` is woken after `wakes` was read, or `timeout`.
    pub(crate) fn wait(&self, slot: usize, wakes: u32, timeout: Duration) {
        super::map::wait_while(self.slot_u32(slot, WAKE), wakes, timeout);
    }

    /// Wakes the poster of `slot` (served, or asked to take the lock).
    pub(crate) fn wake(&self, slot: usize) {
        let word = self.slot_u32(slot, WAKE);
        word.fetch_add(1, Ordering::AcqRel);
        super::map::wake_one(word);
    }

    /// Wakes one poster still waiting to be served, so that it takes the lock next.
    pub(crate) fn wake_one_posted(&self) {
        let posted =
            |slot: &usize| state_of(self.slot_tag(*slot).load(Ordering::Acquire)) == POSTED;
        if let Some(slot) = (0..SLOTS).find(posted) {
            self.wake(slot);
        }
    }

    // ---- The lock holder's transitions (only ever with the lock held) ----
    //
    // A server moves every slot it took out of TAKEN before it lets go of the lock.
    // So a lock holder that finds a slot TAKEN, or WITHDRAWN from TAKEN, by anyone
    // knows that server died mid-way: it holds the lock, so no live server can.

    /// TAKEN by a dead server → POSTED again (flagged: it may have been done); when
    /// its poster is gone too, collected as an orphan to settle, as WITHDRAWN ones of
    /// a dead server are: nobody waits for it, and what its server may have saved for
    /// it is ended.
    pub(crate) fn adopt_orphans(&self) -> Vec<Orphan> {
        let mut orphans = Vec::new();
        for slot in 0..SLOTS {
            let seen = self.slot_tag(slot).load(Ordering::Acquire);
            match state_of(seen) {
                TAKEN => {
                    let poster = self.owner(slot);
                    if !poster.is_alive() {
                        orphans.push(Orphan {
                            slot,
                            seen,
                            request: self.request_bytes(slot),
                        });
                        continue;
                    }
                    self.slot_u32(slot, RETRY).store(1, Ordering::Release);
                    if self.swap_tag(slot, seen, tag(POSTED, poster.pid)) {
                        log::debug!("slot {slot}: its server died; posted again");
                    }
                }
                WITHDRAWN => orphans.push(Orphan {
                    slot,
                    seen,
                    request: self.request_bytes(slot),
                }),
                _ => {}
            }
        }
        orphans
    }

    /// WITHDRAWN → FREE, once what its server saved is ended (in a saved transaction).
    pub(crate) fn settle(&self, orphan: &Orphan) {
        self.swap_tag(orphan.slot, orphan.seen, tag(FREE, 0));
    }

    /// POSTED → TAKEN: every posted request, for `server` to serve. A request whose
    /// poster is gone (one `kill(pid, 0)` each) is not served but freed: nobody would
    /// read its outcome.
    pub(crate) fn take_posted(&self, server: ProcessId) -> Vec<Taken> {
        let mut taken = Vec::new();
        for slot in 0..SLOTS {
            let seen = self.slot_tag(slot).load(Ordering::Acquire);
            if state_of(seen) != POSTED {
                continue;
            }
            if pid_of(seen) != server.pid && !crate::process::exists(pid_of(seen)) {
                if self.swap_tag(slot, seen, tag(FREE, 0)) {
                    log::debug!("slot {slot}: its poster is gone; not served");
                }
                continue;
            }
            if self.swap_tag(slot, seen, tag(TAKEN, server.pid)) {
                taken.push(Taken {
                    slot,
                    request: self.request_bytes(slot),
                    retried: self.slot_u32(slot, RETRY).load(Ordering::Acquire) != 0,
                });
            }
        }
        taken
    }

    /// Whether the poster of `slot` is gone (one `kill(pid, 0)`): it will never read
    /// an outcome.
    pub(crate) fn poster_gone(&self, slot: usize) -> bool {
        !crate::process::exists(self.slot_u32(slot, OWNER_PID).load(Ordering::Acquire))
    }

    /// Whether `server` still has `slot` (its poster has not withdrawn it).
    pub(crate) fn still_taken(&self, slot: usize, server: ProcessId) -> bool {
        self.slot_tag(slot).load(Ordering::Acquire) == tag(TAKEN, server.pid)
    }

    /// TAKEN → DONE, with the outcome (at most `OUTCOME_MAX` bytes). False when the
    /// poster withdrew it meanwhile (WITHDRAWN): the server must end what it saved
    /// for it, then [`settle_own`](Board::settle_own) it.
    pub(crate) fn complete(&self, slot: usize, server: ProcessId, outcome: &[u8]) -> bool {
        // The outcome area is the server's while the slot is TAKEN by it.
        if !self.still_taken(slot, server) {
            return false;
        }
        self.write_bytes(slot, OUTCOME_AT, OUTCOME_LEN, outcome);
        self.swap_tag(slot, tag(TAKEN, server.pid), tag(DONE, server.pid))
    }

    /// TAKEN → FREE for a server that served its own request (it has the outcome).
    pub(crate) fn finish_own(&self, slot: usize, server: ProcessId) {
        self.swap_tag(slot, tag(TAKEN, server.pid), tag(FREE, 0));
    }

    /// Whether the request in `slot` has been served (its outcome waits).
    pub(crate) fn is_done(&self, slot: usize) -> bool {
        state_of(self.slot_tag(slot).load(Ordering::Acquire)) == DONE
    }

    /// WITHDRAWN by its poster from `server` → FREE, once the server ended what it
    /// saved for it.
    pub(crate) fn settle_own(&self, slot: usize, server: ProcessId) {
        self.swap_tag(slot, tag(WITHDRAWN, server.pid), tag(FREE, 0));
    }
}

// The board's own tests: without `linux_kernel` no board is ever made.
#[cfg(all(test, linux_kernel))]
mod tests {
    use super::*;

    /// Two mappings of one board, as two processes have it.
    fn two_views() -> (tempfile::TempDir, Board, Board) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let opened = crate::directory::RegistryDir::prepare(dir.path()).expect("a registry dir");
        let a = Board::open(&opened).ok().flatten().expect("a board");
        let b = Board::open(&opened)
            .ok()
            .flatten()
            .expect("the same board again");
        (dir, a, b)
    }

    fn me() -> ProcessId {
        ProcessId::current()
    }

    /// A server that is not this process (only its pid is used).
    fn server() -> ProcessId {
        ProcessId {
            pid: 1,
            start_time: None,
            pid_ns: None,
            pidfs_inode: None,
        }
    }

    #[test]
    fn a_request_and_its_outcome_cross_between_mappings_intact() {
        let (_dir, poster, holder) = two_views();
        let request: Vec<u8> = (0..REQUEST_MAX).map(|i| (i * 7).to_le_bytes()[0]).collect();
        let slot = poster.claim(me()).expect("a slot");
        poster.publish(slot, me(), &request);
        let taken = holder.take_posted(server());
        assert_eq!(taken.len(), 1);
        assert_eq!(
            taken[0].request, request,
            "every byte, through the other mapping"
        );
        assert!(poster.collect(slot).is_none(), "not served yet");
        let outcome: Vec<u8> = (0..OUTCOME_MAX).map(|i| (i * 3).to_le_bytes()[0]).collect();
        assert!(holder.complete(slot, server(), &outcome));
        assert_eq!(poster.collect(slot), Some(outcome));
        assert!(
            poster.collect(slot).is_none(),
            "collected once; the slot is free"
        );
    }

    #[test]
    fn a_withdrawn_request_is_not_completed_and_waits_to_be_settled() {
        let (_dir, poster, holder) = two_views();
        let slot = poster.claim(me()).expect("a slot");
        poster.publish(slot, me(), b"request");
        assert_eq!(holder.take_posted(server()).len(), 1);
        assert!(matches!(poster.withdraw(slot), Withdrawn::NotServed));
        assert!(!holder.still_taken(slot, server()));
        assert!(!holder.complete(slot, server(), b"outcome"));
        // The next lock holder finds it, with its request to end by its token.
        let orphans = holder.adopt_orphans();
        assert_eq!(orphans.len(), 1);
        assert_eq!(orphans[0].request, b"request");
        holder.settle(&orphans[0]);
        assert!(holder.adopt_orphans().is_empty());
        assert!(holder.take_posted(server()).is_empty());
    }

    #[test]
    fn a_posted_request_withdrawn_is_simply_gone() {
        let (_dir, poster, holder) = two_views();
        let slot = poster.claim(me()).expect("a slot");
        poster.publish(slot, me(), b"request");
        assert!(matches!(poster.withdraw(slot), Withdrawn::NotServed));
        assert!(holder.take_posted(server()).is_empty());
        assert!(holder.adopt_orphans().is_empty());
    }

    #[test]
    fn a_served_request_withdrawn_late_hands_over_its_outcome() {
        let (_dir, poster, holder) = two_views();
        let slot = poster.claim(me()).expect("a slot");
        poster.publish(slot, me(), b"request");
        holder.take_posted(server());
        assert!(holder.complete(slot, server(), b"outcome"));
        match poster.withdraw(slot) {
            Withdrawn::Served(outcome) => assert_eq!(outcome, b"outcome"),
            Withdrawn::NotServed => panic!("it was served"),
        }
    }

    #[test]
    fn a_dead_servers_request_is_posted_again_flagged() {
        let (_dir, poster, holder) = two_views();
        let slot = poster.claim(me()).expect("a slot");
        poster.publish(slot, me(), b"request");
        holder.take_posted(server());
        // With the lock, a TAKEN slot means its server died.
        assert!(holder.adopt_orphans().is_empty());
        let again = holder.take_posted(me());
        assert_eq!(again.len(), 1);
        assert!(
            again[0].retried,
            "it may have been done: served by its token"
        );
    }
}
