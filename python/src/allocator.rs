//! `NativeAllocator`: the library's `Allocator`, with every call made without the GIL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use portlease::parse::SeedRange;
use portlease::{Allocator, Lease, Request};
use pyo3::prelude::*;

use crate::args;
use crate::errors;
use crate::lease::NativeLease;
use crate::signals;

/// The registry in one directory (`portlease.Allocator` wraps it).
#[pyclass(module = "portlease._native", frozen)]
pub(crate) struct NativeAllocator {
    allocator: Allocator,
    /// The leases `allocate_as_seed` made, so that `release` ends them by their own token
    /// (posted on the request board, served in one transaction with other processes'
    /// requests) rather than by port. Shared with `with_lock_timeout`'s copies.
    kept: Arc<Mutex<KeptLeases>>,
}

/// Leases left in the registry by `allocate_as_seed`, by port, and the process that made
/// them: after a fork, the child finds its parent's here, and lets go of them.
#[derive(Default)]
struct KeptLeases {
    maker: u32,
    leases: HashMap<u16, Lease>,
}

impl KeptLeases {
    /// The leases this process made (a forked child's set starts empty).
    fn mine(&mut self) -> &mut HashMap<u16, Lease> {
        let me = std::process::id();
        if self.maker != me {
            self.forget();
            self.maker = me;
        }
        &mut self.leases
    }

    /// Lets go of every lease without ending it.
    fn forget(&mut self) {
        for (_, lease) in self.leases.drain() {
            let _ = lease.keep();
        }
    }
}

impl Drop for KeptLeases {
    fn drop(&mut self) {
        // Kept leases end by their owner's exit, their TTL or a release: never here.
        self.forget();
    }
}

impl NativeAllocator {
    fn with(allocator: Allocator) -> NativeAllocator {
        NativeAllocator {
            allocator,
            kept: Arc::default(),
        }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, KeptLeases> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The token of this process's lease on `port` made by `allocate_as_seed`, if any.
    fn kept_token(&self, port: u16) -> Option<String> {
        self.kept()
            .mine()
            .get(&port)
            .map(|lease| lease.token().to_owned())
    }

    /// Forgets the lease on `port` once it has ended, if it is still the one under
    /// `token` (another thread may have remembered a newer one meanwhile).
    fn forget_kept(&self, port: u16, token: &str) {
        let mut kept = self.kept();
        let leases = kept.mine();
        if leases
            .get(&port)
            .is_some_and(|lease| lease.token() == token)
            && let Some(lease) = leases.remove(&port)
        {
            let _ = lease.keep();
        }
    }

    fn remember(&self, lease: Lease) -> u16 {
        let port = lease.port();
        if let Some(older) = self.kept().mine().insert(port, lease) {
            // An older lease on the same port had ended (it expired and was reclaimed).
            let _ = older.keep();
        }
        port
    }
}

#[pymethods]
impl NativeAllocator {
    /// An allocator on `dir` (created 0700 if missing), or on the default directory.
    #[new]
    #[pyo3(signature = (dir, lock_timeout))]
    fn new(
        py: Python<'_>,
        dir: &Bound<'_, PyAny>,
        lock_timeout: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let dir = args::directory(dir, "dir")?;
        let timeout = args::seconds(lock_timeout, "lock_timeout")?;
        let allocator = signals::call(py, move || match dir {
            Some(dir) => Allocator::with_dir(dir),
            None => Allocator::new(),
        })?;
        Ok(NativeAllocator::with(allocator.lock_timeout(timeout)))
    }

    /// The registry directory.
    #[getter]
    fn dir(&self) -> String {
        self.allocator.dir().to_string_lossy().into_owned()
    }

    /// The same registry with another lock timeout.
    fn with_lock_timeout(&self, lock_timeout: &Bound<'_, PyAny>) -> PyResult<Self> {
        let timeout = args::seconds(lock_timeout, "lock_timeout")?;
        Ok(NativeAllocator {
            allocator: self.allocator.clone().lock_timeout(timeout),
            // The leases this one made are released through the other as well.
            kept: Arc::clone(&self.kept),
        })
    }

    /// Leases ports, with the options of `portlease.Allocator.allocate` as the caller
    /// passed them: each is checked here (`args`), and refused with `InvalidRequest`.
    // Keyword-only: eleven values in a row are too easy to pass in the wrong order.
    #[pyo3(signature = (*, ranges, preferred, exclude, count, block, protocol, host, owner, ttl, label, source))]
    #[allow(clippy::too_many_arguments)]
    fn allocate(
        &self,
        py: Python<'_>,
        ranges: &Bound<'_, PyAny>,
        preferred: &Bound<'_, PyAny>,
        exclude: &Bound<'_, PyAny>,
        count: &Bound<'_, PyAny>,
        block: &Bound<'_, PyAny>,
        protocol: &Bound<'_, PyAny>,
        host: &Bound<'_, PyAny>,
        owner: &Bound<'_, PyAny>,
        ttl: &Bound<'_, PyAny>,
        label: &Bound<'_, PyAny>,
        source: &Bound<'_, PyAny>,
    ) -> PyResult<NativeLease> {
        let mut request = Request::new()
            .count(args::count(count, "count")?)
            .block(args::flag(block, "block")?)
            .protocol(args::protocol(protocol)?)
            .owner(args::owner(owner)?);
        if let Some(ranges) = args::ranges(ranges)? {
            request = request.set_ranges(ranges);
        }
        if let Some(port) = args::optional_port(preferred, "preferred")? {
            request = request.prefer(port);
        }
        for port in args::ports(exclude, "exclude")? {
            request = request.exclude(port);
        }
        if let Some(host) = args::host(host, "host")? {
            request = request.host(host);
        }
        if let Some(ttl) = args::ttl(ttl)? {
            request = request.ttl(ttl);
        }
        if let Some(label) = args::text(label, "label")? {
            request = request.label(label);
        }
        if let Some(source) = args::text(source, "source")? {
            request = request.source(source);
        }
        if let Some(warning) = request.preferred_outside_ranges() {
            // As the library's log warns, where Python users see it.
            PyErr::warn(
                py,
                &py.get_type::<pyo3::exceptions::PyUserWarning>(),
                &std::ffi::CString::new(warning)?,
                1,
            )?;
        }
        let allocator = self.allocator.clone();
        let lease = signals::call(py, || allocator.allocate(&request))?;
        Ok(NativeLease::new(lease, self.allocator.clone()))
    }

    /// The AIDB drop-in's `allocate(preferred, range_start, range_size, host)`, the
    /// range read as the seed reads it (`portlease::parse::SeedRange`): one port, owned
    /// by this process for `lease_timeout` seconds, kept in the registry; returns it.
    /// Seed entries older than `lease_timeout` count as ended (`Request::seed_lease`),
    /// as the seed's allocator with that `lease_timeout` judges them. Raises
    /// `PortOutOfRange` and `Exhausted` where the seed raised `OverflowError` and
    /// `RuntimeError`.
    #[pyo3(signature = (preferred, range_start, range_size, host, lease_timeout))]
    fn allocate_as_seed(
        &self,
        py: Python<'_>,
        preferred: &Bound<'_, PyAny>,
        range_start: &Bound<'_, PyAny>,
        range_size: &Bound<'_, PyAny>,
        host: &Bound<'_, PyAny>,
        lease_timeout: &Bound<'_, PyAny>,
    ) -> PyResult<u16> {
        let preferred = args::optional_int(preferred, "preferred")?;
        let range = SeedRange::new(
            args::int(range_start, "range_start")?,
            args::int(range_size, "range_size")?,
        );
        let host = args::host(host, "host")?;
        let lease_timeout = args::seconds(lease_timeout, "lease_timeout")?;
        let preferred = range.check(preferred).map_err(errors::seed_refusal)?;
        let ports = range
            .searched(preferred)
            .ok_or_else(|| errors::seed_refusal(range.empty()))?;
        let mut request = Request::new()
            .range(ports)
            .ttl(Some(lease_timeout))
            .seed_lease(lease_timeout)
            .source("aidb");
        if let Some(port) = preferred {
            request = request.prefer(port);
        }
        if let Some(host) = host {
            request = request.host(host);
        }
        let allocator = self.allocator.clone();
        match signals::outcome(py, || allocator.allocate(&request))? {
            Ok(lease) => Ok(self.remember(lease)),
            Err(error) => Err(match &error {
                portlease::Error::Exhausted { ranges, .. } => {
                    errors::seed_refusal(range.exhausted(&error, ranges.clone()))
                }
                _ => errors::to_py(error),
            }),
        }
    }

    /// Ends the lease on `port`, whoever holds it; returns whether there was one.
    fn release(&self, py: Python<'_>, port: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.release_port(py, args::port(port, "port")?)
    }

    /// The AIDB drop-in's `release(port)`: any int, as the seed took; one that is no
    /// port names no lease, so there is nothing to do. Returns whether a lease ended.
    fn release_as_seed(&self, py: Python<'_>, port: &Bound<'_, PyAny>) -> PyResult<bool> {
        match u16::try_from(args::int(port, "port")?) {
            Ok(port) if port != 0 => self.release_port(py, port),
            _ => Ok(false),
        }
    }

    /// Restarts the lease on `port`'s time, with a new TTL or its own.
    #[pyo3(signature = (port, ttl=None))]
    fn renew(
        &self,
        py: Python<'_>,
        port: &Bound<'_, PyAny>,
        ttl: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let port = args::port(port, "port")?;
        let ttl = ttl.map(|ttl| args::seconds(ttl, "ttl")).transpose()?;
        let allocator = self.allocator.clone();
        signals::call(py, || allocator.renew(port, ttl))
    }

    /// Every entry of the registry, as the JSON of `portlease list --json`.
    fn leases_json(&self, py: Python<'_>) -> PyResult<String> {
        let allocator = self.allocator.clone();
        let leases = signals::call(py, || allocator.leases())?;
        to_json(&leases)
    }

    /// Reclaims stale leases; returns them as JSON, as `portlease gc --json` does.
    fn gc_json(&self, py: Python<'_>) -> PyResult<String> {
        let allocator = self.allocator.clone();
        let reclaimed = signals::call(py, || allocator.gc())?;
        to_json(&reclaimed)
    }
}

impl NativeAllocator {
    /// Ends the lease on `port`, whoever holds it; returns whether there was one.
    /// A lease `allocate_as_seed` made in this process is ended by its own token, and
    /// forgotten only once that succeeded: a retry after a failure (a lock timeout)
    /// still ends it by token, never the port's next holder's lease.
    fn release_port(&self, py: Python<'_>, port: u16) -> PyResult<bool> {
        let allocator = self.allocator.clone();
        match self.kept_token(port) {
            Some(token) => {
                // Posted on the request board like any lease's release, so that under
                // contention it shares a transaction with the others waiting.
                let (result, raised) =
                    signals::detached(py, || allocator.release_under_token(&[port], &token));
                let ended = match result {
                    Ok(()) => true,
                    // It had expired and went to somebody else: left alone.
                    Err(portlease::Error::LeaseLost { .. }) => false,
                    // Still leased (say, interrupted by Ctrl-C): a retry ends it by token.
                    Err(e) => return Err(raised.unwrap_or_else(|| errors::to_py(e))),
                };
                self.forget_kept(port, &token);
                match raised {
                    Some(raised) => Err(raised),
                    None => Ok(ended),
                }
            }
            None => signals::call(py, || allocator.release(port)),
        }
    }
}

/// Every entry of the existing registry in `dir` (default: the default directory), as
/// the JSON of `portlease list --json`, read as `portlease list` reads it: nothing is
/// created or written, and a missing directory is `NoRegistry`.
#[pyfunction]
#[pyo3(signature = (dir, lock_timeout))]
pub(crate) fn existing_leases_json(
    py: Python<'_>,
    dir: &Bound<'_, PyAny>,
    lock_timeout: &Bound<'_, PyAny>,
) -> PyResult<String> {
    let dir = args::directory(dir, "dir")?;
    let timeout = args::seconds(lock_timeout, "lock_timeout")?;
    let leases = signals::call(py, move || {
        let dir = dir.map_or_else(portlease::default_dir, Into::into);
        Allocator::existing(dir)?.lock_timeout(timeout).leases()
    })?;
    to_json(&leases)
}

/// Leases as the JSON `portlease list --json` prints.
fn to_json(leases: &[portlease::LeaseInfo]) -> PyResult<String> {
    serde_json::to_string(leases).map_err(|e| {
        pyo3::exceptions::PyRuntimeError::new_err(format!("cannot write the leases as JSON: {e}"))
    })
}
