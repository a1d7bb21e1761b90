//! `NativeAllocator`: the library's `Allocator`, with every call made without the GIL.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portlease::{Allocator, Lease, Owner, Protocol, Request};
use pyo3::prelude::*;

use crate::errors;
use crate::lease::NativeLease;
use crate::signals;

/// The registry in one directory (`portlease.Allocator` wraps it).
#[pyclass(module = "portlease._native", frozen)]
pub(crate) struct NativeAllocator {
    allocator: Allocator,
    /// The leases `allocate_kept` made, so that `release` ends them by their own token
    /// (posted on the request board, served in one transaction with other processes'
    /// requests) rather than by port. Shared with `with_lock_timeout`'s copies.
    kept: Arc<Mutex<KeptLeases>>,
}

/// Leases left in the registry by `allocate_kept`, by port, and the process that made
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

    /// The token of this process's lease on `port` made by `allocate_kept`, if any.
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

/// `portlease.InvalidRequest` (a `ValueError`) saying `message`.
fn invalid(message: String) -> PyErr {
    errors::to_py(portlease::Error::InvalidRequest(message))
}

/// A duration in seconds from Python: finite and not negative.
fn seconds(value: f64, what: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        invalid(format!(
            "{what} must be a finite number of seconds >= 0, not {value}"
        ))
    })
}

fn parse_host(host: Option<&str>) -> PyResult<Option<IpAddr>> {
    host.map(|text| {
        text.parse::<IpAddr>().map_err(|_| {
            invalid(format!(
                "host {text:?} is not an IP address: give one of this machine's addresses, e.g. 127.0.0.1"
            ))
        })
    })
    .transpose()
}

fn parse_protocol(protocol: &str) -> PyResult<Protocol> {
    protocol.parse().map_err(|_| {
        invalid(format!(
            "unknown protocol {protocol:?}: use \"tcp\", \"udp\" or \"both\""
        ))
    })
}

#[pymethods]
impl NativeAllocator {
    /// An allocator on `dir` (created 0700 if missing), or on the default directory.
    #[new]
    #[pyo3(signature = (dir, lock_timeout))]
    fn new(py: Python<'_>, dir: Option<String>, lock_timeout: f64) -> PyResult<Self> {
        let timeout = seconds(lock_timeout, "lock_timeout")?;
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
    fn with_lock_timeout(&self, lock_timeout: f64) -> PyResult<Self> {
        let timeout = seconds(lock_timeout, "lock_timeout")?;
        Ok(NativeAllocator {
            allocator: self.allocator.clone().lock_timeout(timeout),
            // The leases this one made are released through the other as well.
            kept: Arc::clone(&self.kept),
        })
    }

    /// Leases ports; the arguments are checked and normalised by `portlease.Allocator`.
    /// `owner` is "self", "pid" (then `owner_pid`) or "none"; `ttl_given` false keeps
    /// the library's default TTL.
    // Keyword-only: thirteen values in a row are too easy to pass in the wrong order.
    #[pyo3(signature = (*, ranges, preferred, exclude, count, block, protocol, host, owner, owner_pid, ttl_given, ttl, label, source))]
    #[allow(clippy::too_many_arguments)]
    fn allocate(
        &self,
        py: Python<'_>,
        ranges: Vec<(u16, u16)>,
        preferred: Option<u16>,
        exclude: Vec<u16>,
        count: usize,
        block: bool,
        protocol: &str,
        host: Option<&str>,
        owner: &str,
        owner_pid: Option<u32>,
        ttl_given: bool,
        ttl: Option<f64>,
        label: Option<String>,
        source: String,
    ) -> PyResult<NativeLease> {
        let mut request = Request::new().count(count).block(block).source(source);
        for (start, end) in ranges {
            request = request.range(start..=end);
        }
        if let Some(port) = preferred {
            request = request.prefer(port);
        }
        for port in exclude {
            request = request.exclude(port);
        }
        request = request.protocol(parse_protocol(protocol)?);
        if let Some(host) = parse_host(host)? {
            request = request.host(host);
        }
        request = request.owner(match (owner, owner_pid) {
            ("self", _) => Owner::CurrentProcess,
            ("pid", Some(pid)) => Owner::Process(pid),
            ("none", _) => Owner::Nobody,
            _ => return Err(invalid(format!("unknown owner {owner:?}"))),
        });
        if ttl_given {
            request = request.ttl(ttl.map(|t| seconds(t, "ttl")).transpose()?);
        }
        if let Some(label) = label {
            request = request.label(label);
        }
        let allocator = self.allocator.clone();
        if let Some(port) = preferred
            && !request.ranges().iter().any(|range| range.contains(&port))
        {
            // As the library's log warns, where Python users see it.
            PyErr::warn(
                py,
                &py.get_type::<pyo3::exceptions::PyUserWarning>(),
                &std::ffi::CString::new(format!(
                    "preferred port {port} is outside the ranges searched ({}): it is tried \
                     first all the same; drop the preference or widen the ranges if that is \
                     not meant",
                    request.describe_ranges()
                ))?,
                1,
            )?;
        }
        let lease = signals::call(py, || allocator.allocate(&request))?;
        Ok(NativeLease::new(lease, self.allocator.clone()))
    }

    /// The AIDB drop-in's allocation: one port, owned by this process for `ttl`
    /// seconds, kept in the registry; returns the port. Seed entries older than
    /// `seed_lease` seconds count as ended (`Request::seed_lease`; the seed's
    /// `lease_timeout`, default 300).
    #[pyo3(signature = (preferred, range_start, range_size, host, ttl, seed_lease=300.0))]
    #[allow(clippy::too_many_arguments)]
    fn allocate_kept(
        &self,
        py: Python<'_>,
        preferred: Option<u16>,
        range_start: u16,
        range_size: u32,
        host: Option<&str>,
        ttl: f64,
        seed_lease: f64,
    ) -> PyResult<u16> {
        let last = u32::from(range_start) + range_size.saturating_sub(1);
        let last = u16::try_from(last)
            .ok()
            .filter(|_| range_size > 0)
            .ok_or_else(|| {
                invalid(format!(
                    "range of {range_size} ports from {range_start} is empty or runs past 65535"
                ))
            })?;
        let mut request = Request::new()
            .range(range_start..=last)
            .ttl(Some(seconds(ttl, "lease_timeout")?))
            .seed_lease(seconds(seed_lease, "lease_timeout")?)
            .source("aidb");
        if let Some(port) = preferred {
            request = request.prefer(port);
        }
        if let Some(host) = parse_host(host)? {
            request = request.host(host);
        }
        let allocator = self.allocator.clone();
        let lease = signals::call(py, || allocator.allocate(&request))?;
        Ok(self.remember(lease))
    }

    /// Ends the lease on `port`, whoever holds it; returns whether there was one.
    /// A lease `allocate_kept` made in this process is ended by its own token, and
    /// forgotten only once that succeeded: a retry after a failure (a lock timeout)
    /// still ends it by token, never the port's next holder's lease.
    fn release(&self, py: Python<'_>, port: u16) -> PyResult<bool> {
        let allocator = self.allocator.clone();
        match self.kept_token(port) {
            Some(token) => {
                // Posted on the request board like any lease's release, so that under
                // contention it shares a transaction with the others waiting.
                let (result, raised) =
                    signals::detached(py, || allocator.release_token(&[port], &token));
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

    /// Restarts the lease on `port`'s time, with a new TTL or its own.
    #[pyo3(signature = (port, ttl=None))]
    fn renew(&self, py: Python<'_>, port: u16, ttl: Option<f64>) -> PyResult<()> {
        let ttl = ttl.map(|t| seconds(t, "ttl")).transpose()?;
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

/// Every entry of the existing registry in `dir` (default: the default directory), as
/// the JSON of `portlease list --json`, read as `portlease list` reads it: nothing is
/// created or written, and a missing directory is `NoRegistry`.
#[pyfunction]
#[pyo3(signature = (dir, lock_timeout))]
pub(crate) fn existing_leases_json(
    py: Python<'_>,
    dir: Option<String>,
    lock_timeout: f64,
) -> PyResult<String> {
    let timeout = seconds(lock_timeout, "lock_timeout")?;
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
