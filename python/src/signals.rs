//! Native calls without the GIL that still answer Ctrl-C: while a call waits (for the
//! registry lock, or for its request on the board to be served), the library consults
//! a check every 100 ms that takes the GIL and runs Python's signal handlers. When one
//! raises (the default SIGINT handler raises `KeyboardInterrupt`), the wait is
//! abandoned as at a lock timeout, and that exception is raised once the call is back.

use std::sync::{Arc, Mutex, PoisonError};

use pyo3::prelude::*;

use crate::errors::IntoPy;

/// Runs `work` without the GIL, with Python's signal handlers run every 100 ms while it
/// waits; returns what it returned, and the exception a handler raised, if one did.
pub(crate) fn detached<T: Send>(
    py: Python<'_>,
    work: impl FnOnce() -> T + Send,
) -> (T, Option<PyErr>) {
    let raised: Arc<Mutex<Option<PyErr>>> = Arc::default();
    let slot = Arc::clone(&raised);
    let check = move || {
        Python::attach(|py| match py.check_signals() {
            Ok(()) => false,
            Err(error) => {
                *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
                true
            }
        })
    };
    let value = py.detach(move || portlease::interrupt::with_check(check, work));
    let error = raised.lock().unwrap_or_else(PoisonError::into_inner).take();
    (value, error)
}

/// Runs the library call `work` as [`detached`] does. When a signal handler raised,
/// its exception is raised and whatever the call returned is dropped (without the
/// GIL): a lease it made after all is released, so nothing stays leased.
pub(crate) fn call<T: Send>(
    py: Python<'_>,
    work: impl FnOnce() -> portlease::Result<T> + Send,
) -> PyResult<T> {
    outcome(py, work)?.py_err()
}

/// [`call`], with the library's error left as it is, for a caller that turns it into
/// an exception of its own; the exception a signal handler raised is still raised.
pub(crate) fn outcome<T: Send>(
    py: Python<'_>,
    work: impl FnOnce() -> portlease::Result<T> + Send,
) -> PyResult<portlease::Result<T>> {
    match detached(py, work) {
        (result, None) => Ok(result),
        (result, Some(error)) => {
            py.detach(move || drop(result));
            Err(error)
        }
    }
}
