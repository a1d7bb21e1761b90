//! The registry's exclusive lock: `flock` on `port_registry.lock`, with a timeout.
//!
//! A waiter must get the lock the moment it is released, so there is no poll loop: an
//! uncontended lock is taken with one non-blocking try, and a contended one by a
//! blocking `flock` on a helper thread while the caller waits on a channel with a
//! deadline. On timeout the helper is abandoned; if it gets the lock later, it finds
//! nobody listening and drops the file, which releases the lock at once.
//!
//! Every lock opens the lock file anew: `flock` locks belong to an open file
//! description, so two threads sharing one descriptor would both "hold" the lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::registry::LOCK_FILE;

/// The held lock; dropping it releases the lock.
pub(crate) struct RegistryLock {
    file: File,
}

impl RegistryLock {
    /// Takes the lock of the registry in `dir`, waiting at most `timeout`.
    pub(crate) fn acquire(dir: &Path, timeout: Duration) -> Result<RegistryLock> {
        let path = dir.join(LOCK_FILE);
        let file = open_lock_file(&path)?;
        match file.try_lock() {
            Ok(()) => return Ok(RegistryLock { file }),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(Error::io("cannot lock", path, e)),
        }
        let started = Instant::now();
        let (sender, receiver) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("portlease-lock".into())
            .spawn(move || {
                // If the receiver has given up, the file comes back in the error and
                // is dropped here, releasing the lock.
                let _ = sender.send(file.lock().map(|()| file));
            })
            .map_err(|e| Error::io("cannot start the lock waiter for", &path, e))?;
        match receiver.recv_timeout(timeout) {
            Ok(Ok(file)) => Ok(RegistryLock { file }),
            Ok(Err(e)) => Err(Error::io("cannot lock", path, e)),
            Err(_) => Err(Error::LockTimeout {
                dir: dir.to_path_buf(),
                waited: started.elapsed(),
            }),
        }
    }

    /// Reads the next-fit hint kept in the lock file: the last port handed out.
    ///
    /// The lock file's content is free for our use (the seed only locks it), and a
    /// `pread` of a few bytes costs far less than another file. A missing or garbled
    /// hint only means the search starts at the beginning of the range.
    pub(crate) fn read_cursor(&self) -> Option<u16> {
        let mut buf = [0u8; 16];
        let len = self.file.read_at(&mut buf, 0).ok()?;
        std::str::from_utf8(&buf[..len])
            .ok()?
            .trim_end_matches(['\n', ' '])
            .parse()
            .ok()
    }

    /// Records the last port handed out; fixed width, so it overwrites in place.
    pub(crate) fn write_cursor(&self, port: u16) {
        if let Err(e) = self.file.write_at(format!("{port:<5}\n").as_bytes(), 0) {
            log::debug!("could not record the next-fit hint: {e}");
        }
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
