//! Opening files in the registry directory, relative to its open descriptor.
//!
//! Anything there may have been replaced by someone or something: a link (which could
//! make portlease write elsewhere), a FIFO (whose open or read blocks forever, holding
//! the lock), a device (read without end), or a hard link to another file (which a
//! write would change). So every file is opened without following links and without
//! blocking, then checked by its descriptor to be a regular file, with one link
//! where portlease writes through it; anything else is refused at once, before a byte
//! is read or written. New files are 0600, and no descriptor leaks into children.

use std::fs::File;
use std::io;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, fstat, ftruncate, openat, statat};
use rustix::io::Errno;

use crate::directory::RegistryDir;
use crate::error::{Error, Result};

/// Flags every open in the directory carries.
fn base_flags() -> OFlags {
    OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY
}

/// Opens `name` for reading; `None` if there is no such file.
pub(crate) fn open_for_reading(dir: &RegistryDir, name: &str) -> Result<Option<File>> {
    match openat(dir.fd(), name, OFlags::RDONLY | base_flags(), Mode::empty()) {
        Ok(fd) => {
            let file = File::from(fd);
            check(dir, name, &file, false)?;
            Ok(Some(file))
        }
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(refuse(dir, name, e, "cannot open")),
    }
}

/// Opens a file that lives as long as the directory (lock file, request board),
/// creating it empty if missing: for reading and writing in a writable directory,
/// for reading only (and never created) in a read-only one.
pub(crate) fn open_lasting(dir: &RegistryDir, name: &str) -> Result<File> {
    let (flags, writes) = if dir.writable() {
        (OFlags::RDWR | OFlags::CREATE, true)
    } else {
        (OFlags::RDONLY, false)
    };
    let fd = openat(
        dir.fd(),
        name,
        flags | base_flags(),
        Mode::RUSR | Mode::WUSR,
    )
    .map_err(|e| refuse(dir, name, e, "cannot open"))?;
    let file = File::from(fd);
    check(dir, name, &file, writes)?;
    Ok(file)
}

/// Opens `name` to write it anew: created if missing (or, with `exclusive`, only
/// if missing), checked, then emptied. Only a checked file is ever truncated.
pub(crate) fn create_for_writing(dir: &RegistryDir, name: &str, exclusive: bool) -> Result<File> {
    let mut flags = OFlags::WRONLY | OFlags::CREATE | base_flags();
    if exclusive {
        flags |= OFlags::EXCL;
    }
    let fd = openat(dir.fd(), name, flags, Mode::RUSR | Mode::WUSR)
        .map_err(|e| refuse(dir, name, e, "cannot create"))?;
    let file = File::from(fd);
    check(dir, name, &file, true)?;
    ftruncate(&file, 0).map_err(|e| Error::io("cannot empty", dir.join(name), e.into()))?;
    Ok(file)
}

/// What is at `name` now, without following a link; `None` if nothing is.
pub(crate) fn stat_at(dir: &RegistryDir, name: &str) -> io::Result<Option<Stat>> {
    match statat(dir.fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(stat)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Checks an opened file: a regular file, with one link if it is written through.
fn check(dir: &RegistryDir, name: &str, file: &File, writes: bool) -> Result<()> {
    let stat = fstat(file).map_err(|e| Error::io("cannot inspect", dir.join(name), e.into()))?;
    let kind = FileType::from_raw_mode(stat.st_mode);
    if kind != FileType::RegularFile {
        return Err(not_regular(dir, name, kind));
    }
    if writes && stat.st_nlink != 1 {
        return Err(Error::Unsafe {
            path: dir.join(name),
            reason: format!(
                "it has {} hard links, so writing it would change another file too; remove it \
                 (portlease makes it anew)",
                stat.st_nlink
            ),
        });
    }
    Ok(())
}

/// The error for a failed open: a link, or something that is not a regular file
/// (a FIFO with no reader fails to open for writing), is refused as unsafe.
fn refuse(dir: &RegistryDir, name: &str, e: Errno, action: &'static str) -> Error {
    if let Ok(Some(stat)) = stat_at(dir, name) {
        let kind = FileType::from_raw_mode(stat.st_mode);
        if kind != FileType::RegularFile {
            return not_regular(dir, name, kind);
        }
    }
    if e == Errno::LOOP {
        return not_regular(dir, name, FileType::Symlink);
    }
    Error::io(action, dir.join(name), e.into())
}

fn not_regular(dir: &RegistryDir, name: &str, kind: FileType) -> Error {
    let what = match kind {
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Socket => "a socket",
        FileType::Directory => "a directory",
        _ => "not a regular file",
    };
    Error::Unsafe {
        path: dir.join(name),
        reason: format!(
            "it is {what}, not a regular file; portlease opens only regular files in its \
             directory and follows no links there, so remove it (portlease makes it anew)"
        ),
    }
}
