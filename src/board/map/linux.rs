//! The board's shared mapping: space reserved before it is mapped, and a mapping that
//! a shrinking file cannot turn into a crash.
//!
//! # A board that shrinks while mapped
//! Touching a page of a shared file mapping that lies past the end of the file raises
//! `SIGBUS`. Posters touch the board without the lock (that is the point of it), so no
//! size check can close the window between checking and touching. The one sound way
//! is to handle the signal: on the first mapping, a `SIGBUS` handler is installed that
//! knows the address ranges of the boards this process mapped. A fault inside one of
//! them replaces that whole range, in place, with private zeroed memory
//! (`mmap(MAP_FIXED | MAP_ANONYMOUS)`, async-signal-safe) and marks the board broken;
//! the faulting instruction then runs again on the new memory and the process goes on.
//! Any other `SIGBUS` goes to the handler that was there before (or, if that was the
//! default, is raised again with the default action). Zeroed memory reads as a board
//! of free slots; every user of the board checks [`Mapping::broken`] where it waits
//! and, once broken, finishes its request in a transaction of its own, by its token
//! (so a request that a server did carry out is not done twice).
//!
//! # Space
//! The file's blocks are reserved with `fallocate` before it is mapped: a sparse file
//! on a full tmpfs would fault on first touch. When that fails (a full or small
//! filesystem), the process works without the board.

use std::fs::File;
use std::sync::Once;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use rustix::fs::FallocateFlags;
use rustix::mm::{MapFlags, ProtFlags};
use rustix::thread::futex;

/// How many boards one process can have mapped at once (one per registry directory in
/// use); past that, an allocator works without one.
const MAX_MAPPINGS: usize = 64;

/// One mapped board's address range, as the `SIGBUS` handler sees it.
struct Guard {
    start: AtomicUsize,
    len: AtomicUsize,
    broken: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)] // only used to initialise GUARDS
const UNUSED: Guard = Guard {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    broken: AtomicBool::new(false),
};
static GUARDS: [Guard; MAX_MAPPINGS] = [UNUSED; MAX_MAPPINGS];

/// A shared, read-write mapping of a whole board file.
pub(crate) struct Mapping {
    base: *mut u8,
    len: usize,
    guard: &'static Guard,
}

// SAFETY: the mapping is shared memory that is only ever accessed through atomics
// (`u32_at`, `u64_at`, `bytes`), which are safe to use from any thread.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Reserves `len` bytes of `file` and maps them shared. The file must be opened
    /// for reading and writing.
    pub(crate) fn new(file: &File, len: usize) -> std::io::Result<Mapping> {
        install_handler()?;
        rustix::fs::fallocate(file, FallocateFlags::empty(), 0, len as u64)?;
        let guard = GUARDS
            .iter()
            .find(|guard| {
                guard
                    .len
                    .compare_exchange(0, usize::MAX, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            })
            .ok_or_else(|| std::io::Error::other("too many boards mapped in this process"))?;
        // SAFETY: a new mapping at an address the kernel picks, of a file we hold open
        // read-write; nothing else refers to that memory yet.
        let mapped = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                file,
                0,
            )
        };
        let base = match mapped {
            Ok(base) => base.cast::<u8>(),
            Err(e) => {
                guard.len.store(0, Ordering::Release);
                return Err(e.into());
            }
        };
        guard.broken.store(false, Ordering::Release);
        guard.start.store(base as usize, Ordering::Release);
        guard.len.store(len, Ordering::Release);
        Ok(Mapping { base, len, guard })
    }

    /// Whether the file shrank under the mapping (see the module docs): from then on
    /// the memory is this process's own, and shared with nobody.
    pub(crate) fn broken(&self) -> bool {
        self.guard.broken.load(Ordering::Acquire)
    }

    /// The 32-bit word at byte `offset`.
    pub(crate) fn u32_at(&self, offset: usize) -> &AtomicU32 {
        assert!(offset.is_multiple_of(4) && offset + 4 <= self.len);
        // SAFETY: in the mapping (checked), aligned (the mapping is page-aligned),
        // valid for as long as `self`, and only ever used atomically.
        unsafe { AtomicU32::from_ptr(self.base.add(offset).cast()) }
    }

    /// The 64-bit word at byte `offset`.
    pub(crate) fn u64_at(&self, offset: usize) -> &AtomicU64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= self.len);
        // SAFETY: as in `u32_at`.
        unsafe { AtomicU64::from_ptr(self.base.add(offset).cast()) }
    }

    /// `len` bytes at `offset`, each accessed atomically: other processes may write
    /// them at any time, so plain (non-atomic) copies would be data races.
    pub(crate) fn bytes(&self, offset: usize, len: usize) -> &[AtomicU8] {
        assert!(offset + len <= self.len);
        // SAFETY: in the mapping (checked), valid for as long as `self`; `AtomicU8`
        // has the size and alignment of `u8`, and the bytes are only used atomically.
        unsafe { std::slice::from_raw_parts(self.base.add(offset).cast::<AtomicU8>(), len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // No reference into the mapping outlives `self`: the handler forgets the range
        // first, then it is unmapped.
        self.guard.start.store(0, Ordering::Release);
        // SAFETY: unmaps exactly what `new` mapped (or what the handler put in its
        // place); nothing refers to it any more.
        if let Err(e) = unsafe { rustix::mm::munmap(self.base.cast(), self.len) } {
            log::debug!("cannot unmap the request board: {e}");
        }
        self.guard.len.store(0, Ordering::Release);
    }
}

/// The `SIGBUS` disposition that was there before ours, to pass other faults on to.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// Installs the `SIGBUS` handler once per process.
fn install_handler() -> std::io::Result<()> {
    static INSTALL: Once = Once::new();
    static FAILED: AtomicBool = AtomicBool::new(false);
    INSTALL.call_once(|| {
        // SAFETY: a zeroed `sigaction` is a valid value; `sigaction(2)` only reads
        // `ours` and writes `previous`. Neither libc nor rustix offers a safe call
        // that installs an `SA_SIGINFO` handler.
        unsafe {
            let mut ours: libc::sigaction = std::mem::zeroed();
            ours.sa_sigaction = on_sigbus as *const () as usize;
            ours.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
            libc::sigemptyset(&mut ours.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            // Set PREVIOUS before the handler can run.
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut previous) != 0 {
                FAILED.store(true, Ordering::Release);
                return;
            }
            let _ = PREVIOUS.set(previous);
            if libc::sigaction(libc::SIGBUS, &ours, std::ptr::null_mut()) != 0 {
                FAILED.store(true, Ordering::Release);
            }
        }
    });
    if FAILED.load(Ordering::Acquire) {
        return Err(std::io::Error::other("cannot install the SIGBUS handler"));
    }
    Ok(())
}

/// Replaces a board that faulted by zeroed private memory; passes any other fault on.
extern "C" fn on_sigbus(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid `siginfo_t` for an `SA_SIGINFO` handler.
    let address = unsafe { (*info).si_addr() } as usize;
    for guard in &GUARDS {
        let start = guard.start.load(Ordering::Acquire);
        let len = guard.len.load(Ordering::Acquire);
        if start != 0 && len != usize::MAX && (start..start + len).contains(&address) {
            // SAFETY: replaces, in place, a range that this process mapped and still
            // has mapped (its guard is registered); only atomics ever refer into it,
            // and they stay valid on the new memory. `mmap` is async-signal-safe.
            let replaced = unsafe {
                libc::mmap(
                    start as *mut libc::c_void,
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if replaced != libc::MAP_FAILED {
                guard.broken.store(true, Ordering::Release);
                return;
            }
        }
    }
    pass_on(signal, info, context);
}

/// Hands a fault that is not ours to the previous handler, or to the default action.
fn pass_on(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    if let Some(previous) = PREVIOUS.get() {
        let handler = previous.sa_sigaction;
        if handler != libc::SIG_DFL && handler != libc::SIG_IGN {
            if previous.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: the previous handler was installed as an `SA_SIGINFO`
                // handler with this signature; we call it as the kernel would have.
                let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(handler) };
                handler(signal, info, context);
            } else {
                // SAFETY: as above, for a handler taking only the signal number.
                let handler: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
                handler(signal);
            }
            return;
        }
    }
    // The default action: returning re-runs the faulting instruction, which faults
    // again and now ends the process as it would have without us.
    // SAFETY: a zeroed `sigaction` with `SIG_DFL` is valid; `sigaction` is
    // async-signal-safe.
    unsafe {
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGBUS, &default, std::ptr::null_mut());
    }
}

/// Sleeps on a shared futex word while it holds `expected`, for `timeout` at most;
/// returns on a wake, a change, a signal or the timeout alike.
pub(crate) fn wait_while(word: &AtomicU32, expected: u32, timeout: Duration) {
    let timeout = futex::Timespec {
        tv_sec: i64::try_from(timeout.as_secs())
            .map_or(i64::from(i32::MAX), |secs| secs.min(i64::from(i32::MAX))),
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    // Not PRIVATE: other processes wake it.
    let _ = futex::wait(word, futex::Flags::empty(), expected, Some(&timeout));
}

/// Wakes one process sleeping in [`wait_while`] on `word`.
pub(crate) fn wake_one(word: &AtomicU32) {
    let _ = futex::wake(word, futex::Flags::empty(), 1);
}
