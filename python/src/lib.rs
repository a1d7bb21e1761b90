//! The native part of the `portlease` Python package: the library's allocator and
//! lease guard as Python classes, and the command line as a function.
//!
//! The Python modules beside it (`python/portlease/`) build the public API on top:
//! argument checking, the exception classes, `portlease.aidb`, portpicker's calls and
//! the pytest plugin. Every call here that may wait (for the registry lock, a bind
//! check, the disk) runs with the GIL released, and answers Ctrl-C while it waits
//! (`signals`).

mod allocator;
mod errors;
mod lease;
mod signals;

use pyo3::prelude::*;

/// Runs the `portlease` command line on `argv` (the first item is the program name)
/// and returns its exit code: the Rust command itself, not a re-implementation.
#[pyfunction]
fn run_cli(py: Python<'_>, argv: Vec<String>) -> i32 {
    py.detach(move || portlease_cli::run(argv))
}

/// The registry directory used when none is given: `$PORTLEASE_DIR`, else a per-user
/// RAM-backed directory.
#[pyfunction]
fn default_dir() -> String {
    portlease::default_dir().to_string_lossy().into_owned()
}

/// Whether `port` can be bound now for both TCP and UDP on every local address (the
/// bind check of every allocation), as portpicker's `is_port_free`.
#[pyfunction]
fn is_port_free(py: Python<'_>, port: u16) -> PyResult<bool> {
    py.detach(move || portlease::probe::is_port_free(port, portlease::Protocol::Both, None))
        .map_err(errors::to_py)
}

/// The native module, `portlease._native`.
#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    // Whether this build stops at PORTLEASE_TEST_STOP_AT's points (test builds only).
    module.add("TEST_HOOKS", portlease::test_hooks::ENABLED)?;
    module.add_class::<allocator::NativeAllocator>()?;
    module.add_class::<lease::NativeLease>()?;
    module.add_function(wrap_pyfunction!(run_cli, module)?)?;
    module.add_function(wrap_pyfunction!(default_dir, module)?)?;
    module.add_function(wrap_pyfunction!(is_port_free, module)?)?;
    module.add_function(wrap_pyfunction!(allocator::existing_leases_json, module)?)?;
    module.add("DEFAULT_RANGE_START", *portlease::DEFAULT_RANGE.start())?;
    module.add("DEFAULT_RANGE_END", *portlease::DEFAULT_RANGE.end())?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
