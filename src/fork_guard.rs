//! Lock-file descriptors that no forked child keeps.
//!
//! A `flock` belongs to an open file description, and `fork` gives the child a copy of
//! every descriptor, so a child forked without exec (multiprocessing's `fork`, a
//! prefork server) shares the parent's lock: if the parent dies holding it, or lets
//! go of it by closing its descriptor, the child's copy keeps every process on the
//! host out until the child exits. So every lock file is opened through [`LockFile`],
//! which lists its descriptor in a table of this process's lock descriptors, and a
//! `pthread_atfork` child handler points each listed descriptor of the child at a
//! placeholder (an unbound socket) before the child runs any code of its own: the
//! child drops its share of the parent's lock files, and opens its own if it uses
//! portlease. A [`LockFile`] is dropped by letting go of its lock (`LOCK_UN`, which
//! releases it for every copy of the description) and then closing it.
//!
//! The table is lock-free, as a fork handler needs: slots of atomic descriptors. A
//! descriptor is listed before it can be locked, and a fork between its open and its
//! listing is caught by a fork counter (odd while a fork is under way) and the
//! descriptor opened anew, so no child ever gets a lock file unlisted.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Once;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::Duration;

use crate::directory::RegistryDir;
use crate::error::Result;
use crate::files::open_lasting;
use crate::layout::LOCK_FILE;

/// How many lock files one process may have open at once: one per allocator's
/// directory, one per waiting helper thread, and one per thread that found its
/// allocator's busy. A process past it waits for a slot.
const SLOTS: usize = 1024;

/// The descriptors of this process's lock files; -1 in a free slot.
static SLOT_FDS: [AtomicI32; SLOTS] = [const { AtomicI32::new(-1) }; SLOTS];

/// Forks begun (odd while one is under way in this process, between its prepare and
/// parent handlers).
static FORKS: AtomicU64 = AtomicU64::new(0);

static HANDLERS: Once = Once::new();

/// The registry's lock file, open for this process alone: never inherited by a child
/// forked without exec, and unlocked before it is closed.
#[derive(Debug)]
pub(crate) struct LockFile {
    file: File,
    slot: usize,
    /// The process that opened it: only it may let go of its lock.
    opener: u32,
}

impl LockFile {
    /// Opens the lock file of `dir` (created if missing, in a writable directory).
    pub(crate) fn open(dir: &RegistryDir) -> Result<LockFile> {
        install_fork_handlers();
        loop {
            let before = quiet_fork_count();
            let file = open_lasting(dir, LOCK_FILE)?;
            let slot = list(file.as_raw_fd());
            if FORKS.load(Ordering::SeqCst) == before {
                return Ok(LockFile {
                    file,
                    slot,
                    opener: std::process::id(),
                });
            }
            // A fork happened before the descriptor was listed: the child may hold
            // an unlisted copy, which must never be locked. Open another.
            SLOT_FDS[slot].store(-1, Ordering::SeqCst);
        }
    }

    /// The open file, to lock and check.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// The process that opened it (a forked child must open its own).
    pub(crate) fn opener(&self) -> u32 {
        self.opener
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        // In a child that never ran the fork handler (a raw `clone`), this is the
        // parent's description: unlocking it would release the parent's lock.
        if self.opener == std::process::id()
            && let Err(e) = self.file.unlock()
        {
            log::warn!("unlock failed: {e}");
        }
        // Unlisted before the close, so a listed descriptor is always still open; a
        // child forked in between gets an unlocked description no one locks again.
        let _ = SLOT_FDS[self.slot].compare_exchange(
            self.file.as_raw_fd(),
            -1,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }
}

/// The fork count, waiting out a fork under way (a few microseconds).
fn quiet_fork_count() -> u64 {
    loop {
        let forks = FORKS.load(Ordering::SeqCst);
        if forks.is_multiple_of(2) {
            return forks;
        }
        std::thread::yield_now();
    }
}

/// Lists `fd` in a free slot, waiting for one if all are taken.
fn list(fd: RawFd) -> usize {
    loop {
        for (slot, listed) in SLOT_FDS.iter().enumerate() {
            if listed
                .compare_exchange(-1, fd, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                return slot;
            }
        }
        log::warn!(
            "{SLOTS} registry lock files are open in this process; waiting for one to close"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn install_fork_handlers() {
    HANDLERS.call_once(|| {
        // SAFETY: the three handlers are `extern "C"` functions taking nothing, as
        // `pthread_atfork` requires, and live as long as the program.
        let failed = unsafe {
            libc::pthread_atfork(
                Some(fork_begins),
                Some(fork_ended),
                Some(fork_ended_in_child),
            )
        };
        if failed != 0 {
            log::warn!(
                "cannot register the fork handler (error {failed}): a child forked without \
                 exec would share this process's registry lock"
            );
        }
    });
}

extern "C" fn fork_begins() {
    FORKS.fetch_add(1, Ordering::SeqCst);
}

extern "C" fn fork_ended() {
    FORKS.fetch_add(1, Ordering::SeqCst);
}

/// In the child, before it runs anything else: every listed descriptor is pointed at
/// a placeholder, so the child holds no share of the parent's lock files. Only
/// async-signal-safe calls here (the parent may have had other threads).
extern "C" fn fork_ended_in_child() {
    FORKS.fetch_add(1, Ordering::SeqCst);
    let mut placeholder = -1;
    for listed in &SLOT_FDS {
        let fd = listed.swap(-1, Ordering::SeqCst);
        if fd < 0 {
            continue;
        }
        if placeholder < 0 {
            // SAFETY: plain system calls on integers; no memory is shared with them.
            placeholder = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0) };
        }
        // SAFETY: as above. `dup2` replaces `fd` atomically: its number stays taken,
        // so the `File` that owns it (which the child may drop) closes the placeholder.
        // Where no placeholder could be made, closing is the only way to let go.
        unsafe {
            if placeholder < 0 || libc::dup2(placeholder, fd) < 0 {
                libc::close(fd);
            } else {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
    }
    if placeholder >= 0 {
        // SAFETY: the placeholder is this handler's own descriptor.
        unsafe { libc::close(placeholder) };
    }
}
