//! The request board: shared memory where portlease processes post their allocations
//! and releases, so that whichever of them holds the lock serves them all in one
//! transaction.
//!
//! With `flock` alone, 16 busy processes on 2 cores queue for the lock one transaction
//! at a time: each pays a registry read and write, and a release wakes every waiter
//! while the last holder usually barges back in (a p99 of 20-50 ms, measured). Here a
//! process posts its request in a slot, then either takes the lock and serves every
//! posted request (one read, one write for all), or sleeps on its slot's futex until a
//! holder has served it. One poster at a time (the "designated waiter") blocks on the
//! `flock` itself, so a released lock is taken at once; a holder serves every request
//! posted before it looked, so no request waits for more than about two transactions.
//! The board never decides who holds the lock (the `flock` does), so it cannot let two
//! processes in at once. Linux only (futexes); elsewhere every request takes the lock
//! itself.
//!
//! - [`map`]: the shared mapping (space reserved first; a file that shrinks under it
//!   cannot crash a process).
//! - [`slot`]: the slot protocol, one function per transition.
//! - [`wire`]: requests and outcomes as bytes.
//!
//! # The slot protocol
//! A slot's state and the pid responsible for it are one 64-bit word, changed only by
//! compare-and-swap.
//!
//! | state | moved by | to | function |
//! | --- | --- | --- | --- |
//! | FREE | a poster | FILLING | [`Board::claim`] |
//! | FILLING | its poster | POSTED | [`Board::publish`] |
//! | POSTED | its poster | FREE | [`Board::withdraw`] |
//! | POSTED | the lock holder | TAKEN (FREE if its poster is gone) | [`Board::take_posted`] |
//! | TAKEN | its server, after saving | DONE | [`Board::complete`] |
//! | TAKEN | its poster, giving up | WITHDRAWN | [`Board::withdraw`] |
//! | TAKEN (server dead) | the next lock holder | POSTED, flagged "retry"; if its poster is dead too, FREE once the leases saved under the request's token are ended | [`Board::adopt_orphans`], [`Board::settle`] |
//! | WITHDRAWN | its server, or the next lock holder | FREE, once the leases saved under the request's token are ended | [`Board::settle_own`], [`Board::settle`] |
//! | DONE | its poster | FREE, with the outcome | [`Board::collect`], [`Board::withdraw`] |
//! | FILLING, POSTED (poster dead) or DONE (poster dead) | any poster | FILLING | [`Board::claim`] |
//!
//! A server takes slots and moves every one of them out of TAKEN while it holds the
//! lock: it serves them in one transaction, and just before saving leaves out (undoes)
//! every request withdrawn by then; after saving it completes each slot, and ends, in
//! a second transaction under the same lock, the leases of any request withdrawn
//! between its check and its completion. So a lock holder that finds a slot TAKEN or
//! WITHDRAWN knows its server died.
//!
//! # When a party dies
//! - **A poster while FILLING or POSTED**: the next lock holder frees a POSTED slot
//!   without serving it; a FILLING one is reclaimed by the next poster that finds no
//!   free slot.
//! - **A poster while TAKEN**: its server, finding it gone when it completes, ends
//!   what it leased for it under the same lock. **After DONE**: a later poster
//!   reclaims the slot.
//! - **A server after taking, before saving**: nothing was saved; the next lock
//!   holder (the poster itself, whose wait ends on the free lock) posts the request
//!   again and serves it.
//! - **A server after saving, before completing**: the next lock holder posts the
//!   request again, flagged; serving it again finds the leases saved under its token
//!   and hands those out (a release is idempotent too).
//! - **A server and its poster, both after saving**: nobody was told of the leases;
//!   the next lock holder ends the request's token, as for a withdrawn one, then
//!   frees the slot.
//! - **A server after its poster withdrew**: the slot is WITHDRAWN with the request's
//!   token still in it; the next lock holder ends that token's leases in its
//!   transaction, then frees the slot. Until then the leases keep their ports from
//!   anyone else.
//! - **The designated waiter**: replaced by a poster that finds it dead after a quiet
//!   wait. **A holder** that said it will wake a poster: forgotten once found dead.
//!
//! Every poster also gives up at its deadline (withdrawing, as above): a stopped
//! process holds nobody hostage, and a poster that reports an error owns no lease.
//! (A release that its poster gave up on after its server took it may still be
//! done: the lease then ends, as was asked; undoing it could hand out a port twice.)

#[cfg_attr(linux_kernel, path = "map/linux.rs")]
#[cfg_attr(not(linux_kernel), path = "map/other.rs")]
mod map;
pub(crate) mod slot;
pub(crate) mod wire;

use std::fs::File;
use std::sync::atomic::Ordering;

use crate::directory::RegistryDir;
use crate::error::{Error, Result};
use crate::files::open_lasting;
use crate::layout::BOARD_FILE;
use crate::process::ProcessId;

use map::Mapping;
pub(crate) use slot::{OUTCOME_MAX, Orphan, REQUEST_MAX, Taken, Withdrawn};

pub(crate) const HEADER: usize = 4096;
const SIZE: usize = HEADER + slot::SLOTS * slot::SLOT_SIZE;

// Header: byte offsets of its words.
const CURSOR: usize = 0;
pub(crate) const DESIGNATED: usize = 64;
const DESIGNATED_START: usize = 72;
const LAYOUT: usize = 128;
/// The pid of a portlease process holding the lock, which will wake a poster when it
/// lets go (0: none, or the holder is a process that does not use the board).
const HOLDER: usize = 192;
/// The PID namespace (its inode) of the processes using the board: every pid on the
/// board is one of that namespace, set by the first process to map it.
const PID_NS: usize = 256;

/// This layout and wire format; a board made by another version is left alone.
const LAYOUT_VERSION: u32 = 0x706c_0003;

/// The mapped board.
pub(crate) struct Board {
    map: Mapping,
}

impl std::fmt::Debug for Board {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Board")
    }
}

/// Marks the board's lock holder while it lives.
pub(crate) struct HolderMark<'b> {
    board: &'b Board,
    pid: u32,
}

impl Drop for HolderMark<'_> {
    fn drop(&mut self) {
        self.board.clear_holder(self.pid);
    }
}

/// Opens the board's file. One function, so that the checks made on opening files in
/// the registry directory apply here in one place.
fn open_board_file(dir: &RegistryDir) -> Result<File> {
    open_lasting(dir, BOARD_FILE)
}

impl Board {
    /// Maps the board of the registry in `dir`, creating it if needed; `None` where it
    /// cannot be had (then every request takes the lock itself). Something other than
    /// a regular file of one link in its place is refused: nothing is written to it.
    pub(crate) fn open(dir: &RegistryDir) -> Result<Option<Board>> {
        if !cfg!(linux_kernel) {
            return Ok(None);
        }
        let file = match open_board_file(dir) {
            Ok(file) => file,
            Err(e @ Error::Unsafe { .. }) => return Err(e),
            Err(e) => {
                log::debug!("working without the request board: {e}");
                return Ok(None);
            }
        };
        Ok(Board::map(&file))
    }

    /// Maps the board's file (its space reserved first) if its layout is this
    /// version's and its processes are of the caller's PID namespace.
    ///
    /// Every party on the board is judged by its pid (a poster gone, a server dead, a
    /// designated waiter to replace), and a pid means nothing in another namespace:
    /// so a board serves one PID namespace, the first to map it, and a process of
    /// another (a container sharing the directory) works without it, taking the
    /// `flock` itself, which excludes every process alike.
    fn map(file: &File) -> Option<Board> {
        let Some(namespace) = crate::process::own_pid_namespace() else {
            log::debug!(
                "working without the request board: this process's PID namespace is unknown"
            );
            return None;
        };
        let map = Mapping::new(file, SIZE)
            .map_err(|e| log::debug!("working without the request board: {e}"))
            .ok()?;
        let board = Board { map };
        let layout = board.map.u32_at(LAYOUT);
        if let Err(other) =
            layout.compare_exchange(0, LAYOUT_VERSION, Ordering::AcqRel, Ordering::Acquire)
            && other != LAYOUT_VERSION
        {
            log::debug!(
                "working without the request board: its layout {other:#x} is another version's"
            );
            return None;
        }
        let owners = board.map.u64_at(PID_NS);
        match owners.compare_exchange(0, namespace, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Some(board),
            Err(theirs) if theirs == namespace => Some(board),
            Err(theirs) => {
                log::debug!(
                    "working without the request board: it serves the processes of PID \
                     namespace {theirs}, and this one is of {namespace}"
                );
                None
            }
        }
    }

    /// Whether the board's file shrank under its mapping: from then on this process
    /// no longer shares it, and finishes its requests on its own.
    pub(crate) fn broken(&self) -> bool {
        self.map.broken()
    }

    /// Becomes the designated waiter (the one poster blocking on the `flock`) if there
    /// is none, or, when `replace_dead`, if the one there is has died (a /proc read).
    pub(crate) fn designate(&self, me: ProcessId, replace_dead: bool) -> bool {
        let designated = self.map.u32_at(DESIGNATED);
        let current = designated.load(Ordering::Acquire);
        if current != 0 {
            if !replace_dead {
                return false;
            }
            let start = self.map.u64_at(DESIGNATED_START).load(Ordering::Acquire);
            let waiter = ProcessId {
                pid: current,
                start_time: Some(start).filter(|&s| s != 0),
                pid_ns: None,
                pidfs_inode: None,
            };
            if waiter.is_alive() {
                return false;
            }
        }
        if designated
            .compare_exchange(current, me.pid, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        self.map
            .u64_at(DESIGNATED_START)
            .store(me.start_time.unwrap_or(0), Ordering::Release);
        true
    }

    /// Stops being the designated waiter.
    pub(crate) fn undesignate(&self, me: ProcessId) {
        let _ = self.map.u32_at(DESIGNATED).compare_exchange(
            me.pid,
            0,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }

    /// The portlease process holding the lock, if one says so.
    pub(crate) fn holder(&self) -> Option<u32> {
        Some(self.map.u32_at(HOLDER).load(Ordering::Acquire)).filter(|&pid| pid != 0)
    }

    /// Says that `me` holds the lock (and will wake a poster when it lets go), until
    /// the mark is dropped.
    pub(crate) fn mark_holder(&self, me: u32) -> HolderMark<'_> {
        self.map.u32_at(HOLDER).store(me, Ordering::Release);
        HolderMark {
            board: self,
            pid: me,
        }
    }

    /// Forgets a holder that died holding the lock.
    pub(crate) fn clear_dead_holder(&self, pid: u32) {
        let holder = ProcessId {
            pid,
            start_time: None,
            pid_ns: None,
            pidfs_inode: None,
        };
        if !holder.is_alive() {
            self.clear_holder(pid);
        }
    }

    fn clear_holder(&self, pid: u32) {
        let _ =
            self.map
                .u32_at(HOLDER)
                .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// The next-fit hint: the last port handed out. Read and written under the lock.
    pub(crate) fn cursor(&self) -> Option<u16> {
        u16::try_from(self.map.u32_at(CURSOR).load(Ordering::Relaxed))
            .ok()
            .filter(|&p| p != 0)
    }

    pub(crate) fn set_cursor(&self, port: u16) {
        self.map
            .u32_at(CURSOR)
            .store(u32::from(port), Ordering::Relaxed);
    }
}
