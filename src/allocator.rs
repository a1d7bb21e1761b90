//! The lease lifecycle: every operation is one transaction under the registry lock
//! that reads the registry once and writes it at most once.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::batch::{Op, Outcome};
use crate::board::Board;
use crate::directory;
use crate::error::{Error, Result};
use crate::lease::Lease;
use crate::lock::LockSite;
use crate::probe::{ephemeral_port_range, is_port_free};
use crate::process::{LivenessCache, ProcessId};

use crate::record::{LeaseRecord, Record, port_of_key};
use crate::registry::{Entry, Registry};
use crate::request::{Owner, Request, check_ttl};
use crate::snapshot::LeaseInfo;

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
    lock_timeout: Duration,
    /// The lock file, kept open and shared by clones.
    lock: Arc<LockSite>,
    /// The request board, mapped once and shared by clones; `None` where there is none.
    board: Option<Arc<Board>>,
    /// When this allocator (or a clone) last looked up every lease's owner.
    last_sweep: Arc<Mutex<Option<Instant>>>,
}

/// One transaction's view of the registry.
pub(crate) struct Transaction<'a> {
    pub(crate) registry: Registry,
    pub(crate) now: f64,
    pub(crate) liveness: LivenessCache,
    board: Option<&'a Board>,
    dir: &'a Path,
    /// Set by whatever changes the registry: only then is it written.
    pub(crate) changed: bool,
    /// Keys that are not a port in plain decimal, with their port: found once.
    odd_keys: Option<Vec<(u16, String)>>,
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
    /// # Errors
    /// When the directory cannot be created, is not a directory, is owned by another
    /// user, or is writable by group or others.
    pub fn with_dir(dir: impl Into<PathBuf>) -> Result<Allocator> {
        let dir = dir.into();
        directory::prepare(&dir)?;
        Ok(Allocator {
            lock: Arc::new(LockSite::new(&dir)),
            board: Board::open(&dir).map(Arc::new),
            dir,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            last_sweep: Arc::default(),
        })
    }

    /// How long to wait for the registry lock before failing with
    /// [`Error::LockTimeout`] (default 30 s).
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
    /// handed out again at once). A port is free when no live lease holds it and it
    /// can be bound. Stale leases are reclaimed on the way.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`], [`Error::NoSuchProcess`] for an owner that does not
    /// run, [`Error::Exhausted`], [`Error::OwnerLimit`], [`Error::LockTimeout`], or an
    /// I/O error naming the file. On error the registry is unchanged.
    pub fn allocate(&self, request: &Request) -> Result<Lease> {
        request.validate()?;
        warn_if_ephemeral(request.ranges());
        let owner = match request.owner {
            Owner::CurrentProcess => Some(ProcessId::current()),
            Owner::Process(pid) => {
                Some(ProcessId::of_running(pid).ok_or(Error::NoSuchProcess { pid })?)
            }
            Owner::Nobody => None,
        };
        let token = new_token();
        let op = Op::Allocate {
            request: request.clone(),
            owner,
            pid: std::process::id(),
            token: token.clone(),
        };
        match self.submit(op)? {
            Outcome::Allocated(ports) => Ok(Lease::new(self.clone(), ports, token, request)),
            other => Err(other.into_error(&self.dir)),
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
        let prepared: Vec<Result<(Option<ProcessId>, String)>> = requests
            .iter()
            .map(|request| {
                request.validate()?;
                warn_if_ephemeral(request.ranges());
                let owner = match request.owner {
                    Owner::CurrentProcess => Some(ProcessId::current()),
                    Owner::Process(pid) => {
                        Some(ProcessId::of_running(pid).ok_or(Error::NoSuchProcess { pid })?)
                    }
                    Owner::Nobody => None,
                };
                Ok((owner, new_token()))
            })
            .collect();
        let picked = self.transact(|txn| {
            Ok(requests
                .iter()
                .zip(&prepared)
                .map(|(request, prepared)| {
                    let (owner, token) = prepared.as_ref().ok()?;
                    Some(self.allocate_in(txn, request, *owner, std::process::id(), token))
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
                Ok(Lease::new(self.clone(), ports, token, request))
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
            let record = LeaseRecord {
                pid: owner.map_or(pid, |o| o.pid),
                timestamp: txn.now,
                owner,
                ttl: request.ttl.map(|ttl| ttl.as_secs_f64()),
                protocol: request.protocol,
                label: request.label.clone(),
                source: Some(request.source.clone()),
                token: Some(token.to_owned()),
            };
            txn.registry
                .entries
                .insert(port.to_string(), Entry::new(record));
        }
        if let (Some(&last), Some(board)) = (ports.last(), txn.board) {
            board.set_cursor(last);
        }
        txn.changed = true;
        log::debug!("leased {ports:?} to {owner:?} in {}", self.dir.display());
        Ok(ports)
    }

    /// Ends the lease on `port`, whoever holds it (the seed's `release`). Returns
    /// whether the port was leased; releasing a port that is not is no error.
    ///
    /// # Errors
    /// [`Error::LockTimeout`] or an I/O error naming the file.
    pub fn release(&self, port: u16) -> Result<bool> {
        Ok(!self
            .release_where(|info| info.port == Some(port))?
            .is_empty())
    }

    /// Ends every lease for which `matches` is true (say, all with one label or one
    /// owner pid); returns what it ended.
    ///
    /// # Errors
    /// [`Error::LockTimeout`] or an I/O error naming the file.
    pub fn release_where(&self, matches: impl Fn(&LeaseInfo) -> bool) -> Result<Vec<LeaseInfo>> {
        self.transact(|txn| {
            let released = txn
                .snapshot()
                .into_iter()
                .filter(|info| matches(info))
                .collect::<Vec<_>>();
            for info in &released {
                txn.registry.entries.remove(&info.key);
            }
            txn.changed = !released.is_empty();
            Ok(released)
        })
    }

    /// Renews the lease on `port`: its time starts again from now, with `ttl` as its
    /// new lifetime, or the lifetime it had (`None`). Refreshes the `timestamp` the
    /// seed judges leases by, too.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] when the port holds no live portlease lease,
    /// [`Error::InvalidRequest`] for a TTL of 0.
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
            lease.timestamp = now;
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
        self.transact(|txn| {
            for &port in ports {
                let key = port.to_string();
                let Some(entry) = txn.registry.entries.get_mut(&key) else {
                    return Err(Error::LeaseLost { port });
                };
                let mut lease = match entry.record() {
                    Record::Lease(lease)
                        if token.is_none_or(|t| lease.token.as_deref() == Some(t))
                            && !lease.is_stale(txn.now, &mut txn.liveness) =>
                    {
                        lease.clone()
                    }
                    _ => return Err(Error::LeaseLost { port }),
                };
                change(&mut lease, txn.now);
                entry.update(lease);
            }
            txn.changed = true;
            Ok(())
        })
    }

    /// Ends the leases on `ports` held under `token`; a port leased to another lease
    /// meanwhile is left alone and reported as [`Error::LeaseLost`].
    pub(crate) fn release_token(&self, ports: &[u16], token: &str) -> Result<()> {
        let op = Op::Release {
            ports: ports.to_vec(),
            token: token.to_owned(),
        };
        match self.submit(op)? {
            Outcome::Released { lost: None } => Ok(()),
            Outcome::Released { lost: Some(port) } => Err(Error::LeaseLost { port }),
            other => Err(other.into_error(&self.dir)),
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
            match txn.registry.entries.get(&key).map(Entry::record) {
                None => {}
                Some(Record::Lease(lease)) if lease.token.as_deref() == Some(token) => {
                    txn.registry.entries.remove(&key);
                    txn.changed = true;
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
        self.transact(|txn| Ok(txn.snapshot()))
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
            .lock(started + self.lock_timeout)?
            .ok_or_else(|| self.timed_out(started))?;
        let holding = self
            .board
            .as_ref()
            .map(|board| board.mark_holder(std::process::id()));
        let result = self.in_transaction(work);
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
        let registry = Registry::load(&self.dir)?;
        let mut txn = Transaction {
            // A salvaged registry is written back at once, its original kept aside.
            changed: registry.was_damaged(),
            registry,
            now: unix_now(),
            liveness: LivenessCache::default(),
            board: self.board.as_deref(),
            dir: &self.dir,
            odd_keys: None,
        };
        let result = work(&mut txn)?;
        if txn.changed {
            txn.registry.save(txn.dir)?;
        }
        Ok(result)
    }

    pub(crate) fn timed_out(&self, started: Instant) -> Error {
        Error::LockTimeout {
            dir: self.dir.clone(),
            waited: started.elapsed(),
        }
    }

    /// After the lock is released: wakes a poster still waiting to be served.
    pub(crate) fn wake_next(&self) {
        if let Some(board) = &self.board {
            board.wake_one_posted();
        }
    }

    pub(crate) fn lock_site(&self) -> &LockSite {
        &self.lock
    }

    pub(crate) fn board(&self) -> Option<&Arc<Board>> {
        self.board.as_ref()
    }

    pub(crate) fn deadline(&self, started: Instant) -> Instant {
        started + self.lock_timeout
    }
}

impl Transaction<'_> {
    /// Every entry, described.
    pub(crate) fn snapshot(&mut self) -> Vec<LeaseInfo> {
        let mut infos: Vec<LeaseInfo> = self
            .registry
            .entries
            .iter()
            .map(|(key, entry)| {
                LeaseInfo::describe(key, entry.record(), self.now, &mut self.liveness)
            })
            .collect();
        infos.sort_by_key(|info| (info.port.is_none(), info.port, info.key.clone()));
        infos
    }

    /// Removes every stale entry and returns what it removed.
    pub(crate) fn reclaim_stale(&mut self) -> Vec<LeaseInfo> {
        let stale: Vec<LeaseInfo> = self
            .snapshot()
            .into_iter()
            .filter(|info| info.stale)
            .collect();
        self.remove(&stale);
        stale
    }

    /// Chooses ports for `request` among `candidates`. A port whose every lease is
    /// stale counts as free, and those leases are removed on the way.
    fn pick_ports(&mut self, request: &Request, candidates: &[u16]) -> Result<Vec<u16>> {
        // Entries are found by their key, the port in decimal; the few keys written
        // otherwise (" 8080", "08080") are listed once per transaction.
        let odd_keys: &Vec<(u16, String)> = self.odd_keys.get_or_insert_with(|| {
            self.registry
                .entries
                .keys()
                .filter_map(|key| port_of_key(key).map(|port| (port, key.clone())))
                .filter(|(port, key)| port.to_string() != *key)
                .collect()
        });
        let entries = &self.registry.entries;
        let (now, liveness) = (self.now, &mut self.liveness);
        let mut stale_met = Vec::new();
        let mut usable = |port: u16| -> Result<bool> {
            let canonical = port.to_string();
            let keys = std::iter::once(&canonical).chain(
                odd_keys
                    .iter()
                    .filter(|(p, _)| *p == port)
                    .map(|(_, key)| key),
            );
            let met: Vec<(&String, &Entry)> = keys
                .filter_map(|key| entries.get_key_value(key.as_str()))
                .collect();
            if met
                .iter()
                .any(|(_, entry)| !entry.record().is_stale(now, liveness))
            {
                return Ok(false);
            }
            stale_met.extend(met.iter().map(|(key, _)| key.to_string()));
            is_port_free(port, request.protocol, request.host)
        };
        let picked = pick(
            request,
            candidates,
            self.board.and_then(Board::cursor),
            &mut usable,
        );
        for key in stale_met {
            if self.registry.entries.remove(&key).is_some() {
                log::info!("reclaimed the stale lease on {key}");
                self.changed = true;
            }
        }
        picked
    }

    fn remove(&mut self, stale: &[LeaseInfo]) {
        for info in stale {
            self.registry.entries.remove(&info.key);
            log::info!(
                "reclaimed the stale lease on {} (pid {:?})",
                info.key,
                info.pid
            );
        }
        self.changed |= !stale.is_empty();
    }

    /// The ports leased under `token`, ascending.
    pub(crate) fn ports_of_token(&self, token: &str) -> Vec<u16> {
        self.registry
            .entries
            .iter()
            .filter(|(_, entry)| matches!(entry.record(), Record::Lease(lease) if lease.token.as_deref() == Some(token)))
            .filter_map(|(key, _)| port_of_key(key))
            .collect()
    }

    /// How many live-or-not leases `owner` (this very process) holds.
    fn leases_of(&self, owner: ProcessId) -> usize {
        self.registry
            .entries
            .values()
            .filter(
                |entry| matches!(entry.record(), Record::Lease(lease) if lease.owner == Some(owner)),
            )
            .count()
    }
}

/// Chooses the ports: the preferred one first, then next-fit through the candidates
/// from just after `cursor`, wrapping around.
fn pick(
    request: &Request,
    candidates: &[u16],
    cursor: Option<u16>,
    usable: &mut impl FnMut(u16) -> Result<bool>,
) -> Result<Vec<u16>> {
    let count = request.count;
    if let Some(preferred) = request.preferred.filter(|p| !request.excluded.contains(p)) {
        if request.block {
            let block = preferred
                .checked_add(count as u16 - 1)
                .map(|last| preferred..=last);
            if let Some(block) = block
                && block.clone().all(|p| !request.excluded.contains(&p))
                && all_usable(block.clone(), usable)?
            {
                return Ok(block.collect());
            }
        } else if usable(preferred)? {
            let mut ports = vec![preferred];
            next_fit(candidates, cursor, |port| {
                if ports.len() < count && port != preferred && usable(port)? {
                    ports.push(port);
                }
                Ok(ports.len() == count)
            })?;
            if ports.len() == count {
                return Ok(ports);
            }
        }
    }
    let mut ports = Vec::with_capacity(count);
    if request.block {
        next_fit(candidates, cursor, |start| {
            let Some(index) = candidates.binary_search(&start).ok() else {
                return Ok(false);
            };
            let fits = candidates.get(index + count - 1) == Some(&(start + (count as u16 - 1)));
            if fits && all_usable(start..=start + (count as u16 - 1), usable)? {
                ports.extend(start..=start + (count as u16 - 1));
                return Ok(true);
            }
            Ok(false)
        })?;
    } else {
        next_fit(candidates, cursor, |port| {
            if usable(port)? {
                ports.push(port);
            }
            Ok(ports.len() == count)
        })?;
    }
    if ports.len() == count {
        return Ok(ports);
    }
    Err(Error::Exhausted {
        wanted: match (count, request.block) {
            (1, _) => "port".into(),
            (n, true) => format!("block of {n} consecutive ports"),
            (n, false) => format!("{n} ports"),
        },
        ranges: request.describe_ranges(),
    })
}

/// Visits the candidates from the first one after `cursor`, wrapping around, until
/// `visit` returns true.
fn next_fit(
    candidates: &[u16],
    cursor: Option<u16>,
    mut visit: impl FnMut(u16) -> Result<bool>,
) -> Result<()> {
    let start = cursor.map_or(0, |c| candidates.partition_point(|&p| p <= c));
    for &port in candidates[start..].iter().chain(&candidates[..start]) {
        if visit(port)? {
            break;
        }
    }
    Ok(())
}

fn all_usable(
    ports: RangeInclusive<u16>,
    usable: &mut impl FnMut(u16) -> Result<bool>,
) -> Result<bool> {
    for port in ports {
        if !usable(port)? {
            return Ok(false);
        }
    }
    Ok(true)
}

pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A token unique to one allocation: pid, time and a counter.
fn new_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:x}-{:x}-{:x}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
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
