//! `NativeLease`: the library's lease guard, safe across `fork` and shared by threads.
//!
//! A forked child inherits its parent's Python objects, leases among them; when the
//! child frees them, it must not release its parent's ports. So a lease remembers the
//! pid that made it, and anywhere else it only lets go of the guard.
//!
//! Threads share the guard (an `Arc`) for their calls; ending the lease waits until it
//! is the guard's only holder, so that a release never misses a call in progress.

use std::os::fd::IntoRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use portlease::{Allocator, Lease};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::args;
use crate::errors::{self, IntoPy};
use crate::signals;

/// Ports leased to the caller (`portlease.Lease` wraps it).
///
/// Threads may share it: a call (`renew`, `hand_to`) uses the guard without taking it
/// away, so the lease reads as held throughout; ending it (`release`, a socket) waits
/// for the calls in progress, then ends it by its token. No call leaves it half-done:
/// an ending that fails (a lock timeout, Ctrl-C) leaves the lease held, to retry.
#[pyclass(module = "portlease._native", frozen)]
pub(crate) struct NativeLease {
    /// The allocator that made the lease: a release ends it by its token through it.
    allocator: Allocator,
    state: Mutex<State>,
    /// Signalled when a call on the lease returns and when an ending is over.
    changed: Condvar,
    ports: Vec<u16>,
    /// The process that made the lease: only it releases it when the guard goes.
    maker: u32,
    /// Left to end by its owner or TTL: not released when the guard goes.
    kept: AtomicBool,
}

/// The guard, and whether a thread is ending the lease.
struct State {
    /// Shared with the calls in progress; `None` once the lease ended (released or
    /// turned into a socket), and while a thread ends it.
    lease: Option<Arc<Lease>>,
    /// A thread is ending the lease: it waits for the calls in progress, or has taken
    /// the guard out to end it. New calls are refused meanwhile.
    ending: bool,
}

impl NativeLease {
    pub(crate) fn new(lease: Lease, allocator: Allocator) -> NativeLease {
        NativeLease {
            allocator,
            ports: lease.ports().to_vec(),
            state: Mutex::new(State {
                lease: Some(Arc::new(lease)),
                ending: false,
            }),
            changed: Condvar::new(),
            maker: std::process::id(),
            kept: AtomicBool::new(false),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ended(&self) -> PyErr {
        errors::to_py(portlease::Error::LeaseLost {
            port: self.ports[0],
        })
    }

    /// Runs `work` on the guard, without the GIL and answering signals, alongside
    /// other threads' calls; fails with `LeaseLost` once the lease ended or is ending.
    fn with_lease<T: Send>(
        &self,
        py: Python<'_>,
        work: impl FnOnce(&Lease) -> portlease::Result<T> + Send,
    ) -> PyResult<T> {
        let shared = {
            let state = self.state();
            match &state.lease {
                Some(lease) if !state.ending => Arc::clone(lease),
                _ => return Err(self.ended()),
            }
        };
        let result = signals::call(py, move || work(&shared));
        // The shared guard is dropped by now: an ending waiting for it may go on.
        let _state = self.state();
        self.changed.notify_all();
        result
    }

    /// Takes the guard out to end the lease, once no other thread's call uses it
    /// (waiting without the GIL, and answering signals every 100 ms); `None` when the
    /// lease has ended already. Hand it back with [`end_done`](Self::end_done).
    fn start_end(&self, py: Python<'_>) -> PyResult<Option<Lease>> {
        py.detach(|| {
            let mut state = self.state();
            // Another thread ending it: its outcome decides what is left to do.
            while state.ending {
                state = self.wait_a_slice(state)?;
            }
            if state.lease.is_none() {
                return Ok(None);
            }
            state.ending = true;
            loop {
                // Only an ending takes the guard out, and this thread is the one ending.
                let Some(shared) = state.lease.take() else {
                    state.ending = false;
                    return Ok(None);
                };
                match Arc::try_unwrap(shared) {
                    Ok(lease) => return Ok(Some(lease)),
                    // Still in use by another thread's call: wait for it to return.
                    Err(shared) => state.lease = Some(shared),
                }
                state = match self.wait_a_slice(state) {
                    Ok(state) => state,
                    Err(raised) => {
                        self.state().ending = false;
                        self.changed.notify_all();
                        return Err(raised);
                    }
                };
            }
        })
    }

    /// Waits for a change for at most 100 ms, then runs Python's signal handlers
    /// (with the state unlocked, as other threads need it to take the GIL).
    fn wait_a_slice<'s>(&'s self, state: MutexGuard<'s, State>) -> PyResult<MutexGuard<'s, State>> {
        let (state, _) = self
            .changed
            .wait_timeout(state, portlease::interrupt::SLICE)
            .unwrap_or_else(PoisonError::into_inner);
        drop(state);
        Python::attach(|py| py.check_signals())?;
        Ok(self.state())
    }

    /// Ends an ending: `lease` back when it is still held (the ending failed).
    fn end_done(&self, lease: Option<Lease>) {
        let mut state = self.state();
        state.lease = lease.map(Arc::new);
        state.ending = false;
        drop(state);
        self.changed.notify_all();
    }

    fn in_maker(&self) -> PyResult<()> {
        if std::process::id() == self.maker {
            return Ok(());
        }
        Err(PyRuntimeError::new_err(format!(
            "the lease on {:?} belongs to process {} (this is a forked child): only it can change the lease",
            self.ports, self.maker
        )))
    }
}

#[pymethods]
impl NativeLease {
    /// The ports, in the order they were chosen.
    #[getter]
    fn ports(&self) -> Vec<u16> {
        self.ports.clone()
    }

    /// Whether the guard still holds the lease (not released or turned into a socket);
    /// true while another thread uses it, and while another thread is ending it.
    #[getter]
    fn held(&self) -> bool {
        let state = self.state();
        state.lease.is_some() || state.ending
    }

    /// Whether the lease is left to end by its owner or TTL when the guard goes.
    #[getter]
    fn kept(&self) -> bool {
        self.kept.load(Ordering::Relaxed)
    }

    /// Ends the lease now, by its token, once the calls other threads are making on it
    /// return; a lease already ended is left alone. When the release fails (a lock
    /// timeout, Ctrl-C), the lease is still held, and the release can be retried.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        self.in_maker()?;
        let Some(lease) = self.start_end(py)? else {
            return Ok(());
        };
        let allocator = &self.allocator;
        let (result, raised) = signals::detached(py, || {
            allocator.release_under_token(lease.ports(), lease.token())
        });
        match result {
            // Ended; a port that went to somebody else meanwhile is theirs.
            Ok(()) | Err(portlease::Error::LeaseLost { .. }) => {
                let _ = lease.keep();
                self.end_done(None);
            }
            Err(_) => self.end_done(Some(lease)),
        }
        match raised {
            Some(raised) => Err(raised),
            None => result.py_err(),
        }
    }

    /// Restarts the lease's time, with a new TTL or its own.
    #[pyo3(signature = (ttl=None))]
    fn renew(&self, py: Python<'_>, ttl: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let ttl = ttl.map(|ttl| args::seconds(ttl, "ttl")).transpose()?;
        self.in_maker()?;
        self.with_lease(py, move |lease| lease.renew(ttl))
    }

    /// Leaves the lease in the registry when the guard goes.
    fn keep(&self) -> Vec<u16> {
        self.kept.store(true, Ordering::Relaxed);
        self.ports.clone()
    }

    /// Hands the lease to the running process `pid`: any TTL is cleared, and it lasts
    /// exactly as long as that process.
    fn hand_to(&self, py: Python<'_>, pid: &Bound<'_, PyAny>) -> PyResult<()> {
        let pid = args::pid(pid, "pid")?;
        self.in_maker()?;
        self.with_lease(py, move |lease| lease.hand_to(pid))
    }

    /// Binds a socket to the one leased port ("tcp": a listener; "udp") and ends the
    /// lease; returns the socket's file descriptor, now the caller's. Once bound, the
    /// lease is ended without answering Ctrl-C: the port is the socket's either way.
    fn bind_socket_fd(&self, py: Python<'_>, kind: &Bound<'_, PyAny>) -> PyResult<i32> {
        let udp = args::socket_kind(kind)? == portlease::Protocol::Udp;
        self.in_maker()?;
        // Checked here, as the library would only say so after taking the lease.
        if self.ports.len() != 1 {
            return Err(errors::invalid(format!(
                "this lease holds {} ports; bind each with the socket module instead",
                self.ports.len()
            )));
        }
        let Some(lease) = self.start_end(py)? else {
            return Err(self.ended());
        };
        let bound = py.detach(move || {
            if udp {
                lease.into_udp_socket().map(IntoRawFd::into_raw_fd)
            } else {
                lease.into_listener().map(IntoRawFd::into_raw_fd)
            }
        });
        // Bound or not, the lease has ended (a guard that failed to bind released it).
        self.end_done(None);
        bound.py_err()
    }

    /// Binds a socket to each leased port ("tcp": listening; "udp") and keeps the
    /// lease; returns their file descriptors (close-on-exec), now the caller's, and
    /// their `LISTEN_FDNAMES`: `names` (one per port), or `port0`, `port1`, ... for
    /// `None`.
    #[pyo3(signature = (kind, names=None))]
    fn listen_fds(
        &self,
        py: Python<'_>,
        kind: &Bound<'_, PyAny>,
        names: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<(Vec<i32>, Vec<String>)> {
        let protocol = args::socket_kind(kind)?;
        let names = names.map_or(Ok(Vec::new()), |names| args::texts(names, "names"))?;
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let names =
            portlease::parse::socket_names(self.ports.len(), &names).map_err(errors::invalid)?;
        self.in_maker()?;
        let fds = self
            .with_lease(py, move |lease| lease.bind_all(protocol))?
            .into_iter()
            .map(IntoRawFd::into_raw_fd)
            .collect();
        Ok((fds, names))
    }
}

impl Drop for NativeLease {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        // No call is in progress: each holds a reference to this object.
        let Some(Ok(lease)) = state.lease.take().map(Arc::try_unwrap) else {
            return;
        };
        if *self.kept.get_mut() || std::process::id() != self.maker {
            let _ = lease.keep();
            return;
        }
        // Dropping the guard releases the lease, which may wait for the lock.
        Python::attach(|py| py.detach(move || drop(lease)));
    }
}
