//! The registry's exclusive lock: `flock` on `port_registry.lock`, with a timeout.
//!
//! A waiter must get the lock the moment it is released, so there is no poll loop: a
//! non-blocking try, and when that fails, a blocking `flock` on a helper thread while
//! the caller waits with its deadline. A blocked `flock` cannot be called off, so
//! there is one helper per lock site, started on the first contended wait and reused:
//! it serves the waiting callers in turn, and a lock it gets for a caller that gave up
//! meanwhile goes to the next caller, or is released at once. However many waits
//! time out, a site has at most one helper thread and one descriptor of its own.
//! Once locked, the file is checked to still be the one at the lock file's path (it
//! may have been deleted and made anew meanwhile).
//!
//! `flock` locks belong to an open file description, so two threads sharing one
//! descriptor would both "hold" the lock: the descriptor an allocator keeps open
//! (saving an open and a close per transaction) is used by one transaction at a time,
//! and a thread that finds it in use opens its own. For the same reason a forked
//! child would share every lock file open at the fork: each is a
//! [`LockFile`](crate::fork_guard::LockFile), which no child keeps.

use std::collections::VecDeque;
use std::fs::{File, TryLockError};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::directory::RegistryDir;
use crate::error::{Error, Result};
use crate::files::stat_at;
use crate::fork_guard::LockFile;
use crate::interrupt;
use crate::layout::LOCK_FILE;

/// One registry's lock file, kept open across transactions.
#[derive(Debug)]
pub(crate) struct LockSite {
    dir: Arc<RegistryDir>,
    path: PathBuf,
    /// Used by one transaction at a time; a thread that finds it busy opens its own.
    /// A forked child finds here a placeholder of its parent's (see `fork_guard`), and
    /// opens its own.
    cached: Mutex<Option<LockFile>>,
    /// The one helper thread that blocks on the `flock` for waiting callers.
    waiter: Arc<Waiter>,
}

/// The lock file a transaction locked: the cached one, or one of its own.
enum Held<'s> {
    Cached(MutexGuard<'s, Option<LockFile>>),
    Own(LockFile),
}

/// A caller's turn with the site's helper thread; dropping it gives up the turn (a
/// lock the helper got for it is released at once).
pub(crate) struct LockWait {
    waiter: Arc<Waiter>,
    id: u64,
}

impl LockWait {
    /// The lock, if the helper has it for us by now; `Ok(None)` while it waits, or when
    /// the file it locked turned out to be a deleted one (then wait anew).
    pub(crate) fn take<'s>(&self, site: &'s LockSite) -> Result<Option<RegistryLock<'s>>> {
        let mut state = self.waiter.state();
        match state.ready.take_if(|(id, _)| *id == self.id) {
            Some((_, locked)) => {
                drop(state);
                Ok(site.adopt(locked?))
            }
            None => Ok(None),
        }
    }

    /// The locked file, waiting for it until `deadline` at most; `None` on timeout.
    /// Consults the caller's interrupt check every [`interrupt::SLICE`], without the
    /// state locked; when it says stop, gives up as at the deadline, with its error.
    fn until(self, deadline: Instant) -> Result<Option<LockFile>> {
        let mut state = self.waiter.state();
        let mut check_at = Instant::now() + interrupt::SLICE;
        loop {
            if let Some((_, locked)) = state.ready.take_if(|(id, _)| *id == self.id) {
                return locked.map(Some);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            if now >= check_at {
                drop(state);
                interrupt::check(&self.waiter.path)?;
                check_at = now + interrupt::SLICE;
                state = self.waiter.state();
                continue;
            }
            state = self
                .waiter
                .changed
                .wait_timeout(state, deadline.min(check_at) - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl Drop for LockWait {
    fn drop(&mut self) {
        let mut state = self.waiter.state();
        state.queue.retain(|turn| turn.id != self.id);
        // A lock got for us after all is dropped here, which releases it.
        let unwanted = state.ready.take_if(|(id, _)| *id == self.id);
        drop(state);
        drop(unwanted);
    }
}

/// The helper thread's shared state.
struct Waiter {
    dir: Arc<RegistryDir>,
    path: PathBuf,
    state: Mutex<WaitState>,
    changed: Condvar,
}

#[derive(Default)]
struct WaitState {
    /// Callers waiting for the lock, oldest first.
    queue: VecDeque<Turn>,
    /// A lock the helper got, and whose turn it is.
    ready: Option<(u64, Result<LockFile>)>,
    next_id: u64,
    /// The pid whose helper thread runs (a forked child has none: it starts its own).
    helper_of: Option<u32>,
    /// The site is gone: the helper ends once idle.
    closed: bool,
}

struct Turn {
    id: u64,
    notify: Box<dyn FnOnce() + Send>,
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Waiter")
    }
}

impl Waiter {
    fn state(&self) -> MutexGuard<'_, WaitState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The helper's loop: while callers wait, block on the `flock` of a lock file of
    /// its own and hand the lock to the oldest caller still waiting.
    fn run(&self) {
        loop {
            {
                let mut state = self.state();
                while state.queue.is_empty() && !state.closed {
                    state = self
                        .changed
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                if state.queue.is_empty() {
                    state.helper_of = None;
                    return;
                }
            }
            let locked = LockFile::open(&self.dir).and_then(|file| {
                file.file()
                    .lock()
                    .map(|()| file)
                    .map_err(|e| Error::io("cannot lock", &self.path, e))
            });
            let mut state = self.state();
            match state.queue.pop_front() {
                Some(turn) => {
                    state.ready = Some((turn.id, locked));
                    drop(state);
                    self.changed.notify_all();
                    (turn.notify)();
                }
                // Everyone gave up meanwhile: the file is dropped, the lock released.
                None => drop(locked),
            }
        }
    }
}

/// The held lock; dropping it releases it.
pub(crate) struct RegistryLock<'s> {
    held: Held<'s>,
}

impl LockSite {
    pub(crate) fn new(dir: Arc<RegistryDir>) -> LockSite {
        LockSite {
            path: dir.join(LOCK_FILE),
            cached: Mutex::new(None),
            waiter: Arc::new(Waiter {
                dir: Arc::clone(&dir),
                path: dir.join(LOCK_FILE),
                state: Mutex::default(),
                changed: Condvar::new(),
            }),
            dir,
        }
    }

    /// Takes the lock for process `me` (the caller's pid, which it has at hand) if it
    /// is free now; `None` if another process holds it.
    pub(crate) fn try_lock(&self, me: u32) -> Result<Option<RegistryLock<'_>>> {
        self.lock_with(me, || Ok(None))
    }

    /// Takes the lock, waiting until `deadline` at most; `None` if it passed first.
    pub(crate) fn lock(&self, deadline: Instant) -> Result<Option<RegistryLock<'_>>> {
        let me = std::process::id();
        self.lock_with(me, || self.start_wait(|| {})?.until(deadline))
    }

    /// Tries the lock; when busy, asks `wait` for a locked file of its own (or none).
    /// Loops while the file locked turns out not to be the one at the path.
    fn lock_with(
        &self,
        me: u32,
        wait: impl Fn() -> Result<Option<LockFile>>,
    ) -> Result<Option<RegistryLock<'_>>> {
        let mut held = self.lock_file(me)?;
        loop {
            match held.file().try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => match wait()? {
                    Some(file) => held = Held::Own(file),
                    None => return Ok(None),
                },
                Err(TryLockError::Error(e)) => return Err(Error::io("cannot lock", &self.path, e)),
            }
            if is_same_file(held.file(), &self.dir) {
                return Ok(Some(RegistryLock { held }));
            }
            // Deleted or replaced meanwhile: others lock the new file, and so must we.
            let _ = held.file().unlock();
            let reopened = LockFile::open(&self.dir)?;
            match &mut held {
                Held::Cached(cached) => **cached = Some(reopened),
                Held::Own(file) => *file = reopened,
            }
        }
    }

    /// Queues for the lock with the site's helper thread (started if none runs);
    /// `notify` runs when the lock is had for this caller. Take it with
    /// [`LockWait::take`].
    pub(crate) fn start_wait(&self, notify: impl FnOnce() + Send + 'static) -> Result<LockWait> {
        let waiter = &self.waiter;
        let mut state = waiter.state();
        let me = std::process::id();
        if state.helper_of != Some(me) {
            // None runs, or it ran in the parent of this forked process.
            state.queue.clear();
            state.ready = None;
            let helper = Arc::clone(waiter);
            std::thread::Builder::new()
                .name("portlease-lock".into())
                .spawn(move || helper.run())
                .map_err(|e| Error::io("cannot start the lock waiter for", &self.path, e))?;
            state.helper_of = Some(me);
        }
        let id = state.next_id;
        state.next_id += 1;
        state.queue.push_back(Turn {
            id,
            notify: Box::new(notify),
        });
        drop(state);
        waiter.changed.notify_all();
        Ok(LockWait {
            waiter: Arc::clone(waiter),
            id,
        })
    }

    /// The lock file's path, for messages.
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The lock, from a file the caller locked: `None` if that file is no longer the
    /// one at the path (then it is dropped, and so unlocked).
    fn adopt(&self, file: LockFile) -> Option<RegistryLock<'_>> {
        is_same_file(file.file(), &self.dir).then_some(RegistryLock {
            held: Held::Own(file),
        })
    }

    /// The cached lock file when no other thread is using it, else a new one.
    fn lock_file(&self, me: u32) -> Result<Held<'_>> {
        Ok(match self.cached.try_lock() {
            Ok(mut cached) => {
                if cached.as_ref().is_none_or(|file| file.opener() != me) {
                    *cached = Some(LockFile::open(&self.dir)?);
                }
                Held::Cached(cached)
            }
            Err(_) => Held::Own(LockFile::open(&self.dir)?),
        })
    }
}

impl Held<'_> {
    fn file(&self) -> &File {
        match self {
            // Set just before a `Cached` is made, and only ever replaced.
            Held::Cached(cached) => match cached.as_ref() {
                Some(file) => file.file(),
                None => unreachable!("the cached lock file is open"),
            },
            Held::Own(file) => file.file(),
        }
    }
}

impl Drop for LockSite {
    fn drop(&mut self) {
        self.waiter.state().closed = true;
        self.waiter.changed.notify_all();
    }
}

/// The deadline `timeout` after `started`; a timeout too long for the clock (say
/// `Duration::MAX`) means a century, which is as good as never, or as far ahead as
/// the clock goes.
pub(crate) fn deadline_after(started: Instant, timeout: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let mut wait = timeout.min(CENTURY);
    loop {
        // Ends: `started + 0` is always a time.
        match started.checked_add(wait) {
            Some(deadline) => return deadline,
            None => wait /= 2,
        }
    }
}

impl Drop for RegistryLock<'_> {
    fn drop(&mut self) {
        // Closing the file would release it too, but the cached one stays open.
        if let Err(e) = self.held.file().unlock() {
            log::warn!("unlock failed: {e}");
        }
    }
}

/// Whether `file` is the lock file now in `dir` (not followed if it is a link).
fn is_same_file(file: &File, dir: &RegistryDir) -> bool {
    // Both by `stat`, whose field types are the platform's (`st_dev` is signed on
    // macOS), so that they compare as they are.
    match (rustix::fs::fstat(file), stat_at(dir, LOCK_FILE)) {
        (Ok(open), Ok(Some(named))) => open.st_dev == named.st_dev && open.st_ino == named.st_ino,
        _ => false,
    }
}
