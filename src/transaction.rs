//! One transaction's view of the registry: read once under the lock, changed only
//! through methods that mark it changed, and written back (once) only then.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::board::Board;
use crate::directory::RegistryDir;
use crate::error::{Error, Result};
use crate::pick::{Candidates, pick};
use crate::probe::is_port_free;
use crate::process::{LivenessCache, ProcessId};
use crate::record::{LeaseRecord, Record, port_of_key, unix_now};
use crate::registry::{Entry, Registry};
use crate::registry_cache::RegistryCache;
use crate::request::Request;
use crate::snapshot::LeaseInfo;

/// One transaction's view of the registry. Its fields are its own: whatever changes
/// the registry goes through a method that marks it changed, so nothing changed is
/// left unwritten (a salvaged registry included).
pub(crate) struct Transaction<'a> {
    registry: Registry,
    /// The bytes the registry was read from.
    read: Vec<u8>,
    /// Where the registry goes once the transaction ends well, for the next one.
    cache: &'a RegistryCache,
    now: f64,
    liveness: LivenessCache,
    /// The request board, whose next-fit cursor is shared host-wide.
    board: Option<&'a Board>,
    /// The allocator's own next-fit cursor (shared by its clones): the one used where
    /// there is no board, so allocation stays next-fit without one.
    cursor: &'a AtomicU32,
    dir: &'a RegistryDir,
    /// Set by whatever changes the registry: only then is it written.
    changed: bool,
    /// Keys that are not a port in plain decimal, with their port: found once.
    odd_keys: Option<Vec<(u16, String)>>,
}

impl<'a> Transaction<'a> {
    /// Reads the registry in `dir` as it is now (the lock being held). A damaged
    /// registry is marked to be written back at once with its salvage, its original
    /// kept aside, unless `dir` is only read.
    /// The registry `cache` kept is used if it was kept with exactly the bytes read.
    pub(crate) fn begin(
        dir: &'a RegistryDir,
        board: Option<&'a Board>,
        cursor: &'a AtomicU32,
        cache: &'a RegistryCache,
    ) -> Result<Transaction<'a>> {
        let mut read = cache.buffer();
        Registry::read_bytes(dir, &mut read)?;
        let registry = cache.registry_of(&read, dir);
        Ok(Transaction {
            changed: registry.was_damaged() && dir.writable(),
            registry,
            read,
            cache,
            now: unix_now(),
            liveness: LivenessCache::default(),
            board,
            cursor,
            dir,
            odd_keys: None,
        })
    }

    /// Whether anything changed the registry: then [`commit`](Transaction::commit)
    /// writes it.
    pub(crate) fn changed(&self) -> bool {
        self.changed
    }

    /// Writes the registry if it changed, and keeps it for the next transaction with
    /// the bytes its file now holds.
    pub(crate) fn commit(mut self) -> Result<()> {
        let bytes = if self.changed {
            self.registry.save(self.dir, self.read)?
        } else {
            self.read
        };
        self.cache.keep(bytes, self.registry);
        Ok(())
    }

    /// The time the transaction judges leases by (seconds since the epoch).
    pub(crate) fn now(&self) -> f64 {
        self.now
    }

    /// What the entry under `key` says.
    pub(crate) fn record(&self, key: &str) -> Option<&Record> {
        self.registry.entries.get(key).map(Entry::record)
    }

    /// Leases `port` as `lease` says, replacing whatever entry it had.
    pub(crate) fn insert_lease(&mut self, port: u16, lease: LeaseRecord) {
        self.registry
            .entries
            .insert(port.to_string(), Entry::new(lease));
        self.changed = true;
    }

    /// Removes the entry under `key`; returns whether there was one.
    pub(crate) fn remove_entry(&mut self, key: &str) -> bool {
        let removed = self.registry.entries.remove(key).is_some();
        self.changed |= removed;
        removed
    }

    /// Removes every entry on `port` (under its key, or a key written otherwise, such
    /// as "08080"); returns whether there was one.
    pub(crate) fn remove_port(&mut self, port: u16) -> bool {
        let keys: Vec<String> = self
            .registry
            .entries
            .keys()
            .filter(|key| port_of_key(key) == Some(port))
            .cloned()
            .collect();
        let mut removed = false;
        for key in keys {
            removed |= self.remove_entry(&key);
        }
        removed
    }

    /// The live portlease lease on `port` (held under `token`, when given), to change
    /// and hand to [`update_lease`](Transaction::update_lease).
    pub(crate) fn live_lease(&mut self, port: u16, token: Option<&str>) -> Option<LeaseRecord> {
        match self.registry.entries.get(&port.to_string())?.record() {
            Record::Lease(lease)
                if token.is_none_or(|t| lease.token.as_deref() == Some(t))
                    && !lease.is_stale(self.now, &mut self.liveness) =>
            {
                Some(lease.clone())
            }
            _ => None,
        }
    }

    /// Rewrites the lease on `port` with `lease`, keeping the fields portlease does
    /// not know; returns whether the port had an entry.
    pub(crate) fn update_lease(&mut self, port: u16, lease: LeaseRecord) -> bool {
        let Some(entry) = self.registry.entries.get_mut(&port.to_string()) else {
            return false;
        };
        entry.update(lease);
        self.changed = true;
        true
    }

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

    /// Removes every stale entry and returns what it removed; moves on the seed's
    /// `timestamp` of the live leases that need it.
    pub(crate) fn reclaim_stale(&mut self) -> Vec<LeaseInfo> {
        let (stale, live): (Vec<LeaseInfo>, Vec<LeaseInfo>) =
            self.snapshot().into_iter().partition(|info| info.stale);
        self.remove(&stale);
        self.restamp(live.into_iter().map(|info| info.key));
        stale
    }

    /// Moves the seed's `timestamp` ahead on these live leases where it is due, so the
    /// seed never reclaims a lease whose owner runs.
    fn restamp(&mut self, keys: impl IntoIterator<Item = String>) {
        let now = self.now;
        for key in keys {
            let Some(entry) = self.registry.entries.get_mut(&key) else {
                continue;
            };
            if let Record::Lease(lease) = entry.record()
                && lease.needs_restamp(now)
            {
                let mut lease = lease.clone();
                lease.restamp(now);
                entry.update(lease);
                self.changed = true;
            }
        }
    }

    /// The live process holding the entry under `key`: a live lease's owner (perhaps
    /// of another PID namespace), or a seed entry's pid while a process with that pid
    /// runs (the seed records no start time). `None` for a lease owned by no process,
    /// an ended one, or no entry.
    pub(crate) fn live_holder(&mut self, key: &str) -> Option<ProcessId> {
        let record = self.registry.entries.get(key)?.record();
        if record.is_stale(self.now, &mut self.liveness) {
            return None;
        }
        match record {
            Record::Lease(lease) => lease.owner,
            Record::Seed { pid, .. } => u32::try_from(*pid).ok().and_then(ProcessId::of_running),
            Record::Unknown => None,
        }
    }

    /// Chooses ports for `request` among `candidates`. A port whose every lease is
    /// stale counts as free, and those leases are removed on the way.
    pub(crate) fn pick_ports(
        &mut self,
        request: &Request,
        candidates: &Candidates,
    ) -> Result<Vec<u16>> {
        let cursor = self.cursor();
        // Entries are found by their key, the port in decimal; the few keys written
        // otherwise (" 8080", "08080") are listed once per transaction, so a search
        // costs no index of every entry.
        let odd_keys: &Vec<(u16, String)> = self.odd_keys.get_or_insert_with(|| {
            self.registry
                .entries
                .keys()
                .filter(|key| !is_plain_decimal(key))
                .filter_map(|key| port_of_key(key).map(|port| (port, key.clone())))
                .collect()
        });
        let entries = &self.registry.entries;
        let (now, liveness) = (self.now, &mut self.liveness);
        let seed_lease_secs = request.seed_lease_secs();
        let mut stale_met = Vec::new();
        let mut live_met = Vec::new();
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
            let live: Vec<&String> = met
                .iter()
                .filter(|(_, entry)| !entry.record().is_stale_with(now, liveness, seed_lease_secs))
                .map(|(key, _)| *key)
                .collect();
            if !live.is_empty() {
                live_met.extend(live.into_iter().cloned());
                return Ok(false);
            }
            stale_met.extend(met.iter().map(|(key, _)| key.to_string()));
            is_port_free(port, request.protocol, request.host)
        };
        let picked = pick(&request.want(), candidates, cursor, &mut usable);
        self.restamp(live_met);
        for key in stale_met {
            if self.registry.entries.remove(&key).is_some() {
                log::info!("reclaimed the stale lease on {key}");
                self.changed = true;
            }
        }
        let ports = picked?.map_err(|exhausted| Error::Exhausted {
            wanted: exhausted.wanted,
            ranges: request.describe_ranges(),
        })?;
        if let Some(&last) = ports.last() {
            self.move_cursor(last);
        }
        Ok(ports)
    }

    /// The last port handed out, where the next search starts after: the board's
    /// (host-wide) where there is a board that is still shared, else the allocator's.
    fn cursor(&self) -> Option<u16> {
        match self.board.filter(|board| !board.broken()) {
            Some(board) => board.cursor(),
            None => u16::try_from(self.cursor.load(Ordering::Relaxed))
                .ok()
                .filter(|&port| port != 0),
        }
    }

    /// Moves both cursors, so that losing the board later keeps next-fit going.
    fn move_cursor(&self, port: u16) {
        if let Some(board) = self.board {
            board.set_cursor(port);
        }
        self.cursor.store(u32::from(port), Ordering::Relaxed);
    }

    fn remove(&mut self, stale: &[LeaseInfo]) {
        for info in stale {
            self.registry.entries.remove(&info.key);
            match info.pid {
                Some(pid) => log::info!("reclaimed the stale lease on {} (pid {pid})", info.key),
                None => log::info!("reclaimed the stale lease on {}", info.key),
            }
        }
        self.changed |= !stale.is_empty();
    }

    /// Removes every lease held under `token`.
    pub(crate) fn end_token(&mut self, token: &str) {
        let before = self.registry.entries.len();
        self.registry.entries.retain(|_, entry| {
            !matches!(entry.record(), Record::Lease(lease) if lease.token.as_deref() == Some(token))
        });
        if self.registry.entries.len() != before {
            log::debug!("ended the leases under token {token}");
            self.changed = true;
        }
    }

    /// The ports leased under `token`, ascending.
    pub(crate) fn ports_of_token(&self, token: &str) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .registry
            .entries
            .iter()
            .filter(|(_, entry)| matches!(entry.record(), Record::Lease(lease) if lease.token.as_deref() == Some(token)))
            .filter_map(|(key, _)| port_of_key(key))
            .collect();
        // The keys sort as text ("10000" before "9999"): sort them as ports.
        ports.sort_unstable();
        ports
    }

    /// How many live-or-not leases `owner` (this very process) holds.
    pub(crate) fn leases_of(&self, owner: ProcessId) -> usize {
        self.registry
            .entries
            .values()
            .filter(
                |entry| matches!(entry.record(), Record::Lease(lease) if lease.owner.is_some_and(|o| o.same_process(&owner))),
            )
            .count()
    }
}

/// Whether `key` is written as a port is by `u16::to_string` (no sign, space or
/// leading zero) if it names one: checked without an allocation per key, as every
/// key of the registry is checked once a transaction.
fn is_plain_decimal(key: &str) -> bool {
    !key.is_empty() && !key.starts_with('0') && key.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::layout::REGISTRY_FILE;
    use crate::request::Protocol;

    static CURSOR: AtomicU32 = AtomicU32::new(0);
    static CACHE: std::sync::LazyLock<RegistryCache> =
        std::sync::LazyLock::new(RegistryCache::default);

    /// A registry directory whose registry file holds `text`.
    fn registry_holding(text: &str) -> (tempfile::TempDir, RegistryDir) {
        let temp = tempfile::tempdir().expect("a temp dir");
        std::fs::write(temp.path().join(REGISTRY_FILE), text).expect("the registry written");
        let dir = RegistryDir::prepare(temp.path()).expect("the registry dir");
        (temp, dir)
    }

    fn lease(token: &str) -> LeaseRecord {
        LeaseRecord {
            pid: std::process::id(),
            since: unix_now(),
            timestamp: unix_now(),
            owner: None,
            ttl: Some(60.0),
            protocol: Protocol::Tcp,
            label: None,
            source: None,
            token: Some(token.into()),
        }
    }

    #[test]
    fn reading_changes_nothing_and_every_change_marks_the_transaction() {
        let now = unix_now();
        let (_temp, dir) =
            registry_holding(&format!(r#"{{"26300": {{"pid": 1, "timestamp": {now}}}}}"#));
        let mut txn = Transaction::begin(&dir, None, &CURSOR, &CACHE).expect("a transaction");
        assert!(txn.record("26300").is_some());
        assert_eq!(txn.snapshot().len(), 1);
        assert!(txn.ports_of_token("t").is_empty());
        assert!(txn.live_lease(26300, None).is_none(), "a seed entry");
        assert!(!txn.remove_entry("26301"));
        assert!(!txn.update_lease(26301, lease("t")));
        assert!(!txn.changed(), "reading and missing changed nothing");

        txn.insert_lease(26301, lease("t"));
        assert!(txn.changed());
        txn.commit().expect("written");
        let mut txn = Transaction::begin(&dir, None, &CURSOR, &CACHE).expect("a transaction");
        assert!(txn.remove_entry("26300"));
        assert!(txn.changed());
        let mut txn = Transaction::begin(&dir, None, &CURSOR, &CACHE).expect("a transaction");
        let renewed = txn.live_lease(26301, Some("t")).expect("the lease");
        assert!(txn.update_lease(26301, renewed));
        assert!(txn.changed());
    }

    #[test]
    fn the_ports_of_a_token_come_in_ascending_order_of_port_not_of_key_text() {
        let (_temp, dir) = registry_holding("{}");
        let mut txn = Transaction::begin(&dir, None, &CURSOR, &CACHE).expect("a transaction");
        for port in [10000, 9999, 65535, 1024] {
            txn.insert_lease(port, lease("t"));
        }
        assert_eq!(txn.ports_of_token("t"), [1024, 9999, 10000, 65535]);
    }

    #[test]
    fn plain_decimal_keys_are_those_a_port_writes() {
        for key in ["8080", "1", "65535"] {
            let port: u16 = key.parse().expect("a port");
            assert!(is_plain_decimal(key) && port.to_string() == key);
        }
        for key in [" 8080", "08080", "+8080", "8080 ", "", "0"] {
            assert!(!is_plain_decimal(key), "{key:?}");
        }
    }

    #[test]
    fn a_damaged_registry_is_written_back_with_its_salvage() {
        let now = unix_now();
        let (temp, dir) = registry_holding(&format!(
            r#"{{"26302": {{"pid": 1, "timestamp": {now}}}, "26303": garbage"#
        ));
        let txn = Transaction::begin(&dir, None, &CURSOR, &CACHE).expect("a transaction");
        assert!(txn.changed(), "the salvage is to be written");
        txn.commit().expect("written");
        let text = std::fs::read_to_string(temp.path().join(REGISTRY_FILE)).expect("read");
        let written: serde_json::Value = serde_json::from_str(&text).expect("valid JSON now");
        assert!(written.get("26302").is_some(), "{text}");
    }
}
