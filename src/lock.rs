//! The registry's exclusive lock: `flock` on `port_registry.lock`, with a timeout.
//!
//! A waiter must get the lock the moment it is released, so there is no poll loop: a
//! non-blocking try, and when that fails, a blocking `flock` on a helper thread while
//! the caller waits on a channel with the deadline. On timeout the helper is
//! abandoned; if it gets the lock later, it finds nobody listening and drops the file,
//! which releases the lock at once. Once locked, the file is checked to still be the
//! one at the lock file's path (it may have been deleted and made anew meanwhile).
//!
//! `flock` locks belong to an open file description, so two threads sharing one
//! descriptor would both "hold" the lock: the descriptor an allocator keeps open
//! (saving an open and a close per transaction) is used by one transaction at a time,
//! and a thread that finds it in use opens its own.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::Instant;

use crate::directory::RegistryDir;
use crate::error::{Error, Result};
use crate::files::{open_lasting, stat_at};
use crate::registry::LOCK_FILE;

/// One registry's lock file, kept open across transactions.
#[derive(Debug)]
pub(crate) struct LockSite {
    dir: Arc<RegistryDir>,
    path: PathBuf,
    /// Used by one transaction at a time; a thread that finds it busy opens its own.
    /// Kept with the pid that opened it: a forked child shares the open file
    /// description, and so the `flock`, with its parent, and must open its own.
    cached: Mutex<Option<(u32, File)>>,
}

/// The lock file a transaction locked: the cached one, or one of its own.
enum Held<'s> {
    Cached(MutexGuard<'s, Option<(u32, File)>>),
    Own(File),
}

/// A wait for the lock on a helper thread; dropping it abandons the wait (the helper
/// releases the lock at once if it gets it later).
pub(crate) struct LockWait {
    receiver: mpsc::Receiver<std::io::Result<File>>,
}

impl LockWait {
    /// The lock, if the helper has it by now; `Ok(None)` while it waits, or when the
    /// file it locked turned out to be a deleted one (then wait anew).
    pub(crate) fn take<'s>(&self, site: &'s LockSite) -> Result<Option<RegistryLock<'s>>> {
        match self.receiver.try_recv() {
            Ok(locked) => Ok(site.adopt(locked_or(locked, &site.path)?)),
            Err(_) => Ok(None),
        }
    }

    /// The locked file, waiting for it until `deadline` at most; `None` on timeout.
    fn until(self, deadline: Instant, path: &Path) -> Result<Option<File>> {
        match self
            .receiver
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(locked) => locked_or(locked, path).map(Some),
            Err(_) => Ok(None),
        }
    }
}

fn locked_or(locked: std::io::Result<File>, path: &Path) -> Result<File> {
    locked.map_err(|e| Error::io("cannot lock", path, e))
}

/// The held lock; dropping it releases it.
pub(crate) struct RegistryLock<'s> {
    held: Held<'s>,
}

impl LockSite {
    pub(crate) fn new(dir: Arc<RegistryDir>) -> LockSite {
        LockSite {
            path: dir.join(LOCK_FILE),
            dir,
            cached: Mutex::new(None),
        }
    }

    /// Takes the lock if it is free now; `None` if another process holds it.
    pub(crate) fn try_lock(&self) -> Result<Option<RegistryLock<'_>>> {
        self.lock_with(|| Ok(None))
    }

    /// Takes the lock, waiting until `deadline` at most; `None` if it passed first.
    pub(crate) fn lock(&self, deadline: Instant) -> Result<Option<RegistryLock<'_>>> {
        self.lock_with(|| self.start_wait(|| {})?.until(deadline, &self.path))
    }

    /// Tries the lock; when busy, asks `wait` for a locked file of its own (or none).
    /// Loops while the file locked turns out not to be the one at the path.
    fn lock_with(
        &self,
        wait: impl Fn() -> Result<Option<File>>,
    ) -> Result<Option<RegistryLock<'_>>> {
        let mut held = self.lock_file()?;
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
            let reopened = open_lock_file(&self.dir)?;
            match &mut held {
                Held::Cached(cached) => **cached = Some((std::process::id(), reopened)),
                Held::Own(file) => *file = reopened,
            }
        }
    }

    /// Starts waiting for the lock on a helper thread, on a lock file of its own;
    /// `notify` runs when the lock is had. Take the result with [`LockWait::take`].
    pub(crate) fn start_wait(&self, notify: impl FnOnce() + Send + 'static) -> Result<LockWait> {
        let file = open_lock_file(&self.dir)?;
        let (sender, receiver) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("portlease-lock".into())
            .spawn(move || {
                let locked = file.lock().map(|()| file);
                // If the receiver has given up, the file comes back in the error and
                // is dropped here, releasing the lock.
                if sender.send(locked).is_ok() {
                    notify();
                }
            })
            .map_err(|e| Error::io("cannot start the lock waiter for", &self.path, e))?;
        Ok(LockWait { receiver })
    }

    /// The lock, from a file the caller locked: `None` if that file is no longer the
    /// one at the path (then it is dropped, and so unlocked).
    fn adopt(&self, file: File) -> Option<RegistryLock<'_>> {
        is_same_file(&file, &self.dir).then_some(RegistryLock {
            held: Held::Own(file),
        })
    }

    /// The cached lock file when no other thread is using it, else a new one.
    fn lock_file(&self) -> Result<Held<'_>> {
        Ok(match self.cached.try_lock() {
            Ok(mut cached) => {
                let me = std::process::id();
                if cached.as_ref().is_none_or(|(opener, _)| *opener != me) {
                    *cached = Some((me, open_lock_file(&self.dir)?));
                }
                Held::Cached(cached)
            }
            Err(_) => Held::Own(open_lock_file(&self.dir)?),
        })
    }
}

impl Held<'_> {
    fn file(&self) -> &File {
        match self {
            // Set just before a `Cached` is made, and only ever replaced.
            Held::Cached(cached) => match cached.as_ref() {
                Some((_, file)) => file,
                None => unreachable!("the cached lock file is open"),
            },
            Held::Own(file) => file,
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
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), stat_at(dir, LOCK_FILE)) {
        (Ok(open), Ok(Some(named))) => open.dev() == named.st_dev && open.ino() == named.st_ino,
        _ => false,
    }
}

fn open_lock_file(dir: &RegistryDir) -> Result<File> {
    open_lasting(dir, LOCK_FILE)
}
