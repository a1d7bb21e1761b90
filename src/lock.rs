//! The registry's exclusive lock: `flock` on `port_registry.lock`, with a timeout.
//!
//! A waiter must get the lock the moment it is released, so there is no poll loop.
//! portlease processes first wait for their turn in the [`TurnQueue`] (a futex wait
//! with a deadline), so the `flock` is usually free when they try it: one
//! non-blocking try. When it is not (a seed process holds it), a blocking `flock` runs
//! on a helper thread while the caller waits on a channel with the deadline. On
//! timeout the helper is abandoned; if it gets the lock later, it finds nobody
//! listening and drops the file, which releases the lock at once.
//!
//! Every lock opens the lock file anew: `flock` locks belong to an open file
//! description, so two threads sharing one descriptor would both "hold" the lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::queue::{Turn, TurnQueue};
use crate::registry::LOCK_FILE;

/// The held lock; dropping it releases the `flock`, then passes the turn on.
pub(crate) struct RegistryLock<'q> {
    file: File,
    turn: Option<Turn<'q>>,
    queue: Option<&'q TurnQueue>,
}

impl<'q> RegistryLock<'q> {
    /// Takes the lock of the registry in `dir`, waiting at most `timeout`.
    pub(crate) fn acquire(
        dir: &Path,
        timeout: Duration,
        queue: Option<&'q TurnQueue>,
    ) -> Result<RegistryLock<'q>> {
        let started = Instant::now();
        let timed_out = || Error::LockTimeout {
            dir: dir.to_path_buf(),
            waited: started.elapsed(),
        };
        let path = dir.join(LOCK_FILE);
        let file = open_lock_file(&path)?;
        let turn = match queue {
            Some(queue) => Some(queue.wait_turn(started + timeout).ok_or_else(timed_out)?),
            None => None,
        };
        let held = |file| RegistryLock { file, turn, queue };
        match file.try_lock() {
            Ok(()) => return Ok(held(file)),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(Error::io("cannot lock", path, e)),
        }
        let (sender, receiver) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("portlease-lock".into())
            .spawn(move || {
                // If the receiver has given up, the file comes back in the error and
                // is dropped here, releasing the lock.
                let _ = sender.send(file.lock().map(|()| file));
            })
            .map_err(|e| Error::io("cannot start the lock waiter for", &path, e))?;
        match receiver.recv_timeout(timeout.saturating_sub(started.elapsed())) {
            Ok(Ok(file)) => Ok(held(file)),
            Ok(Err(e)) => Err(Error::io("cannot lock", path, e)),
            Err(_) => Err(timed_out()),
        }
    }

    /// The next-fit hint: the last port handed out, if known.
    pub(crate) fn cursor(&self) -> Option<u16> {
        self.queue.and_then(TurnQueue::cursor)
    }

    /// Records the last port handed out.
    pub(crate) fn set_cursor(&self, port: u16) {
        if let Some(queue) = self.queue {
            queue.set_cursor(port);
        }
    }
}

impl Drop for RegistryLock<'_> {
    fn drop(&mut self) {
        // Unlock before the next in line is told to go, or it would find the flock
        // still held. Closing the file would unlock too; this makes the order plain.
        if let Err(e) = self.file.unlock() {
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
