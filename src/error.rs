//! The one error type of the crate.

use std::borrow::Cow;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while leasing ports.
///
/// Each message says what failed, on which path or port, and what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another process held the registry lock for longer than the lock timeout.
    #[error(
        "timed out after {:.1}s waiting for the lock on {}: another process holds it; \
         retry, or raise the lock timeout",
        waited.as_secs_f64(),
        dir.join(crate::layout::LOCK_FILE).display()
    )]
    LockTimeout {
        /// The registry directory.
        dir: PathBuf,
        /// How long the caller waited.
        waited: Duration,
    },

    /// The caller's interrupt check (see [`interrupt::with_check`](crate::interrupt::with_check))
    /// asked to stop while the call waited; the wait was abandoned as at a lock timeout,
    /// so nothing was leased or changed.
    #[error(
        "interrupted while waiting for the lock on {}: nothing was leased or changed; \
         retry when ready",
        path.display()
    )]
    Interrupted {
        /// The lock file the call waited for.
        path: PathBuf,
    },

    /// No port (or block of ports) in the requested ranges is free.
    #[error(
        "no {wanted} free in {ranges}: every port there is leased, excluded or bound; \
         release some (`portlease gc` reclaims stale leases) or ask for a wider range"
    )]
    Exhausted {
        /// What was asked for, e.g. "port" or "block of 4 consecutive ports".
        wanted: String,
        /// The ranges searched, e.g. "10000-10999".
        ranges: String,
    },

    /// The request cannot be satisfied as written (a bad port, range, count or TTL).
    #[error("invalid request: {0}")]
    InvalidRequest(String),

    /// The owner process named in the request does not exist.
    #[error("no process with pid {pid}: the owner of a lease must be a running process")]
    NoSuchProcess {
        /// The pid that was asked for.
        pid: u32,
    },

    /// The owner already holds as many leases as the request allows.
    #[error("pid {pid} already holds {held} leases, the most allowed; release some first")]
    OwnerLimit {
        /// The owner pid.
        pid: u32,
        /// How many leases it holds.
        held: usize,
    },

    /// The lease was no longer in the registry (it expired and was reclaimed, or was
    /// released by someone else).
    #[error(
        "the lease on port {port} is gone from the registry (expired, or released by another \
         process); allocate a new one"
    )]
    LeaseLost {
        /// The port whose lease is gone.
        port: u16,
    },

    /// The port holds no lease at all (never leased, or released already).
    #[error(
        "port {port} is not leased (never leased, or released already): there is no lease \
         to change; lease it first"
    )]
    NotLeased {
        /// The port.
        port: u16,
    },

    /// The port's entry is not a portlease lease (the seed's, or one not understood),
    /// which portlease neither renews nor hands on.
    #[error(
        "port {port} holds {what}, not a portlease lease: portlease cannot renew or hand it on"
    )]
    NotPortlease {
        /// The port.
        port: u16,
        /// What the entry is, e.g. "a lease of the seed (pid 42), ...".
        what: String,
    },

    /// The lease is held by a live process that the caller may not end or hand on
    /// (see [`Allocator::release_where_permitted`](crate::Allocator::release_where_permitted)).
    #[error(
        "the lease on {key} is held by running process {pid}{}: end it from that process, \
         or force it",
        if *.in_other_pid_namespace { " in another PID namespace" } else { "" }
    )]
    HeldByProcess {
        /// The registry key (the port).
        key: String,
        /// The live process that holds it.
        pid: u32,
        /// Whether `pid` is of another PID namespace than the caller's (and so names
        /// no process, or another one, here).
        in_other_pid_namespace: bool,
    },

    /// Reading or writing a file of the registry failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "cannot write the registry" (owned when the
        /// error came from another process, through the request board).
        action: Cow<'static, str>,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The registry directory or one of its files is not safe to use.
    #[error("refusing to use {}: {reason}", path.display())]
    Unsafe {
        /// The offending path.
        path: PathBuf,
        /// Why it is refused and what to do.
        reason: String,
    },

    /// The transaction's write would have made the registry larger than every party
    /// reads ([`MAX_REGISTRY_BYTES`](crate::MAX_REGISTRY_BYTES)): it was refused, and
    /// nothing changed. Requests served together in one transaction (through the
    /// request board) fail alike; releases and `gc`, which only shrink the registry,
    /// still work.
    #[error(
        "refusing to write {}: the registry would be {size} bytes, past the {} MiB that \
         every reader accepts, so nothing was changed; release leases (`portlease gc` \
         reclaims stale ones) or shorten their labels",
        path.display(),
        crate::layout::MAX_REGISTRY_BYTES >> 20
    )]
    TooLarge {
        /// The registry file.
        path: PathBuf,
        /// The size, in bytes, the registry would have had.
        size: u64,
    },

    /// A command that only reads was pointed at a registry directory that does not
    /// exist.
    #[error(
        "no registry at {}: the directory does not exist, so nothing is leased there; check \
         --dir or PORTLEASE_DIR",
        dir.display()
    )]
    NoRegistry {
        /// The registry directory.
        dir: PathBuf,
    },

    /// A change was asked of an allocator opened to read only
    /// ([`Allocator::existing`](crate::Allocator::existing)).
    #[error(
        "the registry at {} was opened to read only; open it with `Allocator::with_dir` to \
         change it",
        dir.display()
    )]
    ReadOnly {
        /// The registry directory.
        dir: PathBuf,
    },

    /// Binding a socket to a leased port failed.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address that was bound.
        addr: std::net::SocketAddr,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A command could not be spawned with its lease ([`Lease::spawn`](crate::Lease::spawn)):
    /// it was not found, not executable, or its child ended before the hand-over. No
    /// program ran. The lease is given back as it was (its owner and TTL) where it
    /// can be; a child that failed to exec after the hand-over has ended, and the lease
    /// may have been reclaimed with it meanwhile (then the guard's `release` reports
    /// [`Error::LeaseLost`]).
    #[error(
        "cannot run {program:?}: {source}; check the command's name, the PATH and its \
         permissions"
    )]
    Spawn {
        /// The program, as the command names it.
        program: String,
        /// The underlying error; its kind tells `NotFound` from `PermissionDenied`.
        #[source]
        source: io::Error,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The refusal to end or hand on the lease on `key` that `holder` holds.
    pub(crate) fn held_by(key: String, holder: crate::ProcessId) -> Self {
        Error::HeldByProcess {
            key,
            pid: holder.pid,
            in_other_pid_namespace: !holder.is_in_own_pid_namespace(),
        }
    }

    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            action: Cow::Borrowed(action),
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidRequest(message.into())
    }
}
