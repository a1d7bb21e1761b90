//! The public facade: [`Allocator`] checks what it is asked, turns it into an
//! operation for the [`Engine`] (an allocation or a release as an [`Op`], posted on
//! the request board through `batch`), and makes [`Lease`]s of the outcomes. Every
//! operation is one transaction of the engine's; nothing below calls back up here.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::batch::submit;
use crate::board::Board;
use crate::board::wire::{Op, Outcome};
use crate::directory::{self, RegistryDir};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::lease::{Lease, LeaseKeeper};
use crate::probe::ephemeral_port_range;
use crate::process::ProcessId;
use crate::record::{LeaseRecord, Tenure};
use crate::request::{Owner, Request, check_ttl};
use crate::snapshot::LeaseInfo;

/// How long a caller waits for the registry lock unless told otherwise.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// Hands out leases from the registry in one directory.
///
/// Cheap to clone; every operation takes the lock anew, so one `Allocator` may be used
/// from many threads, and many processes may use the same directory at once.
///
/// ```
/// # fn main() -> portlease::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// use portlease::{Allocator, Request};
///
/// let allocator = Allocator::with_dir(dir.path())?;
/// let lease = allocator.allocate(&Request::new().range(39000..=39099))?;
/// println!("serve on {}", lease.port());
/// // Dropping the lease releases the port.
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Allocator {
    /// The directory's engine: its lock, board, cursor and cache, shared by clones;
    /// the lock timeout, this handle's own.
    engine: Engine,
}

impl Allocator {
    /// An allocator on the default directory ([`default_dir`](crate::default_dir)).
    ///
    /// # Errors
    /// When the directory cannot be created or is not safe to use.
    pub fn new() -> Result<Allocator> {
        Allocator::with_dir(directory::default_dir())
    }

    /// An allocator on the registry in `dir`, created (mode 0700) if missing.
    ///
    /// The directory is opened once, without following a link at its last component,
    /// and checked by the open descriptor; its files are opened relative to it.
    ///
    /// # Errors
    /// When the directory cannot be created, is not a directory, is a symbolic link,
    /// is owned by another user, or is writable by group or others; or when the
    /// request board there is not a regular file of one link.
    pub fn with_dir(dir: impl Into<PathBuf>) -> Result<Allocator> {
        let dir = dir.into();
        let opened = Arc::new(RegistryDir::prepare(&dir)?);
        let board = Board::open(&opened)?.map(Arc::new);
        Ok(Allocator::from_parts(dir, opened, board))
    }

    /// An allocator on the existing registry in `dir` that only looks: for
    /// [`leases`](Allocator::leases). It creates and writes nothing (a damaged
    /// registry is salvaged in memory only), and works where the caller may read but
    /// not write, on a directory of another user too. It takes the lock on a
    /// read-only descriptor; where the lock file cannot be opened, it reads without
    /// the lock, and says so in a warning. Anything that would change the registry
    /// fails with [`Error::ReadOnly`].
    ///
    /// # Errors
    /// [`Error::NoRegistry`] when `dir` does not exist; when it is not a directory or
    /// is a symbolic link.
    pub fn existing(dir: impl Into<PathBuf>) -> Result<Allocator> {
        let dir = dir.into();
        let opened = Arc::new(RegistryDir::existing(&dir)?);
        Ok(Allocator::from_parts(dir, opened, None))
    }

    fn from_parts(dir: PathBuf, opened: Arc<RegistryDir>, board: Option<Arc<Board>>) -> Allocator {
        Allocator {
            engine: Engine::from_parts(dir, opened, board, DEFAULT_LOCK_TIMEOUT),
        }
    }

    /// The engine this allocator runs its operations on.
    #[cfg(test)]
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// How long to wait for the registry lock before failing with
    /// [`Error::LockTimeout`] (default 30 s). A timeout too long for the clock, such
    /// as `Duration::MAX`, waits as good as forever.
    #[must_use = "lock_timeout returns the changed Allocator; it does not change this one"]
    pub fn lock_timeout(self, timeout: Duration) -> Allocator {
        Allocator {
            engine: self.engine.with_lock_timeout(timeout),
        }
    }

    /// The registry directory.
    pub fn dir(&self) -> &Path {
        self.engine.dir()
    }

    /// Leases ports as `request` asks: its preferred port if free, else the next free
    /// ports after the last one handed out (so a port released a moment ago is not
    /// handed out again at once): by any process on the host, through the request
    /// board, or, where there is no board, by this allocator and its clones. A port
    /// is free when no live lease holds it and it can be bound. Stale leases are
    /// reclaimed on the way.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] (a label or source past
    /// [`MAX_TEXT_BYTES`](crate::MAX_TEXT_BYTES) among others), [`Error::NoSuchProcess`]
    /// for an owner that does not run, [`Error::Exhausted`], [`Error::OwnerLimit`],
    /// [`Error::TooLarge`] when the registry would pass
    /// [`MAX_REGISTRY_BYTES`](crate::MAX_REGISTRY_BYTES), [`Error::LockTimeout`], or an
    /// I/O error naming the file. On error the registry is unchanged.
    pub fn allocate(&self, request: &Request) -> Result<Lease> {
        request.validate()?;
        warn_if_ephemeral(request.ranges());
        request.warn_if_preferred_outside();
        let me = ProcessId::current();
        let owner = resolve_owner(&request.owner, me)?;
        let token = new_token(me.pid);
        let op = Op::Allocate {
            request: Box::new(request.clone()),
            owner,
            pid: me.pid,
            token: token.clone(),
        };
        match submit(&self.engine, &op, me)? {
            Outcome::Allocated(ports) => {
                Ok(Lease::new(Box::new(self.clone()), ports, token, request))
            }
            other => Err(self.unexpected(&other)),
        }
    }

    /// Leases ports for each of `requests`, all in one transaction: one registry read
    /// and one write, however many requests (a server answering many clients at once
    /// saves one transaction each). Requests are served in order, each as
    /// [`allocate`](Allocator::allocate) would serve it alone, and each succeeds or
    /// fails on its own.
    ///
    /// # Errors
    /// The outer error fails every request alike and leaves the registry unchanged:
    /// [`Error::LockTimeout`], or an I/O error naming the file. The inner ones are
    /// those of [`allocate`](Allocator::allocate), request by request.
    pub fn allocate_each(&self, requests: &[Request]) -> Result<Vec<Result<Lease>>> {
        let me = ProcessId::current();
        let prepared: Vec<Result<(Option<ProcessId>, String)>> = requests
            .iter()
            .map(|request| {
                request.validate()?;
                warn_if_ephemeral(request.ranges());
                request.warn_if_preferred_outside();
                Ok((resolve_owner(&request.owner, me)?, new_token(me.pid)))
            })
            .collect();
        let ops: Vec<Op> = requests
            .iter()
            .zip(&prepared)
            .filter_map(|(request, prepared)| {
                let (owner, token) = prepared.as_ref().ok()?;
                Some(Op::Allocate {
                    request: Box::new(request.clone()),
                    owner: *owner,
                    pid: me.pid,
                    token: token.clone(),
                })
            })
            .collect();
        let mut outcomes = self.engine.run_each(&ops)?.into_iter();
        Ok(requests
            .iter()
            .zip(prepared)
            .map(|(request, prepared)| {
                let (_, token) = prepared?;
                let outcome = outcomes
                    .next()
                    .unwrap_or_else(|| Err(Error::invalid("not served")))?;
                match outcome {
                    Outcome::Allocated(ports) => {
                        Ok(Lease::new(Box::new(self.clone()), ports, token, request))
                    }
                    other => Err(self.unexpected(&other)),
                }
            })
            .collect())
    }

    /// Ends the lease on `port`, whoever holds it (the seed's `release`). Returns
    /// whether the port was leased; releasing a port that is not is no error.
    ///
    /// # Errors
    /// [`Error::LockTimeout`] or an I/O error naming the file.
    pub fn release(&self, port: u16) -> Result<bool> {
        self.engine.release_port(port)
    }

    /// Ends every lease for which `matches` is true (say, all with one label or one
    /// owner pid); returns what it ended.
    ///
    /// # Errors
    /// [`Error::LockTimeout`] or an I/O error naming the file.
    pub fn release_where(&self, matches: impl Fn(&LeaseInfo) -> bool) -> Result<Vec<LeaseInfo>> {
        self.release_where_permitted(matches, |_| true)
    }

    /// Ends every lease for which `matches` is true, unless one of them is held by a
    /// live process (a portlease lease's owner, or a seed entry's pid while it runs)
    /// that `may_end` does not accept: then nothing ends, and the error
    /// ([`Error::HeldByProcess`]) names that process. Returns what it ended.
    ///
    /// # Errors
    /// [`Error::HeldByProcess`], [`Error::LockTimeout`], or an I/O error naming the file.
    pub fn release_where_permitted(
        &self,
        matches: impl Fn(&LeaseInfo) -> bool,
        may_end: impl Fn(ProcessId) -> bool,
    ) -> Result<Vec<LeaseInfo>> {
        self.engine.release_where(matches, may_end)
    }

    /// Ends the lease allocated under `token` (every port it holds) and nothing else;
    /// returns its ports, ascending. A lease already ended returns none, so a release
    /// retried after a lost answer cannot end a lease made since on the same port.
    /// To end only some of its ports, use
    /// [`release_under_token`](Allocator::release_under_token).
    ///
    /// # Errors
    /// [`Error::LockTimeout`] or an I/O error naming the file.
    pub fn release_by_token(&self, token: &str) -> Result<Vec<u16>> {
        self.engine.release_by_token(token)
    }

    /// Hands the leases on `ports` to the running process `pid`, recorded by pid and
    /// start time, as [`Lease::hand_to`] does: any TTL is cleared, so from now on each
    /// lasts exactly as long as that process runs (it cannot expire while the process
    /// has yet to bind its port). A lease held by another live process is handed on
    /// only if `may_take` accepts that process. All of them, or, on error, none.
    ///
    /// # Errors
    /// [`Error::NoSuchProcess`], [`Error::NotLeased`], [`Error::NotPortlease`],
    /// [`Error::LeaseLost`] for a lease that has ended, [`Error::HeldByProcess`]; lock
    /// and I/O errors.
    pub fn hand_to(
        &self,
        ports: &[u16],
        pid: u32,
        may_take: impl Fn(ProcessId) -> bool,
    ) -> Result<()> {
        self.hand(ports, None, pid, may_take).map(drop)
    }

    /// What [`hand_to`](Allocator::hand_to) and [`Lease::hand_to`] do: hands the leases
    /// on `ports` (held under `token`, when given) to `pid`; returns what each held
    /// before.
    pub(crate) fn hand(
        &self,
        ports: &[u16],
        token: Option<&str>,
        pid: u32,
        may_take: impl Fn(ProcessId) -> bool,
    ) -> Result<Vec<Tenure>> {
        let to = ProcessId::of_running(pid).ok_or(Error::NoSuchProcess { pid })?;
        self.engine.hand_to(ports, token, to, may_take)
    }

    /// Renews the lease on `port`: its time starts again from now, with `ttl` as its
    /// new lifetime, or the lifetime it had (`None`). Refreshes the `timestamp` the
    /// seed judges leases by, too.
    ///
    /// # Errors
    /// [`Error::NotLeased`] when the port holds no lease, [`Error::NotPortlease`] when
    /// it holds one portlease did not make (the seed's), [`Error::LeaseLost`] when its
    /// lease has ended, [`Error::InvalidRequest`] for a TTL of 0.
    pub fn renew(&self, port: u16, ttl: Option<Duration>) -> Result<()> {
        self.renew_matching(&[port], None, ttl)
    }

    /// Renews several leases in one transaction: all of them, or, on error, none.
    ///
    /// # Errors
    /// As [`renew`](Allocator::renew).
    pub fn renew_all(&self, ports: &[u16], ttl: Option<Duration>) -> Result<()> {
        self.renew_matching(ports, None, ttl)
    }

    /// Renews the given ports, checking the token when one is given.
    pub(crate) fn renew_matching(
        &self,
        ports: &[u16],
        token: Option<&str>,
        ttl: Option<Duration>,
    ) -> Result<()> {
        check_ttl(ttl)?;
        self.update_leases(ports, token, |lease, now| {
            lease.since = now;
            if let Some(ttl) = ttl {
                lease.ttl = Some(ttl.as_secs_f64());
            }
        })
    }

    /// Changes the live leases on `ports` (held under `token`, when given) with
    /// `change`, in one transaction; fails with [`Error::LeaseLost`] if any is gone.
    pub(crate) fn update_leases(
        &self,
        ports: &[u16],
        token: Option<&str>,
        change: impl Fn(&mut LeaseRecord, f64),
    ) -> Result<()> {
        self.engine.change_leases(ports, token, change)
    }

    /// Ends the leases on `ports` held under `token` (a [`Lease::token`]), as the
    /// lease's own release does (where [`release_by_token`](Allocator::release_by_token)
    /// ends every port of the lease, whichever they are): posted on the request board when others wait for the
    /// lock, so it shares their transaction. A port with no entry counts as released,
    /// so a retry is harmless; a port leased to another lease meanwhile is left alone
    /// and reported as [`Error::LeaseLost`].
    ///
    /// # Errors
    /// [`Error::LeaseLost`], [`Error::LockTimeout`], or an I/O error naming the file.
    pub fn release_under_token(&self, ports: &[u16], token: &str) -> Result<()> {
        let op = Op::Release {
            ports: ports.to_vec(),
            token: token.to_owned(),
        };
        match submit(&self.engine, &op, ProcessId::current())? {
            Outcome::Released { lost: None } => Ok(()),
            Outcome::Released { lost: Some(port) } => Err(Error::LeaseLost { port }),
            other => Err(self.unexpected(&other)),
        }
    }

    /// A snapshot of every entry in the registry, stale ones included (marked).
    ///
    /// # Errors
    /// [`Error::LockTimeout`] or an I/O error naming the file.
    pub fn leases(&self) -> Result<Vec<LeaseInfo>> {
        match self.engine.snapshot() {
            // A reader that cannot open the lock file (missing, or not readable to it)
            // reads without the lock: the registry is replaced atomically, so what it
            // reads is whole, if perhaps a moment old.
            Err(Error::Io { path, source, .. })
                if !self.engine.writable()
                    && path.ends_with(crate::layout::LOCK_FILE)
                    && matches!(
                        source.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                    ) =>
            {
                log::warn!(
                    "read {} without its lock ({source}): the listing may be a moment old",
                    self.dir().display()
                );
                self.engine.snapshot_unlocked()
            }
            result => result,
        }
    }

    /// Reclaims every stale lease (owner gone, or TTL passed) and returns them.
    ///
    /// # Errors
    /// [`Error::LockTimeout`] or an I/O error naming the file.
    pub fn gc(&self) -> Result<Vec<LeaseInfo>> {
        self.engine.gc()
    }

    /// The error for an outcome of another kind than the request asked for.
    fn unexpected(&self, outcome: &Outcome) -> Error {
        Error::io(
            "got an outcome of another kind than asked for, in",
            self.dir(),
            std::io::Error::other(format!("{outcome:?}")),
        )
    }
}

impl LeaseKeeper for Allocator {
    #[cfg(feature = "tokio")]
    fn dir(&self) -> &Path {
        Allocator::dir(self)
    }

    fn release_under_token(&self, ports: &[u16], token: &str) -> Result<()> {
        Allocator::release_under_token(self, ports, token)
    }

    fn renew_matching(
        &self,
        ports: &[u16],
        token: Option<&str>,
        ttl: Option<Duration>,
    ) -> Result<()> {
        Allocator::renew_matching(self, ports, token, ttl)
    }

    fn hand_to(&self, ports: &[u16], token: &str, pid: u32) -> Result<Vec<Tenure>> {
        // The token shows the lease is the caller's, whoever holds it now.
        self.hand(ports, Some(token), pid, |_| true)
    }

    fn restore(&self, token: &str, before: &[Tenure]) -> Result<()> {
        self.engine.restore(token, before)
    }
}

/// A token unique to one allocation: pid, time and a counter.
fn new_token(pid: u32) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:x}-{:x}-{:x}",
        pid,
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The process a request's `owner` names, as the lease records it (`me` is the
/// caller); `None` for a lease owned by no process.
fn resolve_owner(owner: &Owner, me: ProcessId) -> Result<Option<ProcessId>> {
    match *owner {
        Owner::CurrentProcess => Ok(Some(me)),
        Owner::Process(pid) => ProcessId::of_running(pid)
            .map(Some)
            .ok_or(Error::NoSuchProcess { pid }),
        Owner::Running(owner) => Ok(Some(owner)),
        Owner::Nobody => Ok(None),
    }
}

/// Logs a warning, once per range and process, when a range overlaps the kernel's
/// ephemeral range: outgoing connections may take ports from it at any moment.
fn warn_if_ephemeral(ranges: &[RangeInclusive<u16>]) {
    static WARNED: Mutex<Vec<RangeInclusive<u16>>> = Mutex::new(Vec::new());
    static EPHEMERAL: OnceLock<Option<RangeInclusive<u16>>> = OnceLock::new();
    let Some(ephemeral) = EPHEMERAL.get_or_init(ephemeral_port_range) else {
        return;
    };
    let Ok(mut warned) = WARNED.lock() else {
        return;
    };
    for range in ranges {
        let overlaps = range.start() <= ephemeral.end() && ephemeral.start() <= range.end();
        if overlaps && !warned.contains(range) {
            warned.push(range.clone());
            log::warn!(
                "range {}-{} overlaps the kernel's ephemeral range {}-{}: outgoing connections \
                 may take its ports at any moment; prefer ports below {}",
                range.start(),
                range.end(),
                ephemeral.start(),
                ephemeral.end(),
                ephemeral.start()
            );
        }
    }
}
