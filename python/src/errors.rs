//! The library's errors as the exceptions of `portlease` (made in `exceptions`), each
//! variant to its class: no class is looked up by name.

use portlease::parse::SeedRefusal;
use pyo3::prelude::*;
use pyo3::types::PyType;

use crate::exceptions as classes;

/// An attribute of an exception: a number or a text.
enum Value {
    Number(u32),
    Text(String),
}

type Attributes = Vec<(&'static str, Value)>;

/// The exception class and attributes for `error`.
fn class_of<'py>(
    py: Python<'py>,
    error: &portlease::Error,
) -> PyResult<(Bound<'py, PyType>, Attributes)> {
    use Value::{Number, Text};
    use portlease::Error as E;
    let path = |path: &std::path::Path| Text(path.display().to_string());
    Ok(match error {
        E::LockTimeout { dir, .. } => (classes::LOCK_TIMEOUT.class(py)?, vec![("dir", path(dir))]),
        // Only when a signal handler raised, whose exception `signals` raises instead.
        E::Interrupted { .. } => (py.get_type::<classes::Error>(), Vec::new()),
        E::Exhausted { ranges, .. } => (
            classes::EXHAUSTED.class(py)?,
            vec![("ranges", Text(ranges.clone()))],
        ),
        E::InvalidRequest(_) => (classes::INVALID_REQUEST.class(py)?, Vec::new()),
        E::NoSuchProcess { pid } => (
            classes::NO_SUCH_PROCESS.class(py)?,
            vec![("pid", Number(*pid))],
        ),
        E::OwnerLimit { pid, .. } => (
            py.get_type::<classes::OwnerLimit>(),
            vec![("pid", Number(*pid))],
        ),
        E::LeaseLost { port } => (
            py.get_type::<classes::LeaseLost>(),
            vec![("port", Number((*port).into()))],
        ),
        E::NotLeased { port } => (
            py.get_type::<classes::NotLeased>(),
            vec![("port", Number((*port).into()))],
        ),
        E::NotPortlease { port, .. } => (
            py.get_type::<classes::NotPortlease>(),
            vec![("port", Number((*port).into()))],
        ),
        E::HeldByProcess { key, pid, .. } => (
            py.get_type::<classes::HeldByProcess>(),
            vec![("key", Text(key.clone())), ("pid", Number(*pid))],
        ),
        E::Io { path: file, .. } => (
            classes::REGISTRY_IO_ERROR.class(py)?,
            vec![("path", path(file))],
        ),
        E::Unsafe { path: file, .. } => (
            classes::UNSAFE_DIRECTORY.class(py)?,
            vec![("path", path(file))],
        ),
        E::TooLarge { path: file, .. } => (
            py.get_type::<classes::RegistryTooLarge>(),
            vec![("path", path(file))],
        ),
        E::NoRegistry { dir } => (classes::NO_REGISTRY.class(py)?, vec![("dir", path(dir))]),
        E::ReadOnly { dir } => (py.get_type::<classes::ReadOnly>(), vec![("dir", path(dir))]),
        E::Bind { addr, .. } => (
            classes::BIND_ERROR.class(py)?,
            vec![("address", Text(addr.to_string()))],
        ),
        // The package never spawns through the library (`Lease.popen` runs its own
        // trampoline), so this does not arise; still an Error if it ever does.
        E::Spawn { .. } => (py.get_type::<classes::Error>(), Vec::new()),
        // `portlease::Error` is non-exhaustive: a variant added after this list was
        // written is still an Error, until it is given a class of its own above.
        _ => (py.get_type::<classes::Error>(), Vec::new()),
    })
}

/// An instance of `class` saying `message`, with `attributes`.
fn raise(class: &Bound<'_, PyType>, message: String, attributes: Attributes) -> PyResult<PyErr> {
    let exception = class.call1((message,))?;
    for (attribute, value) in attributes {
        match value {
            Value::Number(number) => exception.setattr(attribute, number)?,
            Value::Text(text) => exception.setattr(attribute, text)?,
        }
    }
    Ok(PyErr::from_value(exception))
}

/// Converts a library error into the matching `portlease` exception.
pub(crate) fn to_py(error: portlease::Error) -> PyErr {
    Python::attach(|py| {
        let made = class_of(py, &error)
            .and_then(|(class, attributes)| raise(&class, error.to_string(), attributes));
        // Only a failure to make the exception (out of memory) lands here: raise that.
        made.unwrap_or_else(|e| e)
    })
}

/// `InvalidRequest` (a `ValueError`) saying `message`.
pub(crate) fn invalid(message: String) -> PyErr {
    to_py(portlease::Error::InvalidRequest(message))
}

/// A seed allocation's refusal as the exception the seed's caller expects:
/// `portlease.aidb.PortOutOfRange` (an `OverflowError`) where the seed's `bind()`
/// raised, `Exhausted` (a `RuntimeError`) with the seed's message, `InvalidRequest`.
pub(crate) fn seed_refusal(refusal: SeedRefusal) -> PyErr {
    Python::attach(|py| {
        let made = match refusal {
            SeedRefusal::OutsidePorts(message) => classes::PORT_OUT_OF_RANGE
                .class(py)
                .and_then(|class| raise(&class, message, Vec::new())),
            SeedRefusal::PortZero(message) => Ok(invalid(message)),
            SeedRefusal::Exhausted { message, ranges } => classes::EXHAUSTED
                .class(py)
                .and_then(|class| raise(&class, message, vec![("ranges", Value::Text(ranges))])),
            // Added to the library after this was written: its message says what.
            other => Ok(invalid(other.to_string())),
        };
        made.unwrap_or_else(|e| e)
    })
}

/// `Result` with the library's error turned into the Python exception.
pub(crate) trait IntoPy<T> {
    /// The value, or the matching `portlease` exception.
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for portlease::Result<T> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}
