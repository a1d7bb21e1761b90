//! Where the registry lives, and whether that place is safe to use.

use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

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
    // SAFETY: geteuid cannot fail and touches no memory.
    let uid = unsafe { libc::geteuid() };
    let shm = Path::new("/dev/shm");
    if cfg!(target_os = "linux") && shm.is_dir() {
        return shm.join(format!("portlease-{uid}"));
    }
    std::env::temp_dir().join(format!("portlease-{uid}"))
}

/// Creates `dir` (mode 0700) if needed and checks that only its owner can change it.
///
/// Anyone who can write to the directory can forge or delete leases and plant links,
/// so a directory owned by another user, or writable by group or others, is refused.
/// To share ports between users, run `portlease serve` instead.
pub(crate) fn prepare(dir: &Path) -> Result<()> {
    match DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => {}
        Err(_) if dir.exists() && !dir.is_dir() => return Err(not_a_directory(dir)),
        Err(e) => return Err(Error::io("cannot create the registry directory", dir, e)),
    }
    let meta = std::fs::metadata(dir).map_err(|e| Error::io("cannot inspect", dir, e))?;
    if !meta.is_dir() {
        return Err(not_a_directory(dir));
    }
    // SAFETY: geteuid cannot fail and touches no memory.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(Error::Unsafe {
            path: dir.to_path_buf(),
            reason: format!(
                "it is owned by uid {}, not by you (uid {me}); use a directory of your own \
                 (--dir or PORTLEASE_DIR), or `portlease serve` to share ports between users",
                meta.uid()
            ),
        });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(Error::Unsafe {
            path: dir.to_path_buf(),
            reason: format!(
                "it is writable by group or others (mode {:o}), who could forge or delete \
                 leases; run `chmod go-w {}` or use another directory",
                meta.mode() & 0o7777,
                dir.display()
            ),
        });
    }
    Ok(())
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
    use std::os::unix::ffi::OsStrExt;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `path` is NUL-terminated and `stat` is a valid buffer for statfs to fill.
    if unsafe { libc::statfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statfs returned 0, so it filled `stat`.
    // f_type's width differs between platforms, hence the cast.
    #[allow(clippy::unnecessary_cast)]
    let kind = unsafe { stat.assume_init() }.f_type as i64;
    Some(kind == TMPFS_MAGIC || kind == RAMFS_MAGIC)
}
