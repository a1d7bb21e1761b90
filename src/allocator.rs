//! The lease lifecycle: every operation is one transaction under the registry lock
//! that reads the registry once and writes it at most once.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::batch::{Ledger, Served, submit};
use crate::board::Board;
use crate::board::wire::{Op, Outcome};
use crate::directory::{self, RegistryDir};
use crate::error::{Error, Result};
use crate::lease::{Lease, LeaseKeeper};
use crate::lock::{LockSite, deadline_after};
use crate::probe::ephemeral_port_range;
use crate::process::ProcessId;
use crate::record::{LeaseRecord, Record};
use crate::registry_cache::RegistryCache;
use crate::request::{Owner, Request, check_ttl};
use crate::snapshot::LeaseInfo;
use crate::transaction::Transaction;

/// How often allocation looks up the owner of every lease, not just of those it meets.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

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
    dir: PathBuf,
    /// The directory, opened once; every file is opened relative to it.
    opened: Arc<RegistryDir>,
    lock_timeout: Duration,
    /// The lock file, kept open and shared by clones.
    lock: Arc<LockSite>,
    /// The request board, mapped once and shared by clones; `None` where there is none.
    board: Option<Arc<Board>>,
    /// The last port this allocator (or a clone) handed out: next-fit's cursor where
    /// there is no board (the board keeps one for the whole host).
    cursor: Arc<AtomicU32>,
    /// When this allocator (or a clone) last looked up every lease's owner.
    last_sweep: Arc<Mutex<Option<Instant>>>,
    /// The registry as the last transaction left it, with its file's bytes: the next
    /// transaction uses it only if it reads exactly those bytes.
    cache: Arc<RegistryCache>,
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
        Ok(Allocator::on(dir, opened, board))
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
        Ok(Allocator::on(dir, opened, None))
    }

    fn on(dir: PathBuf, opened: Arc<RegistryDir>, board: Option<Arc<Board>>) -> Allocator {
        Allocator {
            lock: Arc::new(LockSite::new(Arc::clone(&opened))),
            board,
            dir,
            opened,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            cursor: Arc::default(),
            last_sweep: Arc::default(),
            cache: Arc::default(),
        }
    }

    /// How long to wait for the registry lock before failing with
    /// [`Error::LockTimeout`] (default 30 s). A timeout too long for the clock, such
    /// as `Duration::MAX`, waits as good as forever.
    #[must_use = "lock_timeout returns the changed Allocator; it does not change this one"]
    pub fn lock_timeout(mut self, timeout: Duration) -> Allocator {
        self.lock_timeout = timeout;
        self
    }

    /// The registry directory.
    pub fn dir(&self) -> &Path {
        &self.dir
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
        match submit(self, &op, me)? {
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
        let picked = self.transact(|txn| {
            Ok(requests
                .iter()
                .zip(&prepared)
                .map(|(request, prepared)| {
                    let (owner, token) = prepared.as_ref().ok()?;
                    Some(self.allocate_in(txn, request, *owner, me.pid, token))
                })
                .collect::<Vec<_>>())
        })?;
        Ok(requests
            .iter()
            .zip(prepared)
            .zip(picked)
            .map(|((request, prepared), picked)| {
                let (_, token) = prepared?;
                let ports = picked.unwrap_or_else(|| Err(Error::invalid("not served")))?;
                Ok(Lease::new(Box::new(self.clone()), ports, token, request))
            })
            .collect())
    }

    /// Leases ports in a transaction (for this process, or one whose request it
    /// serves): the body of [`allocate`](Allocator::allocate).
    pub(crate) fn allocate_in(
        &self,
        txn: &mut Transaction<'_>,
        request: &Request,
        owner: Option<ProcessId>,
        pid: u32,
        token: &str,
    ) -> Result<Vec<u16>> {
        // Judging a lease costs parsing it, and its owner a /proc read: so the leases
        // the search meets are judged, and all of them only in a full sweep, once a
        // second per allocator and before giving up.
        let mut swept = self.sweep_due();
        if swept {
            txn.reclaim_stale();
        }
        if let (Some(limit), Some(owner)) = (request.max_per_owner, owner) {
            let held = txn.leases_of(owner);
            if held >= limit {
                return Err(Error::OwnerLimit {
                    pid: owner.pid,
                    held,
                });
            }
        }
        let candidates = request.candidates();
        let ports = loop {
            match txn.pick_ports(request, &candidates) {
                Err(Error::Exhausted { .. }) if !swept => {
                    swept = true;
                    txn.reclaim_stale();
                }
                picked => break picked?,
            }
        };
        for &port in &ports {
            let mut record = LeaseRecord {
                pid: owner.map_or(pid, |o| o.pid),
                since: txn.now(),
                timestamp: txn.now(),
                owner,
                ttl: request.effective_ttl().map(|ttl| ttl.as_secs_f64()),
                protocol: request.protocol,
                label: request.label.clone(),
                source: Some(request.source.clone()),
                token: Some(token.to_owned()),
            };
            record.restamp(txn.now());
            txn.insert_lease(port, record);
        }
        log::debug!(
            "leased {} to {} in {}",
            list_ports(&ports),
            owner.map_or("no process".to_owned(), |o| format!("pid {}", o.pid)),
            self.dir.display()
        );
        Ok(ports)
    }

    /// Ends the lease on `port`, whoever holds it (the seed's `release`). Returns
    /// whether the port was leased; releasing a port that is not is no error.
    ///
    /// # Errors
    /// [`Error::LockTimeout`] or an I/O error naming the file.
    pub fn release(&self, port: u16) -> Result<bool> {
        // By its key: judging every lease, as `release_where` does, is not needed here.
        self.transact(|txn| Ok(txn.remove_port(port)))
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
        self.transact(|txn| {
            let released = txn
                .snapshot()
                .into_iter()
                .filter(|info| matches(info))
                .collect::<Vec<_>>();
            for info in &released {
                if let Some(holder) = txn.live_holder(&info.key)
                    && !may_end(holder)
                {
                    return Err(Error::held_by(info.key.clone(), holder));
                }
            }
            for info in &released {
                txn.remove_entry(&info.key);
            }
            Ok(released)
        })
    }

    /// Ends the lease allocated under `token` (every port it holds) and nothing else;
    /// returns its ports, ascending. A lease already ended returns none, so a release
    /// retried after a lost answer cannot end a lease made since on the same port.
    ///
    /// # Errors
    /// [`Error::LockTimeout`] or an I/O error naming the file.
    pub fn release_by_token(&self, token: &str) -> Result<Vec<u16>> {
        self.transact(|txn| {
            let ports = txn.ports_of_token(token);
            txn.end_token(token);
            Ok(ports)
        })
    }

    /// Hands the leases on `ports` to the running process `pid`, recorded by pid and
    /// start time as [`Lease::transfer_to`] does, but with the TTL cleared (where
    /// `transfer_to` keeps it): from now on each lasts exactly as long as that process
    /// runs. A lease held by another live process is handed on
    /// only if `may_take` accepts that process. All of them, or, on error, none.
    ///
    /// # Errors
    /// [`Error::NoSuchProcess`], [`Error::NotLeased`], [`Error::NotPortlease`],
    /// [`Error::LeaseLost`] for a lease that has ended, [`Error::HeldByProcess`]; lock
    /// and I/O errors.
    pub fn hand_over(
        &self,
        ports: &[u16],
        pid: u32,
        may_take: impl Fn(ProcessId) -> bool,
    ) -> Result<()> {
        let to = ProcessId::of_running(pid).ok_or(Error::NoSuchProcess { pid })?;
        self.transact(|txn| {
            for &port in ports {
                let key = port.to_string();
                if let Some(holder) = txn.live_holder(&key)
                    && !(holder.pid == pid && holder.is_in_own_pid_namespace())
                    && !may_take(holder)
                {
                    return Err(Error::held_by(key, holder));
                }
            }
            Allocator::change_leases(txn, ports, None, |lease, now| {
                lease.pid = to.pid;
                lease.owner = Some(to);
                lease.ttl = None;
                lease.since = now;
            })
        })
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
        self.transact(|txn| Allocator::change_leases(txn, ports, token, change))
    }

    /// The body of [`update_leases`](Allocator::update_leases). Without a token, the
    /// error says what the port holds instead of a live lease.
    fn change_leases(
        txn: &mut Transaction<'_>,
        ports: &[u16],
        token: Option<&str>,
        change: impl Fn(&mut LeaseRecord, f64),
    ) -> Result<()> {
        for &port in ports {
            let Some(mut lease) = txn.live_lease(port, token) else {
                return Err(match (token, txn.record(&port.to_string())) {
                    (None, None) => Error::NotLeased { port },
                    (None, Some(Record::Seed { pid, .. })) => Error::NotPortlease {
                        port,
                        what: format!("a lease of the seed (pid {pid}), which only the seed ends"),
                    },
                    (None, Some(Record::Unknown)) => Error::NotPortlease {
                        port,
                        what: "an entry portlease does not understand".into(),
                    },
                    _ => Error::LeaseLost { port },
                });
            };
            change(&mut lease, txn.now());
            lease.restamp(txn.now());
            txn.update_lease(port, lease);
        }
        Ok(())
    }

    /// Ends the leases on `ports` held under `token` (a [`Lease::token`]), as the
    /// lease's own release does: posted on the request board when others wait for the
    /// lock, so it shares their transaction. A port with no entry counts as released,
    /// so a retry is harmless; a port leased to another lease meanwhile is left alone
    /// and reported as [`Error::LeaseLost`].
    ///
    /// # Errors
    /// [`Error::LeaseLost`], [`Error::LockTimeout`], or an I/O error naming the file.
    pub fn release_token(&self, ports: &[u16], token: &str) -> Result<()> {
        let op = Op::Release {
            ports: ports.to_vec(),
            token: token.to_owned(),
        };
        match submit(self, &op, ProcessId::current())? {
            Outcome::Released { lost: None } => Ok(()),
            Outcome::Released { lost: Some(port) } => Err(Error::LeaseLost { port }),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Removes the entries of `ports` held under `token`; returns the first port now
    /// held by another lease. A port with no entry at all counts as released: that
    /// makes a release done twice harmless (a request is served again when the
    /// process serving it died before it could hand out the outcome).
    pub(crate) fn release_in(txn: &mut Transaction<'_>, ports: &[u16], token: &str) -> Option<u16> {
        let mut lost = None;
        for &port in ports {
            let key = port.to_string();
            match txn.record(&key) {
                None => {}
                Some(Record::Lease(lease)) if lease.token.as_deref() == Some(token) => {
                    txn.remove_entry(&key);
                }
                Some(_) => lost = lost.or(Some(port)),
            }
        }
        lost
    }

    /// A snapshot of every entry in the registry, stale ones included (marked).
    ///
    /// # Errors
    /// [`Error::LockTimeout`] or an I/O error naming the file.
    pub fn leases(&self) -> Result<Vec<LeaseInfo>> {
        match self.transact(|txn| Ok(txn.snapshot())) {
            // A reader that cannot open the lock file (missing, or not readable to it)
            // reads without the lock: the registry is replaced atomically, so what it
            // reads is whole, if perhaps a moment old.
            Err(Error::Io { path, source, .. })
                if !self.opened.writable()
                    && path.ends_with(crate::layout::LOCK_FILE)
                    && matches!(
                        source.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                    ) =>
            {
                log::warn!(
                    "read {} without its lock ({source}): the listing may be a moment old",
                    self.dir.display()
                );
                self.in_transaction(|txn| Ok(txn.snapshot()))
            }
            result => result,
        }
    }

    /// Reclaims every stale lease (owner gone, or TTL passed) and returns them.
    ///
    /// # Errors
    /// [`Error::LockTimeout`] or an I/O error naming the file.
    pub fn gc(&self) -> Result<Vec<LeaseInfo>> {
        self.transact(|txn| Ok(txn.reclaim_stale()))
    }

    /// Whether a full sweep of owners is due (and if so, it counts as done now).
    fn sweep_due(&self) -> bool {
        let Ok(mut last) = self.last_sweep.lock() else {
            return true;
        };
        let due = last.is_none_or(|at| at.elapsed() >= SWEEP_INTERVAL);
        if due {
            *last = Some(Instant::now());
        }
        due
    }

    /// Runs `work` under the lock on the registry as it is now, then writes the
    /// registry if `work` changed it and succeeded. A failed `work` changes nothing.
    pub(crate) fn transact<T>(
        &self,
        work: impl FnOnce(&mut Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let started = Instant::now();
        let lock = self
            .lock
            .lock(self.deadline(started))?
            .ok_or_else(|| self.timed_out(started))?;
        let holding = self
            .board
            .as_ref()
            .map(|board| board.mark_holder(std::process::id()));
        // Requests a dead server left: withdrawn ones have their leases ended here.
        let orphans = self
            .board
            .as_ref()
            .map(|board| board.adopt_orphans())
            .unwrap_or_default();
        let orphan_ops: Vec<Op> = orphans
            .iter()
            .filter_map(|orphan| Op::decode(&orphan.request))
            .collect();
        let result = self.in_transaction(|txn| {
            txn.end_withdrawn(&orphan_ops);
            work(txn)
        });
        if result.is_ok()
            && let Some(board) = &self.board
        {
            for orphan in &orphans {
                board.settle(orphan);
            }
        }
        drop(holding);
        drop(lock);
        self.wake_next();
        result
    }

    /// Runs `work` on the registry as it is now, the lock being held; writes the
    /// registry if `work` changed it and succeeded.
    pub(crate) fn in_transaction<T>(
        &self,
        work: impl FnOnce(&mut Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut txn = Transaction::begin(
            &self.opened,
            self.board.as_deref(),
            &self.cursor,
            &self.cache,
        )?;
        let result = work(&mut txn)?;
        if txn.changed() && !self.opened.writable() {
            return Err(Error::ReadOnly {
                dir: self.dir.clone(),
            });
        }
        txn.commit()?;
        Ok(result)
    }

    pub(crate) fn timed_out(&self, started: Instant) -> Error {
        Error::LockTimeout {
            dir: self.dir.clone(),
            waited: started.elapsed(),
        }
    }

    /// The error for an outcome of another kind than the request asked for.
    fn unexpected(&self, outcome: &Outcome) -> Error {
        Error::io(
            "got an outcome of another kind than asked for, in",
            &self.dir,
            std::io::Error::other(format!("{outcome:?}")),
        )
    }

    /// Does `op` in the transaction; an error of the request alone is its outcome.
    /// A request read from the board is validated again, as its poster did.
    fn perform(&self, txn: &mut Transaction<'_>, op: &Op) -> Result<Outcome> {
        match op {
            Op::Allocate {
                request,
                owner,
                pid,
                token,
            } => {
                request.validate()?;
                self.allocate_in(txn, request, *owner, *pid, token)
                    .map(Outcome::Allocated)
            }
            Op::Release { ports, token } => Ok(Outcome::Released {
                lost: Allocator::release_in(txn, ports, token),
            }),
        }
    }

    /// Does `op`, which may have been done already (by a server that died, or on a
    /// board that went away): an allocation whose leases are in the registry gets
    /// them back; a release finds its ports released.
    fn perform_again(&self, txn: &mut Transaction<'_>, op: &Op) -> Result<Outcome> {
        match op {
            Op::Allocate { token, .. } => {
                let done = txn.ports_of_token(token);
                if done.is_empty() {
                    self.perform(txn, op)
                } else {
                    Ok(Outcome::Allocated(done))
                }
            }
            Op::Release { ports, token } => {
                Allocator::release_in(txn, ports, token);
                Ok(Outcome::Released { lost: None })
            }
        }
    }
}

impl LeaseKeeper for Allocator {
    #[cfg(feature = "tokio")]
    fn dir(&self) -> &Path {
        &self.dir
    }

    fn release_token(&self, ports: &[u16], token: &str) -> Result<()> {
        Allocator::release_token(self, ports, token)
    }

    fn renew_matching(
        &self,
        ports: &[u16],
        token: Option<&str>,
        ttl: Option<Duration>,
    ) -> Result<()> {
        Allocator::renew_matching(self, ports, token, ttl)
    }

    fn update_leases(
        &self,
        ports: &[u16],
        token: Option<&str>,
        change: &dyn Fn(&mut LeaseRecord, f64),
    ) -> Result<()> {
        Allocator::update_leases(self, ports, token, change)
    }
}

impl Ledger for Allocator {
    fn lock_site(&self) -> &LockSite {
        &self.lock
    }

    fn board(&self) -> Option<&Arc<Board>> {
        self.board.as_ref()
    }

    fn deadline(&self, started: Instant) -> Instant {
        deadline_after(started, self.lock_timeout)
    }

    fn timed_out(&self, started: Instant) -> Error {
        Allocator::timed_out(self, started)
    }

    fn serve(
        &self,
        requests: &[Served],
        orphans: &[Op],
        wanted: &dyn Fn(usize) -> bool,
    ) -> Result<Vec<Result<Outcome>>> {
        self.in_transaction(|txn| {
            txn.end_withdrawn(orphans);
            let results: Vec<Result<Outcome>> = requests
                .iter()
                .map(|served| match &served.op {
                    Some(op) if served.again => self.perform_again(txn, op),
                    Some(op) => self.perform(txn, op),
                    None => Err(Error::invalid("a request on the board that cannot be read")),
                })
                .collect();
            // Just before saving: a request its poster gave up on is left out.
            for (i, (served, result)) in requests.iter().zip(&results).enumerate() {
                if let (Some(op @ Op::Allocate { .. }), Ok(_)) = (&served.op, result)
                    && !wanted(i)
                {
                    txn.end_withdrawn(std::slice::from_ref(op));
                }
            }
            Ok(results)
        })
    }

    fn end_tokens(&self, tokens: &[&str]) -> Result<()> {
        self.in_transaction(|txn| {
            for token in tokens {
                txn.end_token(token);
            }
            Ok(())
        })
    }

    fn alone(&self, op: &Op, again: bool) -> Result<Outcome> {
        self.transact(|txn| {
            if again {
                self.perform_again(txn, op)
            } else {
                self.perform(txn, op)
            }
        })
    }
}

/// Ports as people write them: "30001, 30002".
fn list_ports(ports: &[u16]) -> String {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    ports.join(", ")
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
