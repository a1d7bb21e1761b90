//! Opening files in the registry directory: links are never followed (someone who
//! planted one could make portlease write elsewhere), new files are 0600, and no
//! descriptor leaks into child processes.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::Error;

/// Opens `path` with `options`, refusing a symbolic link (`ELOOP`).
pub(crate) fn open_no_follow(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    options
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Opens a file that lives as long as the directory (lock file, board) for reading and
/// writing, creating it empty if missing.
pub(crate) fn open_lasting(path: &Path) -> io::Result<File> {
    open_no_follow(
        path,
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false),
    )
}

/// The error for a failed open: a link is refused as unsafe, anything else is I/O.
pub(crate) fn refuse_link_or(e: io::Error, action: &'static str, path: &Path) -> Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        Error::Unsafe {
            path: path.to_path_buf(),
            reason: "it is a symbolic link; portlease never follows links in its directory, \
                     so remove it"
                .into(),
        }
    } else {
        Error::io(action, path, e)
    }
}
