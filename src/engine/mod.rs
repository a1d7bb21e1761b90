//! The engine: what one registry directory needs (the directory opened once, its
//! lock, its request board, the next-fit cursor, the registry cache, the sweep clock,
//! the lock timeout) and the one way to run an operation in a transaction under the
//! lock. Requests whose server died, or whose poster withdrew them from a server that
//! then died (the board's orphans), are settled here, by [`Locked`], whoever takes
//! the lock. What each operation does to the registry is in [`execute`].
//!
//! Above it: the allocator (the public facade) and `batch` (the board's poster and
//! server sides), which call it; it calls nothing above it.

mod execute;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::board::wire::{Op, Outcome};
use crate::board::{Board, HolderMark, Orphan};
use crate::directory::RegistryDir;
use crate::error::{Error, Result};
use crate::lock::{LockSite, RegistryLock, deadline_after};
use crate::process::ProcessId;
use crate::record::{LeaseRecord, Tenure};
use crate::registry_cache::RegistryCache;
use crate::snapshot::LeaseInfo;
use crate::transaction::Transaction;

/// One registry directory's engine. Cheap to clone: clones share everything but the
/// lock timeout, which each handle sets for itself.
#[derive(Debug, Clone)]
pub(crate) struct Engine {
    shared: Arc<Shared>,
    lock_timeout: Duration,
}

/// What every handle on one directory shares.
#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    /// The directory, opened once; every file is opened relative to it.
    opened: Arc<RegistryDir>,
    /// The lock file, kept open.
    lock: LockSite,
    /// The request board, mapped once; `None` where there is none.
    board: Option<Arc<Board>>,
    /// The last port handed out through this engine: next-fit's cursor where there is
    /// no board (the board keeps one for the whole host).
    cursor: AtomicU32,
    /// When this engine last looked up every lease's owner.
    last_sweep: Mutex<Option<Instant>>,
    /// The registry as the last transaction left it, with its file's bytes: the next
    /// transaction uses it only if it reads exactly those bytes.
    cache: RegistryCache,
}

/// A request taken from the board, still to serve.
pub(crate) struct Pending {
    /// `None` for bytes that were no request: it fails.
    pub(crate) op: Option<Op>,
    /// Posted again after its server died: it may have been done already.
    pub(crate) retried: bool,
}

/// The registry lock, held by this process, with the board told so (a poster then
/// waits to be woken rather than blocking on the `flock`) and the orphans dead servers
/// left adopted: the first transaction run through it ends what was saved for them.
pub(crate) struct Locked<'e> {
    engine: &'e Engine,
    /// Dropped before the lock: the board stops naming this process the holder first.
    holding: Option<HolderMark<'e>>,
    lock: RegistryLock<'e>,
    /// Orphans adopted, until a transaction ends their leases.
    orphans: Vec<Orphan>,
    /// Orphans whose leases a saved transaction ended, to free on the board.
    ended: Vec<Orphan>,
}

impl Engine {
    /// The engine of the registry in `dir`, opened as `opened`, with its `board`,
    /// waiting `lock_timeout` for the lock.
    pub(crate) fn from_parts(
        dir: PathBuf,
        opened: Arc<RegistryDir>,
        board: Option<Arc<Board>>,
        lock_timeout: Duration,
    ) -> Engine {
        Engine {
            shared: Arc::new(Shared {
                lock: LockSite::new(Arc::clone(&opened)),
                board,
                dir,
                opened,
                cursor: AtomicU32::default(),
                last_sweep: Mutex::default(),
                cache: RegistryCache::default(),
            }),
            lock_timeout,
        }
    }

    /// This engine, waiting `timeout` for the lock.
    pub(crate) fn with_lock_timeout(mut self, timeout: Duration) -> Engine {
        self.lock_timeout = timeout;
        self
    }

    /// The registry directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.shared.dir
    }

    pub(crate) fn lock_site(&self) -> &LockSite {
        &self.shared.lock
    }

    /// The request board, where there is one.
    pub(crate) fn board(&self) -> Option<&Arc<Board>> {
        self.shared.board.as_ref()
    }

    /// When a wait that starts at `started` gives up.
    pub(crate) fn deadline(&self, started: Instant) -> Instant {
        deadline_after(started, self.lock_timeout)
    }

    /// The error of a wait for the lock, started at `started`, that gave up.
    pub(crate) fn timed_out(&self, started: Instant) -> Error {
        Error::LockTimeout {
            dir: self.shared.dir.clone(),
            waited: started.elapsed(),
        }
    }

    /// After the lock is released: wakes a poster still waiting to be served.
    pub(crate) fn wake_next(&self) {
        if let Some(board) = self.board() {
            board.wake_one_posted();
        }
    }

    /// Takes over `lock`, held by process `me`: marks it the board's holder and adopts
    /// the orphans dead servers left there (requests taken by a server that died are
    /// posted again, to be taken by whoever serves posted requests).
    pub(crate) fn locked<'e>(&'e self, lock: RegistryLock<'e>, me: u32) -> Locked<'e> {
        let board = self.board();
        Locked {
            engine: self,
            holding: board.map(|board| board.mark_holder(me)),
            lock,
            orphans: board.map(|board| board.adopt_orphans()).unwrap_or_default(),
            ended: Vec::new(),
        }
    }

    /// Runs `work` under the lock on the registry as it is now, then writes the
    /// registry if `work` changed it and succeeded. A failed `work` changes nothing.
    /// Posted requests are left to the next holder, whom it wakes.
    pub(crate) fn transact<T>(
        &self,
        work: impl FnOnce(&mut Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let started = Instant::now();
        let lock = self
            .shared
            .lock
            .lock(self.deadline(started))?
            .ok_or_else(|| self.timed_out(started))?;
        let mut locked = self.locked(lock, std::process::id());
        let result = locked.transact(work);
        if result.is_ok() {
            locked.settle_orphans();
        }
        locked.unlock();
        self.wake_next();
        result
    }

    /// Reads the registry as it is now, runs `work` on it and writes it if `work`
    /// changed it and succeeded. The caller holds the lock (or, only reading, knows
    /// it reads without it).
    fn read_modify_write<T>(
        &self,
        work: impl FnOnce(&mut Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let shared = &*self.shared;
        let mut txn = Transaction::begin(
            &shared.opened,
            shared.board.as_deref(),
            &shared.cursor,
            &shared.cache,
        )?;
        let result = work(&mut txn)?;
        if txn.changed() && !shared.opened.writable() {
            return Err(Error::ReadOnly {
                dir: shared.dir.clone(),
            });
        }
        txn.commit()?;
        Ok(result)
    }

    /// Does `op` in a transaction of its own, without posting it; `retried` when it
    /// may have been done already (then it is done by its token, idempotently).
    pub(crate) fn run_unposted(&self, op: &Op, retried: bool) -> Result<Outcome> {
        self.transact(|txn| {
            if retried {
                self.execute_again(txn, op)
            } else {
                self.execute(txn, op)
            }
        })
    }

    /// Does each of `ops` in one transaction, in order, each succeeding or failing
    /// on its own; the outer error fails them all and changes nothing.
    pub(crate) fn run_each(&self, ops: &[Op]) -> Result<Vec<Result<Outcome>>> {
        self.transact(|txn| Ok(ops.iter().map(|op| self.execute(txn, op)).collect()))
    }

    /// Ends the lease on `port`, whoever holds it; whether there was one.
    pub(crate) fn release_port(&self, port: u16) -> Result<bool> {
        // By its key: judging every lease, as `release_where` does, is not needed here.
        self.transact(|txn| Ok(txn.remove_port(port)))
    }

    /// Ends every lease `matches` picks, unless a live holder of one is one `may_end`
    /// refuses (then none); returns what it ended.
    pub(crate) fn release_where(
        &self,
        matches: impl Fn(&LeaseInfo) -> bool,
        may_end: impl Fn(ProcessId) -> bool,
    ) -> Result<Vec<LeaseInfo>> {
        self.transact(|txn| execute::release_where(txn, matches, may_end))
    }

    /// Ends the lease allocated under `token`; returns its ports, ascending.
    pub(crate) fn release_by_token(&self, token: &str) -> Result<Vec<u16>> {
        self.transact(|txn| {
            let ports = txn.ports_of_token(token);
            txn.end_token(token);
            Ok(ports)
        })
    }

    /// Hands the leases on `ports` (held under `token`, when given) to the running
    /// process `to`, their TTL cleared; a lease held by another live process only if
    /// `may_take` accepts it. Returns what each held before.
    pub(crate) fn hand_to(
        &self,
        ports: &[u16],
        token: Option<&str>,
        to: ProcessId,
        may_take: impl Fn(ProcessId) -> bool,
    ) -> Result<Vec<Tenure>> {
        self.transact(|txn| execute::hand_to(txn, ports, token, to, may_take))
    }

    /// Puts back on the leases held under `token` what they held before a hand-over,
    /// even where the process they were handed to has ended since.
    pub(crate) fn restore(&self, token: &str, before: &[Tenure]) -> Result<()> {
        self.transact(|txn| execute::restore(txn, token, before))
    }

    /// Changes the live leases on `ports` (held under `token`, when given) with
    /// `change`, in one transaction; fails with [`Error::LeaseLost`] if any is gone.
    pub(crate) fn change_leases(
        &self,
        ports: &[u16],
        token: Option<&str>,
        change: impl Fn(&mut LeaseRecord, f64),
    ) -> Result<()> {
        self.transact(|txn| execute::change_leases(txn, ports, token, change))
    }

    /// Every entry in the registry, stale ones included (marked).
    pub(crate) fn snapshot(&self) -> Result<Vec<LeaseInfo>> {
        self.transact(|txn| Ok(txn.snapshot()))
    }

    /// Every entry, read without the lock: for a reader that cannot open the lock
    /// file. The registry is replaced atomically, so what it reads is whole.
    pub(crate) fn snapshot_unlocked(&self) -> Result<Vec<LeaseInfo>> {
        self.read_modify_write(|txn| Ok(txn.snapshot()))
    }

    /// Whether this engine may write its directory.
    pub(crate) fn writable(&self) -> bool {
        self.shared.opened.writable()
    }

    /// Reclaims every stale lease and returns them.
    pub(crate) fn gc(&self) -> Result<Vec<LeaseInfo>> {
        self.transact(|txn| Ok(txn.reclaim_stale()))
    }
}

impl Locked<'_> {
    /// Runs `work` in a transaction, the lock being held; the first one also ends the
    /// leases saved for the orphans adopted (withdrawn requests, and requests whose
    /// server and poster both died), so they are ended exactly when that one saves.
    pub(crate) fn transact<T>(
        &mut self,
        work: impl FnOnce(&mut Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let orphans = std::mem::take(&mut self.orphans);
        let result = self.engine.read_modify_write(|txn| {
            for orphan in &orphans {
                // A release withdrawn stays done; an allocation's leases end.
                if let Some(Op::Allocate { token, .. }) = Op::decode(&orphan.request) {
                    txn.end_token(&token);
                }
            }
            work(txn)
        });
        if result.is_ok() {
            self.ended.extend(orphans);
        }
        // A failed transaction leaves the orphans as they were, for the next holder.
        result
    }

    /// Whether orphans wait for a transaction to end their leases.
    pub(crate) fn has_orphans(&self) -> bool {
        !self.orphans.is_empty()
    }

    /// Frees on the board the orphans whose leases a saved transaction ended.
    pub(crate) fn settle_orphans(&mut self) {
        if let Some(board) = self.engine.board() {
            for orphan in self.ended.drain(..) {
                board.settle(&orphan);
            }
        }
    }

    /// Serves `requests` taken from the board in one transaction. Just before saving,
    /// leaves out (undoes) the allocations for which `wanted` is false by then.
    pub(crate) fn serve(
        &mut self,
        requests: &[Pending],
        wanted: &dyn Fn(usize) -> bool,
    ) -> Result<Vec<Result<Outcome>>> {
        let engine = self.engine;
        self.transact(|txn| {
            let results: Vec<Result<Outcome>> = requests
                .iter()
                .map(|pending| match &pending.op {
                    Some(op) if pending.retried => engine.execute_again(txn, op),
                    Some(op) => engine.execute(txn, op),
                    None => Err(Error::invalid("a request on the board that cannot be read")),
                })
                .collect();
            // Just before saving: a request its poster gave up on is left out.
            for (i, (pending, result)) in requests.iter().zip(&results).enumerate() {
                if let (Some(Op::Allocate { token, .. }), Ok(_)) = (&pending.op, result)
                    && !wanted(i)
                {
                    txn.end_token(token);
                }
            }
            Ok(results)
        })
    }

    /// Ends the leases saved under `tokens`, in a transaction of their own.
    pub(crate) fn end_tokens(&mut self, tokens: &[&str]) -> Result<()> {
        self.transact(|txn| {
            for token in tokens {
                txn.end_token(token);
            }
            Ok(())
        })
    }

    /// Lets go of the lock (the board first stops naming this process its holder).
    /// Waking the next poster is the caller's, once it woke its own.
    pub(crate) fn unlock(self) {
        let Locked { holding, lock, .. } = self;
        drop(holding);
        drop(lock);
    }
}
