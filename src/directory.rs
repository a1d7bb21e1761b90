//! Where the registry lives, and whether that place is safe to use.

use std::fs::DirBuilder;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, Mode, OFlags, fstat, openat};
use rustix::io::Errno;

use crate::error::{Error, Result};

/// The environment variable that names the registry directory.
pub const DIR_ENV: &str = "PORTLEASE_DIR";

/// The registry directory used when none is given.
///
/// `PORTLEASE_DIR` if set; else `$XDG_RUNTIME_DIR/portlease`; else, on Linux,
/// `/dev/shm/portlease-<uid>`; else `portlease-<uid>` under the temp dir. The middle
/// two are RAM-backed, where replacing the registry costs microseconds instead of a
/// disk flush, and leases need not outlive a reboot anyway.
pub fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        let runtime = PathBuf::from(runtime);
        if runtime.is_dir() {
            return runtime.join("portlease");
        }
    }
    let uid = getuid_effective();
    let shm = Path::new("/dev/shm");
    if cfg!(target_os = "linux") && shm.is_dir() {
        return shm.join(format!("portlease-{uid}"));
    }
    std::env::temp_dir().join(format!("portlease-{uid}"))
}

/// The registry directory, opened once: every file in it is opened relative to this
/// descriptor, so a name swapped for a link after the checks changes nothing.
#[derive(Debug)]
pub(crate) struct RegistryDir {
    path: PathBuf,
    fd: OwnedFd,
    /// Whether files may be created and written here (`false` for read-only use).
    writable: bool,
}

impl RegistryDir {
    /// Creates `dir` (mode 0700) if needed, opens it without following a link at its
    /// last component, and checks by the opened descriptor that only its owner, the
    /// caller, can change it.
    ///
    /// Anyone who can write to the directory can forge or delete leases and plant
    /// links, so a directory owned by another user, or writable by group or others, is
    /// refused. To share ports between users, run `portlease serve` instead.
    pub(crate) fn prepare(dir: &Path) -> Result<RegistryDir> {
        match DirBuilder::new().recursive(true).mode(0o700).create(dir) {
            Ok(()) => {}
            // Something is there (a file, a link): opening it says what is wrong.
            Err(_) if dir.symlink_metadata().is_ok() => {}
            Err(e) => return Err(Error::io("cannot create the registry directory", dir, e)),
        }
        let opened = RegistryDir::open(dir, true)?;
        let stat = fstat(&opened.fd).map_err(|e| Error::io("cannot inspect", dir, e.into()))?;
        let me = getuid_effective();
        if stat.st_uid != me {
            return Err(Error::Unsafe {
                path: dir.to_path_buf(),
                reason: format!(
                    "it is owned by uid {}, not by you (uid {me}); use a directory of your own \
                     (--dir or PORTLEASE_DIR), or `portlease serve` to share ports between users",
                    stat.st_uid
                ),
            });
        }
        let mode = stat.st_mode;
        if mode & 0o022 != 0 {
            return Err(Error::Unsafe {
                path: dir.to_path_buf(),
                reason: format!(
                    "it is writable by group or others (mode {:o}), who could forge or delete \
                     leases; run `chmod go-w {}` or use another directory",
                    mode & 0o7777,
                    dir.display()
                ),
            });
        }
        Ok(opened)
    }

    /// Opens an existing `dir` for reading only: nothing is created or written, and
    /// it may belong to another user. A missing directory is [`Error::NoRegistry`].
    pub(crate) fn existing(dir: &Path) -> Result<RegistryDir> {
        RegistryDir::open(dir, false)
    }

    fn open(dir: &Path, writable: bool) -> Result<RegistryDir> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match openat(CWD, dir, flags, Mode::empty()) {
            Ok(fd) => Ok(RegistryDir {
                path: dir.to_path_buf(),
                fd,
                writable,
            }),
            Err(_)
                if dir
                    .symlink_metadata()
                    .is_ok_and(|m| m.file_type().is_symlink()) =>
            {
                Err(Error::Unsafe {
                    path: dir.to_path_buf(),
                    reason: "the registry directory is a symbolic link, which someone could \
                             re-point; name the directory it points to, or remove the link"
                        .into(),
                })
            }
            Err(Errno::NOENT) if !writable => Err(Error::NoRegistry {
                dir: dir.to_path_buf(),
            }),
            Err(Errno::NOTDIR) => Err(not_a_directory(dir)),
            Err(e) => Err(Error::io(
                "cannot open the registry directory",
                dir,
                e.into(),
            )),
        }
    }

    /// The path of a file in the directory, for messages.
    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The open directory, to open files relative to.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Whether files may be created and written here.
    pub(crate) fn writable(&self) -> bool {
        self.writable
    }
}

fn getuid_effective() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn not_a_directory(dir: &Path) -> Error {
    Error::Unsafe {
        path: dir.to_path_buf(),
        reason: "it is a file, not a directory; name a directory for the registry \
                 (--dir or PORTLEASE_DIR), or leave both unset for the default"
            .into(),
    }
}

/// Whether `dir` is on a RAM-backed filesystem (tmpfs or ramfs); `None` if unknown.
pub fn is_ram_backed(dir: &Path) -> Option<bool> {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    let stat = rustix::fs::statfs(dir).ok()?;
    // f_type's width and sign differ between platforms, hence the cast.
    #[allow(clippy::unnecessary_cast)]
    let kind = stat.f_type as i64;
    Some(kind == TMPFS_MAGIC || kind == RAMFS_MAGIC)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn ram_backed_filesystems_are_told_from_others() {
        assert_eq!(is_ram_backed(Path::new("/proc")), Some(false));
        assert_eq!(is_ram_backed(Path::new("/no/such/directory")), None);
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        if mounts
            .lines()
            .any(|line| line.starts_with("tmpfs /dev/shm tmpfs "))
        {
            assert_eq!(is_ram_backed(Path::new("/dev/shm")), Some(true));
        }
    }
}
