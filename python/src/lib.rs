//! The native part of the `portlease` Python package: the library's allocator and
//! lease guard as Python classes, and the command line as a function.
//!
//! It also makes the exception classes (`exceptions`), checks every argument as the
//! caller passed it, by the library's rules (`args`), and holds the defaults every
//! front end shares. The Python modules beside it (`python/portlease/`) build the
//! public API on top: the pythonic classes, `portlease.aidb`, portpicker's calls and
//! the pytest plugin, passing arguments on unchecked. Every call here that may wait
//! (for the registry lock, a bind check, the disk) runs with the GIL released, and
//! answers Ctrl-C while it waits (`signals`).

mod allocator;
mod args;
mod errors;
mod exceptions;
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
fn is_port_free(py: Python<'_>, port: &Bound<'_, PyAny>) -> PyResult<bool> {
    let port = args::port(port, "port")?;
    py.detach(move || portlease::probe::is_port_free(port, portlease::Protocol::Both, None))
        .map_err(errors::to_py)
}

/// `value` as a port, for the calls that keep ports in Python alone (portpicker's
/// reserved pool); raises `InvalidRequest` naming it `what`.
#[pyfunction]
fn check_port(value: &Bound<'_, PyAny>, what: &str) -> PyResult<u16> {
    args::port(value, what)
}

/// `value` as a process id (one a portserver is asked for).
#[pyfunction]
fn check_pid(value: &Bound<'_, PyAny>, what: &str) -> PyResult<u32> {
    args::pid(value, what)
}

/// `value` as any int (not a bool), as portpicker's `return_port` takes it.
#[pyfunction]
fn check_int(value: &Bound<'_, PyAny>, what: &str) -> PyResult<i128> {
    args::int(value, what)
}

/// `value` as a str or `None` (a portserver's address).
#[pyfunction]
fn check_text(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Option<String>> {
    args::text(value, what)
}

/// `value` as a directory's path (str or `os.PathLike`) or `None`.
#[pyfunction]
fn check_dir(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Option<String>> {
    args::directory(value, what)
}

/// The defaults every front end shares, from the library: Python repeats none.
fn add_defaults(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add("DEFAULT_RANGE_START", *portlease::DEFAULT_RANGE.start())?;
    module.add("DEFAULT_RANGE_END", *portlease::DEFAULT_RANGE.end())?;
    module.add(
        "DEFAULT_LOCK_TIMEOUT",
        portlease::DEFAULT_LOCK_TIMEOUT.as_secs_f64(),
    )?;
    module.add("REGISTRY_FILE", portlease::REGISTRY_FILE)?;
    module.add("LOCK_FILE", portlease::LOCK_FILE)?;
    module.add("SEED_LEASE_SECS", portlease::SEED_LEASE_SECS)?;
    module.add("SEED_RANGE_START", portlease::parse::SEED_RANGE_START)?;
    module.add("SEED_RANGE_SIZE", portlease::parse::SEED_RANGE_SIZE)?;
    Ok(())
}

/// The native module, `portlease._native`.
#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    // Whether this build stops at PORTLEASE_TEST_STOP_AT's points (test builds only).
    module.add("TEST_HOOKS", portlease::test_hooks::ENABLED)?;
    // What this build has of Linux (`portlease::platform`), and the command's `serve`.
    module.add("REQUEST_BOARD", portlease::platform::REQUEST_BOARD)?;
    module.add("PROCESS_IDENTITY", portlease::platform::PROCESS_IDENTITY)?;
    module.add("SERVE", portlease_cli::SERVE)?;
    module.add_class::<allocator::NativeAllocator>()?;
    module.add_class::<lease::NativeLease>()?;
    exceptions::add_to(module)?;
    module.add_function(wrap_pyfunction!(run_cli, module)?)?;
    module.add_function(wrap_pyfunction!(default_dir, module)?)?;
    module.add_function(wrap_pyfunction!(is_port_free, module)?)?;
    module.add_function(wrap_pyfunction!(allocator::existing_leases_json, module)?)?;
    for check in [
        wrap_pyfunction!(check_port, module)?,
        wrap_pyfunction!(check_pid, module)?,
        wrap_pyfunction!(check_int, module)?,
        wrap_pyfunction!(check_text, module)?,
        wrap_pyfunction!(check_dir, module)?,
    ] {
        module.add_function(check)?;
    }
    add_defaults(module)?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
