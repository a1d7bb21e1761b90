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
//!
//! The board never decides who holds the lock (the `flock` does), so it cannot let two
//! processes in at once. A process that dies while posting, waiting or serving is
//! found out by its pid and start time, and its slot freed or served again. Linux
//! only (futexes); elsewhere every request takes the lock itself.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::directory::RegistryDir;
use crate::error::{Error, Result};
use crate::files::open_lasting;
use crate::process::ProcessId;

/// The board's file, beside the registry.
pub const BOARD_FILE: &str = "port_registry.queue";

const HEADER: usize = 4096;
const SLOTS: usize = 64;
const SLOT_SIZE: usize = 2048;
/// Where a slot's payload starts, after its header words.
const PAYLOAD_AT: usize = 64;
/// The most bytes a request or outcome may take in a slot.
pub(crate) const PAYLOAD_MAX: usize = SLOT_SIZE - PAYLOAD_AT;
const SIZE: usize = HEADER + SLOTS * SLOT_SIZE;

// Header: byte offsets of its words.
const CURSOR: usize = 0;
const DESIGNATED: usize = 64;
const DESIGNATED_START: usize = 72;
const LAYOUT: usize = 128;
/// The pid of a portlease process holding the lock, which will wake a poster when it
/// lets go (0: none, or the holder is a process that does not use the board).
const HOLDER: usize = 192;

/// This layout and request format; a board made by another version is left alone.
const LAYOUT_VERSION: u32 = 0x706c_0001;

// A slot: byte offsets of its words. TAG holds its state and, in its high half, the
// pid of the process the state makes responsible for it (the poster while it posts,
// the server while it serves), changed only by compare-and-swap: so a server can
// never complete a request that is no longer its own. WAKE is the poster's futex
// word: whoever wakes the poster bumps it first, so a poster about to sleep on an old
// value does not.
const TAG: usize = 0;
const LEN: usize = 8;
const OWNER_PID: usize = 12;
const OWNER_START: usize = 16;
const WAKE: usize = 32;
/// Set when a request is posted again after its server died: it may have been done.
const RETRY: usize = 40;

/// A slot's states.
const FREE: u32 = 0;
const FILLING: u32 = 1;
const POSTED: u32 = 2;
const TAKEN: u32 = 3;
/// The server is writing the outcome.
const WRITING: u32 = 4;
const DONE: u32 = 5;
/// Taken, but its poster gave up waiting: the server frees it when done.
const ABANDONED: u32 = 6;

fn tag(state: u32, pid: u32) -> u64 {
    u64::from(pid) << 32 | u64::from(state)
}

fn state_of(tag: u64) -> u32 {
    tag as u32
}

fn pid_of(tag: u64) -> u32 {
    (tag >> 32) as u32
}

/// Whether the process with this pid runs (no start time: the pid in a tag is only
/// trusted for the length of one transaction).
fn runs(pid: u32) -> bool {
    ProcessId {
        pid,
        start_time: None,
        pid_ns: None,
    }
    .is_alive()
}

/// The mapped board.
pub(crate) struct Board {
    base: NonNull<u8>,
}

// SAFETY: the mapping is shared memory used through atomics, and payload bytes are
// only touched by whoever the slot's state says owns them.
unsafe impl Send for Board {}
// SAFETY: as above.
unsafe impl Sync for Board {}

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

/// A request taken from the board, to serve.
pub(crate) struct Taken {
    pub(crate) slot: usize,
    pub(crate) request: Vec<u8>,
    /// Posted again after a server died with it: it may have been done already.
    pub(crate) retried: bool,
}

/// Wakes one poster, from any thread.
pub(crate) struct Waker {
    board: Arc<Board>,
    slot: usize,
}

impl Waker {
    pub(crate) fn wake(&self) {
        self.board.wake(self.slot);
    }
}

/// A request this process posted; dropping it frees the slot unless a server still
/// works on it.
pub(crate) struct Posted<'b> {
    board: &'b Board,
    slot: usize,
    me: u32,
}

/// What became of a posted request once waiting ends.
pub(crate) enum GaveUp {
    /// It was served after all: the outcome.
    Served(Vec<u8>),
    /// It was not, and will not be.
    NotServed,
}

impl Board {
    /// Maps the board of the registry in `dir`, creating it if needed; `None` where it
    /// cannot be had (then every request takes the lock itself). Something other than
    /// a regular file of one link in its place is refused: nothing is written to it.
    pub(crate) fn open(dir: &RegistryDir) -> Result<Option<Board>> {
        if !cfg!(target_os = "linux") {
            return Ok(None);
        }
        match open_lasting(dir, BOARD_FILE) {
            Ok(file) => Ok(Board::map(&file)),
            Err(e @ Error::Unsafe { .. }) => Err(e),
            Err(e) => {
                log::debug!("no request board: {e}");
                Ok(None)
            }
        }
    }

    /// Maps the board file, growing it to its size first.
    fn map(file: &File) -> Option<Board> {
        // Only ever grown: a mapping past the end of the file would fault.
        if file.metadata().ok()?.len() < SIZE as u64 {
            file.set_len(SIZE as u64).ok()?;
        }
        // SAFETY: maps the file we opened read-write, at its full size; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            log::debug!("no request board: {}", std::io::Error::last_os_error());
            return None;
        }
        let board = Board {
            base: NonNull::new(base.cast())?,
        };
        let layout = board.u32_at(LAYOUT);
        match layout.compare_exchange(0, LAYOUT_VERSION, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Some(board),
            Err(LAYOUT_VERSION) => Some(board),
            Err(other) => {
                log::debug!("no request board: its layout {other:#x} is another version's");
                None
            }
        }
    }

    fn u32_at(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(offset.is_multiple_of(4) && offset + 4 <= SIZE);
        // SAFETY: in the mapping, aligned, and only ever used atomically.
        unsafe { &*self.base.as_ptr().add(offset).cast::<AtomicU32>() }
    }

    fn u64_at(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset.is_multiple_of(8) && offset + 8 <= SIZE);
        // SAFETY: in the mapping, aligned, and only ever used atomically.
        unsafe { &*self.base.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    fn slot_word(&self, slot: usize, word: usize) -> &AtomicU32 {
        self.u32_at(HEADER + slot * SLOT_SIZE + word)
    }

    fn tag(&self, slot: usize) -> &AtomicU64 {
        self.u64_at(HEADER + slot * SLOT_SIZE + TAG)
    }

    fn swap_tag(&self, slot: usize, from: u64, to: u64) -> bool {
        self.tag(slot)
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// A process start time kept at byte `offset` (0 stands for "not known").
    fn start_time_at(&self, offset: usize) -> Option<u64> {
        Some(self.u64_at(offset).load(Ordering::Acquire)).filter(|&start| start != 0)
    }

    fn set_start_time_at(&self, offset: usize, start_time: Option<u64>) {
        self.u64_at(offset)
            .store(start_time.unwrap_or(0), Ordering::Release);
    }

    fn owner(&self, slot: usize) -> ProcessId {
        ProcessId {
            pid: self.slot_word(slot, OWNER_PID).load(Ordering::Acquire),
            start_time: self.start_time_at(HEADER + slot * SLOT_SIZE + OWNER_START),
            pid_ns: None,
        }
    }

    /// Copies `bytes` into a slot's payload. The caller owns the slot (its tag says so).
    fn write_payload(&self, slot: usize, bytes: &[u8]) {
        debug_assert!(bytes.len() <= PAYLOAD_MAX);
        // SAFETY: the payload area lies in the mapping, and no other process touches
        // it while the slot's tag gives it to the caller.
        unsafe {
            let at = self
                .base
                .as_ptr()
                .add(HEADER + slot * SLOT_SIZE + PAYLOAD_AT);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), at, bytes.len());
        }
        self.slot_word(slot, LEN)
            .store(bytes.len() as u32, Ordering::Release);
    }

    fn read_payload(&self, slot: usize) -> Vec<u8> {
        let len = (self.slot_word(slot, LEN).load(Ordering::Acquire) as usize).min(PAYLOAD_MAX);
        let mut bytes = vec![0u8; len];
        // SAFETY: as in `write_payload`; the tag gives the slot to the caller.
        unsafe {
            let at = self
                .base
                .as_ptr()
                .add(HEADER + slot * SLOT_SIZE + PAYLOAD_AT);
            std::ptr::copy_nonoverlapping(at, bytes.as_mut_ptr(), len);
        }
        bytes
    }

    /// Posts a request for `me`; `None` when it is too long or no slot is free.
    pub(crate) fn post(&self, me: ProcessId, request: &[u8]) -> Option<Posted<'_>> {
        if request.len() > PAYLOAD_MAX {
            return None;
        }
        let slot = self.claim(me)?;
        self.slot_word(slot, OWNER_PID)
            .store(me.pid, Ordering::Release);
        self.set_start_time_at(HEADER + slot * SLOT_SIZE + OWNER_START, me.start_time);
        self.write_payload(slot, request);
        self.slot_word(slot, RETRY).store(0, Ordering::Release);
        self.tag(slot).store(tag(POSTED, me.pid), Ordering::Release);
        Some(Posted {
            board: self,
            slot,
            me: me.pid,
        })
    }

    /// A free slot, made ours (FILLING). Starts where this process's pid points, so
    /// posters rarely race for one slot; a second pass frees slots of dead processes.
    fn claim(&self, me: ProcessId) -> Option<usize> {
        let first = me.pid as usize % SLOTS;
        let order = || (0..SLOTS).map(|i| (first + i) % SLOTS);
        let mine = tag(FILLING, me.pid);
        if let Some(slot) = order().find(|&slot| self.swap_tag(slot, tag(FREE, 0), mine)) {
            return Some(slot);
        }
        order().find(|&slot| {
            let seen = self.tag(slot).load(Ordering::Acquire);
            let abandoned = match state_of(seen) {
                // Whoever should free it is gone. (While a slot fills, its owner
                // words may still name the previous poster: the tag names this one.)
                FILLING | POSTED => !runs(pid_of(seen)),
                DONE => !self.owner(slot).is_alive(),
                // The poster reposts it itself while it lives.
                TAKEN | WRITING => !runs(pid_of(seen)) && !self.owner(slot).is_alive(),
                ABANDONED => !runs(pid_of(seen)),
                _ => false,
            };
            abandoned && self.swap_tag(slot, seen, mine)
        })
    }

    /// Takes every posted request, for `server` to serve.
    pub(crate) fn take_posted(&self, server: ProcessId) -> Vec<Taken> {
        let mut taken = Vec::new();
        for slot in 0..SLOTS {
            let seen = self.tag(slot).load(Ordering::Acquire);
            if state_of(seen) == POSTED && self.swap_tag(slot, seen, tag(TAKEN, server.pid)) {
                taken.push(Taken {
                    slot,
                    request: self.read_payload(slot),
                    retried: self.slot_word(slot, RETRY).load(Ordering::Acquire) != 0,
                });
            }
        }
        taken
    }

    /// Hands a request `server` served its outcome, and wakes its poster; leaves the
    /// slot alone if it is no longer the server's to complete.
    pub(crate) fn complete(&self, slot: usize, server: ProcessId, outcome: &[u8]) {
        let (taken, writing) = (tag(TAKEN, server.pid), tag(WRITING, server.pid));
        if self.swap_tag(slot, taken, writing) {
            self.write_payload(slot, &outcome[..outcome.len().min(PAYLOAD_MAX)]);
            if self.swap_tag(slot, writing, tag(DONE, server.pid)) {
                self.wake(slot);
                return;
            }
        }
        // The poster gave up waiting meanwhile: nobody will read it.
        if self.swap_tag(slot, tag(ABANDONED, server.pid), tag(FREE, 0)) {
            log::debug!("a request was served after its poster gave up waiting");
        }
    }

    /// Wakes one poster still waiting to be served, so that it takes the lock next.
    pub(crate) fn wake_one_posted(&self) {
        let posted = |slot: &usize| state_of(self.tag(*slot).load(Ordering::Acquire)) == POSTED;
        if let Some(slot) = (0..SLOTS).find(posted) {
            self.wake(slot);
        }
    }

    /// Becomes the designated waiter (the one poster blocking on the `flock`) if there
    /// is none, or, when `replace_dead`, if the one there is has died (a /proc read).
    pub(crate) fn designate(&self, me: ProcessId, replace_dead: bool) -> bool {
        let designated = self.u32_at(DESIGNATED);
        let current = designated.load(Ordering::Acquire);
        if current != 0 {
            if !replace_dead {
                return false;
            }
            let holder = ProcessId {
                pid: current,
                start_time: self.start_time_at(DESIGNATED_START),
                pid_ns: None,
            };
            if holder.is_alive() {
                return false;
            }
        }
        if designated
            .compare_exchange(current, me.pid, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        self.set_start_time_at(DESIGNATED_START, me.start_time);
        true
    }

    /// The portlease process holding the lock, if one says so.
    pub(crate) fn holder(&self) -> Option<u32> {
        Some(self.u32_at(HOLDER).load(Ordering::Acquire)).filter(|&pid| pid != 0)
    }

    /// Says that `me` holds the lock (and will wake a poster when it lets go), until
    /// the mark is dropped.
    pub(crate) fn mark_holder(&self, me: u32) -> HolderMark<'_> {
        self.u32_at(HOLDER).store(me, Ordering::Release);
        HolderMark {
            board: self,
            pid: me,
        }
    }

    /// Forgets a holder that died holding the lock.
    pub(crate) fn clear_dead_holder(&self, pid: u32) {
        if !runs(pid) {
            self.clear_holder(pid);
        }
    }

    fn clear_holder(&self, pid: u32) {
        let _ = self
            .u32_at(HOLDER)
            .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// Stops being the designated waiter.
    pub(crate) fn undesignate(&self, me: ProcessId) {
        let _ = self.u32_at(DESIGNATED).compare_exchange(
            me.pid,
            0,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }

    /// The next-fit hint: the last port handed out. Read and written under the lock.
    pub(crate) fn cursor(&self) -> Option<u16> {
        u16::try_from(self.u32_at(CURSOR).load(Ordering::Relaxed))
            .ok()
            .filter(|&p| p != 0)
    }

    pub(crate) fn set_cursor(&self, port: u16) {
        self.u32_at(CURSOR)
            .store(u32::from(port), Ordering::Relaxed);
    }

    /// Something another thread can call to wake the poster of `slot`.
    pub(crate) fn waker(self: &Arc<Board>, slot: usize) -> Waker {
        Waker {
            board: Arc::clone(self),
            slot,
        }
    }

    fn wake(&self, slot: usize) {
        let word = self.slot_word(slot, WAKE);
        word.fetch_add(1, Ordering::AcqRel);
        futex_wake(word, 1);
    }
}

impl Posted<'_> {
    /// Which slot it is in.
    pub(crate) fn slot(&self) -> usize {
        self.slot
    }

    /// The outcome, once the request has been served.
    pub(crate) fn outcome(&self) -> Option<Vec<u8>> {
        let seen = self.board.tag(self.slot).load(Ordering::Acquire);
        (state_of(seen) == DONE).then(|| self.board.read_payload(self.slot))
    }

    /// The poster's wake count: read it before looking at anything, then `wait` with it.
    pub(crate) fn wakes(&self) -> u32 {
        self.board
            .slot_word(self.slot, WAKE)
            .load(Ordering::Acquire)
    }

    /// Sleeps until woken (served, or asked to take the lock) after `wakes` was read,
    /// or until `timeout` passes.
    pub(crate) fn wait(&self, wakes: u32, timeout: Duration) {
        futex_wait(self.board.slot_word(self.slot, WAKE), wakes, timeout);
    }

    /// If the server that took this request has died, posts it again.
    pub(crate) fn repost_if_server_died(&self) {
        let seen = self.board.tag(self.slot).load(Ordering::Acquire);
        if matches!(state_of(seen), TAKEN | WRITING) && !runs(pid_of(seen)) {
            self.board
                .slot_word(self.slot, RETRY)
                .store(1, Ordering::Release);
            self.board.swap_tag(self.slot, seen, tag(POSTED, self.me));
        }
    }

    /// Stops waiting: takes the outcome if it came (else dropping withdraws it).
    pub(crate) fn give_up(self) -> GaveUp {
        match self.outcome() {
            Some(outcome) => GaveUp::Served(outcome),
            None => GaveUp::NotServed,
        }
    }
}

impl Drop for Posted<'_> {
    /// Frees the slot, unless a server is working on it: then it is left for the
    /// server to free.
    fn drop(&mut self) {
        loop {
            let seen = self.board.tag(self.slot).load(Ordering::Acquire);
            let next = match state_of(seen) {
                TAKEN | WRITING => tag(ABANDONED, pid_of(seen)),
                _ => tag(FREE, 0),
            };
            if self.board.swap_tag(self.slot, seen, next) {
                return;
            }
        }
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        // SAFETY: unmaps what `open` mapped; no reference into it outlives `self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), SIZE) };
    }
}

#[cfg(target_os = "linux")]
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: a shared (not PRIVATE: other processes wake it) futex wait on a mapped,
    // aligned word with a relative timeout; returns on wake, timeout, change or signal.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &timeout,
        );
    }
}

#[cfg(target_os = "linux")]
fn futex_wake(word: &AtomicU32, count: i32) {
    // SAFETY: wakes sleepers on a mapped, aligned word; touches nothing else.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, count);
    }
}

#[cfg(not(target_os = "linux"))]
fn futex_wait(_: &AtomicU32, _: u32, timeout: Duration) {
    std::thread::sleep(timeout);
}

#[cfg(not(target_os = "linux"))]
fn futex_wake(_: &AtomicU32, _: i32) {}
