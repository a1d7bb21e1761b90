//! The registry's exclusive lock: `flock` on `port_registry.lock`, with a timeout.
//!
//! A waiter must get the lock the moment it is released, so there is no poll loop.
//! portlease processes first wait for their turn in the [`TurnQueue`] (a futex wait
//! with a deadline), so the `flock` is usually free when they try it: one
//! non-blocking try. When it is not (a seed process holds it), a blocking `flock` runs
//! on a helper thread while the caller waits on a channel with the deadline. On
//! timeout the helper is abandoned; if it gets the lock later, it finds nobody
//! listening and drops the file, which releases the lock at once. Once locked, the
//! file is checked to still be the one at the lock file's path.
//!
//! `flock` locks belong to an open file description, so two threads sharing one
//! descriptor would both "hold" the lock: the descriptor an allocator keeps open is
//! used by one transaction at a time, and a thread that finds it in use opens its own.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::queue::{Turn, TurnQueue};
use crate::registry::LOCK_FILE;

/// What one registry's lock needs, kept across transactions: the lock file open
/// (saves an open and a close per transaction) and the turn queue mapped.
#[derive(Debug)]
pub(crate) struct LockSite {
    dir: PathBuf,
    queue: Option<TurnQueue>,
    /// Used by one transaction at a time; a thread that finds it busy opens its own.
    cached: Mutex<Option<File>>,
}

/// The lock file a transaction locked: the cached one, or one of its own.
enum Held<'q> {
    Cached(MutexGuard<'q, Option<File>>),
    Own(File),
}

/// The held lock; dropping it releases the `flock`, then passes the turn on.
pub(crate) struct RegistryLock<'q> {
    held: Held<'q>,
    turn: Option<Turn<'q>>,
    site: &'q LockSite,
}

impl LockSite {
    pub(crate) fn new(dir: &Path) -> LockSite {
        LockSite {
            dir: dir.to_path_buf(),
            queue: TurnQueue::open(dir),
            cached: Mutex::new(None),
        }
    }

    /// Takes the lock, waiting at most `timeout`.
    pub(crate) fn acquire(&self, timeout: Duration) -> Result<RegistryLock<'_>> {
        let started = Instant::now();
        let deadline = started + timeout;
        let timed_out = || Error::LockTimeout {
            dir: self.dir.clone(),
            waited: started.elapsed(),
        };
        let path = self.dir.join(LOCK_FILE);
        let turn = match &self.queue {
            Some(queue) => Some(queue.wait_turn(deadline).ok_or_else(timed_out)?),
            None => None,
        };
        let mut lock = RegistryLock {
            held: self.lock_file(&path)?,
            turn,
            site: self,
        };
        loop {
            match lock.held.file().try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    // Held by a process outside the queue: wait on a file of our own,
                    // which an abandoned helper can close without touching the cache.
                    let file = open_lock_file(&path)?;
                    let left = deadline.saturating_duration_since(Instant::now());
                    lock.held = Held::Own(wait_for_lock(file, left, &path)?.ok_or_else(timed_out)?);
                }
                Err(TryLockError::Error(e)) => return Err(Error::io("cannot lock", path, e)),
            }
            // The file locked must still be the one at the path: if it was deleted
            // or replaced meanwhile, others lock the new one, and so must we.
            if is_same_file(lock.held.file(), &path) {
                return Ok(lock);
            }
            let _ = lock.held.file().unlock();
            let reopened = open_lock_file(&path)?;
            match &mut lock.held {
                Held::Cached(cached) => **cached = Some(reopened),
                Held::Own(file) => *file = reopened,
            }
            if Instant::now() >= deadline {
                return Err(timed_out());
            }
        }
    }

    /// The cached lock file when no other thread is using it, else a new one.
    fn lock_file(&self, path: &Path) -> Result<Held<'_>> {
        Ok(match self.cached.try_lock() {
            Ok(mut cached) => {
                if cached.is_none() {
                    *cached = Some(open_lock_file(path)?);
                }
                Held::Cached(cached)
            }
            Err(_) => Held::Own(open_lock_file(path)?),
        })
    }
}

/// Blocks on `flock` on a helper thread for at most `timeout`; `None` on timeout. If
/// the helper gets the lock after the caller gave up, it finds nobody listening and
/// drops the file, which releases the lock at once.
fn wait_for_lock(file: File, timeout: Duration, path: &Path) -> Result<Option<File>> {
    let (sender, receiver) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("portlease-lock".into())
        .spawn(move || {
            let _ = sender.send(file.lock().map(|()| file));
        })
        .map_err(|e| Error::io("cannot start the lock waiter for", path, e))?;
    match receiver.recv_timeout(timeout) {
        Ok(Ok(file)) => Ok(Some(file)),
        Ok(Err(e)) => Err(Error::io("cannot lock", path, e)),
        Err(_) => Ok(None),
    }
}

/// Whether `file` is the file now at `path` (not followed if it is a link).
fn is_same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}

impl Held<'_> {
    fn file(&self) -> &File {
        match self {
            // Set just before a `Cached` is made, and never taken out.
            Held::Cached(cached) => cached
                .as_ref()
                .unwrap_or_else(|| unreachable!("the cached lock file is open")),
            Held::Own(file) => file,
        }
    }
}

impl RegistryLock<'_> {
    /// The next-fit hint: the last port handed out, if known.
    pub(crate) fn cursor(&self) -> Option<u16> {
        self.site.queue.as_ref().and_then(TurnQueue::cursor)
    }

    /// Records the last port handed out.
    pub(crate) fn set_cursor(&self, port: u16) {
        if let Some(queue) = &self.site.queue {
            queue.set_cursor(port);
        }
    }
}

impl Drop for RegistryLock<'_> {
    fn drop(&mut self) {
        // Unlock before the next in line is told to go, or it would find the flock
        // still held. Closing the file would unlock too; this makes the order plain.
        if let Err(e) = self.held.file().unlock() {
            log::debug!("unlock failed, the file's close will release it: {e}");
        }
        drop(self.turn.take());
    }
}

fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => Error::Unsafe {
                path: path.to_path_buf(),
                reason:
                    "the lock file is a symbolic link; remove it (portlease never follows links \
                         in its directory)"
                        .into(),
            },
            _ => Error::io("cannot open the lock file", path, e),
        })
}
