//! Where the registry lives, and whether that place is safe to use.

use std::ffi::OsString;
use std::fs::DirBuilder;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use rustix::fs::{CWD, Mode, OFlags, fstat, openat};
use rustix::io::Errno;

use crate::error::{Error, Result};

/// The environment variable that names the registry directory.
pub const DIR_ENV: &str = "PORTLEASE_DIR";

/// The registry directory used when none is given: the first of these that no other
/// user can create first.
///
/// 1. `$PORTLEASE_DIR`, if set: always, whatever it is (it is checked when opened).
/// 2. `$XDG_RUNTIME_DIR/portlease` if `XDG_RUNTIME_DIR` is set, else
///    `/run/user/<uid>/portlease` (Linux): the per-user runtime directory, RAM-backed.
/// 3. `$XDG_STATE_HOME/portlease`, else `$HOME/.local/state/portlease`: on the disk,
///    where replacing the registry costs a disk write.
/// 4. Only where none of those can be used (no runtime directory, no `HOME`):
///    `portlease-<uid>` in `$TMPDIR`, else in `/dev/shm` (Linux), else in the temp dir.
///
/// A candidate is used only if its parent is a directory of the caller's that group
/// and others cannot write (so no one else can create the name first; a missing
/// parent is judged by its nearest existing ancestor, and is created 0700), and the
/// candidate itself is missing or a directory of the caller's that group and others
/// cannot write. A candidate refused for either is passed over with a warning that
/// says what is wrong with which path, and what to do. The last is a name another user
/// can create first in a world-writable directory: then opening it fails, saying so.
pub fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let chosen = choose_default(&|name| std::env::var_os(name), getuid_effective());
    for warning in &chosen.passed_over {
        warn_once(format!(
            "not using {}: {}; using {} instead",
            warning.0.display(),
            warning.1,
            chosen.dir.display()
        ));
    }
    chosen.dir
}

/// Where the default registry is, and the candidates passed over on the way: each
/// with what is wrong with it and what to do.
#[derive(Debug)]
struct Chosen {
    dir: PathBuf,
    passed_over: Vec<(PathBuf, String)>,
}

/// One place the default registry may be: `dir`, to be created in `parent`, which
/// must be private (named by `parent_name` in messages).
struct Candidate {
    dir: PathBuf,
    parent: PathBuf,
    parent_name: String,
    /// Whether a missing parent may be created (judged by its nearest ancestor).
    create_parent: bool,
}

/// [`default_dir`] but `PORTLEASE_DIR`, for `env` and the user `uid`.
fn choose_default(env: &dyn Fn(&str) -> Option<OsString>, uid: u32) -> Chosen {
    let var = |name: &str| {
        env(name)
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    let mut candidates = Vec::new();
    match var("XDG_RUNTIME_DIR") {
        Some(runtime) => candidates.push(Candidate {
            dir: runtime.join("portlease"),
            parent_name: format!("$XDG_RUNTIME_DIR ({})", runtime.display()),
            parent: runtime,
            create_parent: false,
        }),
        None if cfg!(target_os = "linux") => {
            let runtime = PathBuf::from(format!("/run/user/{uid}"));
            candidates.push(Candidate {
                dir: runtime.join("portlease"),
                parent_name: runtime.display().to_string(),
                parent: runtime,
                create_parent: false,
            });
        }
        None => {}
    }
    let state = var("XDG_STATE_HOME")
        .map(|state| (format!("$XDG_STATE_HOME ({})", state.display()), state))
        .or_else(|| {
            var("HOME").map(|home| {
                let state = home.join(".local/state");
                (state.display().to_string(), state)
            })
        });
    if let Some((parent_name, state)) = state {
        candidates.push(Candidate {
            dir: state.join("portlease"),
            parent_name,
            parent: state,
            create_parent: true,
        });
    }
    let mut passed_over = Vec::new();
    for candidate in candidates {
        match judge(&candidate, uid) {
            Judged::Safe => {
                return Chosen {
                    dir: candidate.dir,
                    passed_over,
                };
            }
            Judged::Absent => {}
            Judged::Unsafe(reason) => passed_over.push((candidate.dir, reason)),
        }
    }
    let shm = Path::new("/dev/shm");
    let base = match var("TMPDIR") {
        Some(tmp) => tmp,
        None if cfg!(target_os = "linux") && shm.is_dir() => shm.to_path_buf(),
        None => std::env::temp_dir(),
    };
    Chosen {
        dir: base.join(format!("portlease-{uid}")),
        passed_over,
    }
}

/// What a candidate for the default registry is.
#[derive(Debug, PartialEq)]
enum Judged {
    /// No other user can have made it or make it: use it.
    Safe,
    /// Its parent does not exist (no runtime directory): pass it over silently.
    Absent,
    /// Another user could have made it, or could change it: why, and what to do.
    Unsafe(String),
}

fn judge(candidate: &Candidate, uid: u32) -> Judged {
    let parent = &candidate.parent;
    let mut ancestor = parent.as_path();
    let stat = loop {
        match rustix::fs::stat(ancestor) {
            Ok(stat) => break stat,
            Err(Errno::NOENT) if candidate.create_parent => match ancestor.parent() {
                Some(up) => ancestor = up,
                None => return Judged::Absent,
            },
            Err(_) => return Judged::Absent,
        }
    };
    let described = if ancestor == parent {
        candidate.parent_name.clone()
    } else {
        format!(
            "{}'s ancestor {}",
            candidate.parent_name,
            ancestor.display()
        )
    };
    if let Some(problem) = not_private(&stat, uid) {
        return Judged::Unsafe(format!(
            "{described} {problem}, so another user could create the registry there first; \
             set PORTLEASE_DIR to a directory of your own"
        ));
    }
    if ancestor != parent {
        // Missing: created 0700 along with the registry.
        return Judged::Safe;
    }
    let stat = match rustix::fs::lstat(&candidate.dir) {
        Ok(stat) => stat,
        Err(Errno::NOENT) => return Judged::Safe,
        Err(e) => {
            return Judged::Unsafe(format!(
                "it cannot be inspected ({}); set PORTLEASE_DIR to a directory of your own",
                std::io::Error::from(e)
            ));
        }
    };
    let kind = rustix::fs::FileType::from_raw_mode(stat.st_mode);
    let problem = match kind {
        rustix::fs::FileType::Symlink => "it is a symbolic link; remove it".to_owned(),
        rustix::fs::FileType::Directory => match not_private(&stat, uid) {
            None => return Judged::Safe,
            Some(problem) if stat.st_uid == uid => {
                format!("it {problem}; run `chmod go-w {}`", candidate.dir.display())
            }
            Some(problem) => format!("it {problem}; have it removed (by its owner or root)"),
        },
        _ => "it is a file, not a directory; remove it".to_owned(),
    };
    Judged::Unsafe(format!(
        "{problem}, or set PORTLEASE_DIR to a directory of your own"
    ))
}

/// Why a directory is not the caller's alone: owned by another user, or writable by
/// group or others; `None` if it is.
fn not_private(stat: &rustix::fs::Stat, uid: u32) -> Option<String> {
    if stat.st_uid != uid {
        return Some(format!(
            "is owned by uid {}, not by you (uid {uid})",
            stat.st_uid
        ));
    }
    let mode = stat.st_mode;
    (mode & 0o022 != 0)
        .then(|| format!("is writable by group or others (mode {:o})", mode & 0o7777))
}

/// Logs a warning once per process.
fn warn_once(message: String) {
    static WARNED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut warned = WARNED.lock().unwrap_or_else(PoisonError::into_inner);
    if !warned.contains(&message) {
        log::warn!("{message}");
        warned.push(message);
    }
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
            let advice = squatted(dir).unwrap_or_else(|| {
                "use a directory of your own (--dir or PORTLEASE_DIR), or `portlease serve` to \
                 share ports between users"
                    .into()
            });
            return Err(Error::Unsafe {
                path: dir.to_path_buf(),
                reason: format!(
                    "it is owned by uid {}, not by you (uid {me}); {advice}",
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
                    reason: format!(
                        "the registry directory is a symbolic link, which someone could \
                         re-point; {}",
                        squatted(dir).unwrap_or_else(|| {
                            "name the directory it points to, or remove the link".into()
                        })
                    ),
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
        reason: format!(
            "it is a file, not a directory; {}",
            squatted(dir).unwrap_or_else(|| {
                "remove it, or name a directory for the registry (--dir or PORTLEASE_DIR)".into()
            })
        ),
    }
}

/// What to do about `dir` if another user made it in a directory anyone may write
/// (`/dev/shm`, `/tmp`): likely to block the caller, who cannot remove it there.
fn squatted(dir: &Path) -> Option<String> {
    let owner = rustix::fs::lstat(dir).ok()?.st_uid;
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty())?;
    let public = rustix::fs::stat(parent).ok()?.st_mode & 0o002 != 0;
    (public && owner != getuid_effective()).then(|| {
        format!(
            "another user (uid {owner}) made it in {}, which anyone may write, perhaps to \
             block you; have it removed (by its owner or root), or set PORTLEASE_DIR to a \
             directory of your own (or XDG_RUNTIME_DIR or HOME, for the default)",
            parent.display()
        )
    })
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
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn choose(vars: &[(&str, &Path)]) -> Chosen {
        let env = |name: &str| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.as_os_str().to_owned())
        };
        choose_default(&env, getuid_effective())
    }

    #[test]
    fn a_private_runtime_dir_is_the_default() {
        let runtime = tempfile::tempdir().expect("a temp dir");
        chmod(runtime.path(), 0o700);
        let chosen = choose(&[("XDG_RUNTIME_DIR", runtime.path())]);
        assert_eq!(chosen.dir, runtime.path().join("portlease"));
        assert!(chosen.passed_over.is_empty());
    }

    #[test]
    fn without_a_runtime_dir_the_state_dir_is_the_default_even_before_it_exists() {
        let home = tempfile::tempdir().expect("a temp dir");
        chmod(home.path(), 0o700);
        let missing = home.path().join("no-runtime");
        let chosen = choose(&[("XDG_RUNTIME_DIR", &missing), ("HOME", home.path())]);
        assert_eq!(chosen.dir, home.path().join(".local/state/portlease"));
        assert!(chosen.passed_over.is_empty(), "{chosen:?}");
        let state = home.path().join("state");
        let chosen = choose(&[
            ("XDG_RUNTIME_DIR", &missing),
            ("HOME", home.path()),
            ("XDG_STATE_HOME", &state),
        ]);
        assert_eq!(chosen.dir, state.join("portlease"));
    }

    #[test]
    fn a_runtime_dir_others_may_write_is_passed_over_saying_why() {
        let runtime = tempfile::tempdir().expect("a temp dir");
        chmod(runtime.path(), 0o1777);
        let home = tempfile::tempdir().expect("a temp dir");
        chmod(home.path(), 0o700);
        let chosen = choose(&[("XDG_RUNTIME_DIR", runtime.path()), ("HOME", home.path())]);
        assert_eq!(chosen.dir, home.path().join(".local/state/portlease"));
        let [(path, reason)] = &chosen.passed_over[..] else {
            panic!("{chosen:?}");
        };
        assert_eq!(path, &runtime.path().join("portlease"));
        assert!(
            reason.contains("writable by group or others (mode 1777)"),
            "{reason}"
        );
        assert!(reason.contains("PORTLEASE_DIR"), "{reason}");
    }

    #[test]
    fn a_file_or_link_in_the_registrys_place_is_passed_over() {
        let runtime = tempfile::tempdir().expect("a temp dir");
        chmod(runtime.path(), 0o700);
        let home = tempfile::tempdir().expect("a temp dir");
        chmod(home.path(), 0o700);
        let vars = [("XDG_RUNTIME_DIR", runtime.path()), ("HOME", home.path())];
        let place = runtime.path().join("portlease");
        std::fs::write(&place, "x").expect("a file");
        let chosen = choose(&vars);
        assert_eq!(chosen.dir, home.path().join(".local/state/portlease"));
        assert!(
            chosen.passed_over[0].1.contains("it is a file"),
            "{chosen:?}"
        );
        std::fs::remove_file(&place).expect("rm");
        std::os::unix::fs::symlink(home.path(), &place).expect("a link");
        let chosen = choose(&vars);
        assert!(
            chosen.passed_over[0].1.contains("symbolic link"),
            "{chosen:?}"
        );
        std::fs::remove_file(&place).expect("rm");
        std::fs::create_dir(&place).expect("a dir");
        chmod(&place, 0o777);
        let chosen = choose(&vars);
        assert!(chosen.passed_over[0].1.contains("chmod go-w"), "{chosen:?}");
    }

    #[test]
    fn with_no_private_place_the_last_resort_is_in_tmpdir() {
        let home = tempfile::tempdir().expect("a temp dir");
        chmod(home.path(), 0o777);
        let tmp = tempfile::tempdir().expect("a temp dir");
        let missing = tmp.path().join("no-runtime");
        let chosen = choose(&[
            ("XDG_RUNTIME_DIR", &missing),
            ("HOME", home.path()),
            ("TMPDIR", tmp.path()),
        ]);
        let uid = getuid_effective();
        assert_eq!(chosen.dir, tmp.path().join(format!("portlease-{uid}")));
        assert_eq!(chosen.passed_over.len(), 1, "{chosen:?}");
        // Relative paths in the environment are not places.
        let chosen = choose(&[
            ("XDG_RUNTIME_DIR", Path::new("run")),
            ("HOME", Path::new("home")),
            ("TMPDIR", tmp.path()),
        ]);
        assert!(chosen.dir.is_absolute(), "{chosen:?}");
    }

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
