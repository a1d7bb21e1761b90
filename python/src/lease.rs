//! `NativeLease`: the library's lease guard, safe across `fork`.
//!
//! A forked child inherits its parent's Python objects, leases among them; when the
//! child frees them, it must not release its parent's ports. So a lease remembers the
//! pid that made it, and anywhere else it only lets go of the guard.

use std::os::fd::IntoRawFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use portlease::Lease;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::errors::{self, IntoPy};

/// Ports leased to the caller (`portlease.Lease` wraps it).
#[pyclass(module = "portlease._native", frozen)]
pub(crate) struct NativeLease {
    /// `None` once released, turned into a socket, or while a call is using it.
    lease: Mutex<Option<Lease>>,
    ports: Vec<u16>,
    /// The process that made the lease: only it releases it when the guard goes.
    maker: u32,
    /// Left to end by its owner or TTL: not released when the guard goes.
    kept: AtomicBool,
    /// Released, or turned into a socket: the guard holds nothing any more.
    ended: AtomicBool,
}

impl NativeLease {
    pub(crate) fn new(lease: Lease) -> NativeLease {
        NativeLease {
            ports: lease.ports().to_vec(),
            lease: Mutex::new(Some(lease)),
            maker: std::process::id(),
            kept: AtomicBool::new(false),
            ended: AtomicBool::new(false),
        }
    }

    /// Takes the guard out for a call; fails with `LeaseLost` when the lease has
    /// ended, and when another thread is using it.
    fn take(&self) -> PyResult<Lease> {
        let mut slot = self.lease.lock().unwrap_or_else(|e| e.into_inner());
        slot.take().ok_or_else(|| {
            if self.ended.load(Ordering::Relaxed) {
                errors::to_py(portlease::Error::LeaseLost {
                    port: self.ports[0],
                })
            } else {
                PyRuntimeError::new_err(format!(
                    "the lease on {:?} is in use by another thread; wait for that call",
                    self.ports
                ))
            }
        })
    }

    /// Takes the guard out to end the lease: released, or bound.
    fn take_to_end(&self) -> PyResult<Lease> {
        let lease = self.take()?;
        self.ended.store(true, Ordering::Relaxed);
        Ok(lease)
    }

    fn put_back(&self, lease: Lease) {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = Some(lease);
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

    /// Whether the guard still holds the lease (not released or turned into a socket).
    #[getter]
    fn held(&self) -> bool {
        self.lease
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Whether the lease is left to end by its owner or TTL when the guard goes.
    #[getter]
    fn kept(&self) -> bool {
        self.kept.load(Ordering::Relaxed)
    }

    /// Ends the lease now; a lease already ended is left alone.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        self.in_maker()?;
        if self.ended.load(Ordering::Relaxed) {
            return Ok(());
        }
        let lease = self.take_to_end()?;
        py.detach(move || lease.release()).py_err()
    }

    /// Restarts the lease's time, with a new TTL or its own.
    #[pyo3(signature = (ttl=None))]
    fn renew(&self, py: Python<'_>, ttl: Option<f64>) -> PyResult<()> {
        self.in_maker()?;
        let ttl = ttl
            .map(|t| {
                std::time::Duration::try_from_secs_f64(t).map_err(|_| {
                    PyValueError::new_err(format!(
                        "ttl must be a finite number of seconds >= 0, not {t}"
                    ))
                })
            })
            .transpose()?;
        let lease = self.take()?;
        let (lease, result) = py.detach(move || {
            let result = lease.renew(ttl);
            (lease, result)
        });
        self.put_back(lease);
        result.py_err()
    }

    /// Leaves the lease in the registry when the guard goes.
    fn keep(&self) -> Vec<u16> {
        self.kept.store(true, Ordering::Relaxed);
        self.ports.clone()
    }

    /// Hands the lease to the running process `pid`: it ends when that process does,
    /// or when its TTL (kept as it was) runs out.
    fn hand_to(&self, py: Python<'_>, pid: u32) -> PyResult<()> {
        self.in_maker()?;
        let lease = self.take()?;
        let (lease, result) = py.detach(move || {
            let result = lease.transfer_to(pid);
            (lease, result)
        });
        self.put_back(lease);
        result.py_err()
    }

    /// Binds a socket to the one leased port ("tcp": a listener; "udp") and ends the
    /// lease; returns the socket's file descriptor, now the caller's.
    fn bind_socket_fd(&self, py: Python<'_>, kind: &str) -> PyResult<i32> {
        self.in_maker()?;
        let udp = match kind {
            "tcp" => false,
            "udp" => true,
            _ => {
                return Err(PyValueError::new_err(format!(
                    "unknown socket kind {kind:?}: use \"tcp\" or \"udp\""
                )));
            }
        };
        // Checked here, as the library would only say so after taking the lease.
        if self.ports.len() != 1 {
            return Err(errors::to_py(portlease::Error::InvalidRequest(format!(
                "this lease holds {} ports; bind each with the socket module instead",
                self.ports.len()
            ))));
        }
        let lease = self.take_to_end()?;
        py.detach(move || {
            if udp {
                lease.into_udp_socket().map(IntoRawFd::into_raw_fd)
            } else {
                lease.into_listener().map(IntoRawFd::into_raw_fd)
            }
        })
        .py_err()
    }

    /// Binds a socket to each leased port ("tcp": listening; "udp") and keeps the
    /// lease; returns their file descriptors (close-on-exec), now the caller's.
    fn listen_fds(&self, py: Python<'_>, kind: &str) -> PyResult<Vec<i32>> {
        self.in_maker()?;
        let protocol = match kind {
            "tcp" => portlease::Protocol::Tcp,
            "udp" => portlease::Protocol::Udp,
            _ => {
                return Err(PyValueError::new_err(format!(
                    "unknown socket kind {kind:?}: use \"tcp\" or \"udp\""
                )));
            }
        };
        let lease = self.take()?;
        let (lease, result) = py.detach(move || {
            let result = lease.bind_all(protocol);
            (lease, result)
        });
        self.put_back(lease);
        Ok(result
            .py_err()?
            .into_iter()
            .map(IntoRawFd::into_raw_fd)
            .collect())
    }
}

impl Drop for NativeLease {
    fn drop(&mut self) {
        let Some(lease) = self
            .lease
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
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
