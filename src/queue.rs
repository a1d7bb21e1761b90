//! Turns for the registry lock: a first-come, first-served queue in shared memory that
//! portlease processes pass through before they take the `flock`.
//!
//! `flock` alone is unfair under contention: a release wakes every waiter, and the
//! process that just released usually takes the lock again before any of them runs,
//! so with 16 busy processes on 2 cores a waiter could wait many time slices (a p99 of
//! 20-50 ms, measured). Here each waiter draws a ticket and sleeps on a futex until
//! its turn; a release wakes only the next ticket's sleeper.
//!
//! The queue is advisory: mutual exclusion is still the `flock`'s, so the queue can
//! never let two processes in at once, and a process that dies or gives up holding a
//! ticket cannot stall the others for long: a waiter that sees no progress for
//! [`PATIENCE`] goes to the `flock` directly. It lives in `port_registry.queue` (one
//! page, mapped shared), beside the next-fit hint. Linux only (futexes); elsewhere
//! there is no queue and `flock` alone decides.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The queue's file, beside the registry.
pub const QUEUE_FILE: &str = "port_registry.queue";
/// How long a waiter waits without any turn passing before it stops queueing.
const PATIENCE: Duration = Duration::from_millis(20);
/// How long the next in line yields the processor before it sleeps.
const SPIN: Duration = Duration::from_micros(300);
const PAGE: usize = 4096;
/// Sleepers are spread over this many futex words, by ticket.
const SLOTS: usize = 32;

// Word offsets (u32) in the page; each hot word on its own 64-byte cache line.
const NEXT_TICKET: usize = 0;
const SERVING: usize = 16;
const CURSOR: usize = 32;
const FIRST_SLOT: usize = 64;

/// The mapped queue page.
pub(crate) struct TurnQueue {
    page: NonNull<AtomicU32>,
}

// SAFETY: the page is only accessed through atomics, from any thread or process.
unsafe impl Send for TurnQueue {}
// SAFETY: as above.
unsafe impl Sync for TurnQueue {}

impl std::fmt::Debug for TurnQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TurnQueue")
    }
}

/// A ticket drawn from the queue; the turn passes on when it is dropped.
pub(crate) struct Turn<'q> {
    queue: &'q TurnQueue,
    ticket: u32,
}

impl TurnQueue {
    /// Maps the queue of the registry in `dir`, creating it if needed; `None` where
    /// it cannot be had (then `flock` alone orders the waiters).
    pub(crate) fn open(dir: &Path) -> Option<TurnQueue> {
        if !cfg!(target_os = "linux") {
            return None;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(dir.join(QUEUE_FILE))
            .map_err(|e| log::debug!("no lock queue: {e}"))
            .ok()?;
        // Only ever grown, to one page: a shorter mapping would fault.
        if file.metadata().ok()?.len() < PAGE as u64 {
            file.set_len(PAGE as u64).ok()?;
        }
        // SAFETY: maps one page of a file we opened read-write; the result is checked.
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if page == libc::MAP_FAILED {
            log::debug!("no lock queue: {}", std::io::Error::last_os_error());
            return None;
        }
        Some(TurnQueue {
            page: NonNull::new(page.cast())?,
        })
    }

    fn word(&self, index: usize) -> &AtomicU32 {
        debug_assert!(index < PAGE / 4);
        // SAFETY: the page is mapped for our lifetime, aligned, and only used atomically.
        unsafe { &*self.page.as_ptr().add(index) }
    }

    fn slot(&self, ticket: u32) -> &AtomicU32 {
        self.word(FIRST_SLOT + ticket as usize % SLOTS * 16)
    }

    /// Draws a ticket and waits for its turn, until `deadline` at most. Returns the
    /// turn to hold while the lock is held, or `None` if the deadline passed first.
    pub(crate) fn wait_turn(&self, deadline: Instant) -> Option<Turn<'_>> {
        let ticket = self.word(NEXT_TICKET).fetch_add(1, Ordering::SeqCst);
        let turn = Turn {
            queue: self,
            ticket,
        };
        let mut serving = self.word(SERVING).load(Ordering::SeqCst);
        let mut progress = Instant::now();
        loop {
            // Read the slot before `serving`: a release changes `serving` first, then
            // the slot, so a turn that passes in between makes the wait return at once.
            let generation = self.slot(ticket).load(Ordering::SeqCst);
            let now_serving = self.word(SERVING).load(Ordering::SeqCst);
            let ahead = ticket.wrapping_sub(now_serving) as i32;
            if ahead <= 0 {
                // Wake the next in line now, so it is running (and spinning) by the
                // time this turn ends: a hand-over then needs no wake-up.
                turn.wake(ticket.wrapping_add(1));
                return Some(turn);
            }
            let now = Instant::now();
            if now_serving != serving {
                serving = now_serving;
                progress = now;
            }
            if now >= deadline {
                turn.abandon();
                return None;
            }
            if now.duration_since(progress) >= PATIENCE {
                // A ticket ahead was dropped by a process that died: skip the queue.
                return Some(turn);
            }
            if ahead == 1 && now.duration_since(progress) < SPIN {
                // Next in line: the turn comes within one transaction, so yield the
                // processor rather than sleep and wait to be woken.
                std::thread::yield_now();
                continue;
            }
            let wait = (progress + PATIENCE).min(deadline) - now;
            futex_wait(self.slot(ticket), generation, wait);
        }
    }

    /// The next-fit hint: the last port handed out (0: none). Read and written under
    /// the lock.
    pub(crate) fn cursor(&self) -> Option<u16> {
        u16::try_from(self.word(CURSOR).load(Ordering::Relaxed))
            .ok()
            .filter(|&p| p != 0)
    }

    pub(crate) fn set_cursor(&self, port: u16) {
        self.word(CURSOR).store(u32::from(port), Ordering::Relaxed);
    }
}

impl Turn<'_> {
    /// Gives up a ticket whose turn may not have come: if it has, pass it on.
    fn abandon(self) {
        let serving = self.queue.word(SERVING);
        if serving
            .compare_exchange(
                self.ticket,
                self.ticket.wrapping_add(1),
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
        {
            self.wake(self.ticket.wrapping_add(1));
        }
        std::mem::forget(self);
    }

    fn wake(&self, ticket: u32) {
        let slot = self.queue.slot(ticket);
        slot.fetch_add(1, Ordering::SeqCst);
        futex_wake(slot);
    }
}

impl Drop for Turn<'_> {
    /// Passes the turn to the next ticket (never backwards: a waiter that skipped the
    /// queue may hold a later ticket than the one now served).
    fn drop(&mut self) {
        let next = self.ticket.wrapping_add(1);
        let serving = self.queue.word(SERVING);
        let mut current = serving.load(Ordering::SeqCst);
        while (next.wrapping_sub(current) as i32) > 0 {
            match serving.compare_exchange(current, next, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break,
                Err(seen) => current = seen,
            }
        }
        self.wake(next);
    }
}

impl Drop for TurnQueue {
    fn drop(&mut self) {
        // SAFETY: unmaps the page mapped in `open`; no reference outlives `self`.
        unsafe { libc::munmap(self.page.as_ptr().cast(), PAGE) };
    }
}

#[cfg(target_os = "linux")]
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: a shared (not PRIVATE) futex wait on a mapped, aligned word, with a
    // relative timeout; it returns on wake, timeout, a changed word or a signal.
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
fn futex_wake(word: &AtomicU32) {
    // SAFETY: wakes the sleepers on a mapped, aligned word; touches nothing else.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
    }
}

#[cfg(not(target_os = "linux"))]
fn futex_wait(_: &AtomicU32, _: u32, _: Duration) {}

#[cfg(not(target_os = "linux"))]
fn futex_wake(_: &AtomicU32) {}
