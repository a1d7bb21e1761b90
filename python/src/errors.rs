//! The library's errors as the Python exception classes of `portlease._errors`.

use pyo3::prelude::*;

/// An attribute of an exception: a number or a text.
enum Value {
    Number(u32),
    Text(String),
}

/// The exception class (in `portlease._errors`) and attributes for `error`.
fn class_of(error: &portlease::Error) -> (&'static str, Vec<(&'static str, Value)>) {
    use Value::{Number, Text};
    use portlease::Error as E;
    match error {
        E::LockTimeout { dir, .. } => (
            "LockTimeout",
            vec![("dir", Text(dir.display().to_string()))],
        ),
        E::Exhausted { ranges, .. } => ("Exhausted", vec![("ranges", Text(ranges.clone()))]),
        E::InvalidRequest(_) => ("InvalidRequest", Vec::new()),
        E::NoSuchProcess { pid } => ("NoSuchProcess", vec![("pid", Number(*pid))]),
        E::OwnerLimit { pid, .. } => ("OwnerLimit", vec![("pid", Number(*pid))]),
        E::LeaseLost { port } => ("LeaseLost", vec![("port", Number(u32::from(*port)))]),
        E::Io { path, .. } => (
            "RegistryIOError",
            vec![("path", Text(path.display().to_string()))],
        ),
        E::Unsafe { path, .. } => (
            "UnsafeDirectory",
            vec![("path", Text(path.display().to_string()))],
        ),
        E::Bind { addr, .. } => ("BindError", vec![("address", Text(addr.to_string()))]),
        E::NotLeased { port } => ("NotLeased", vec![("port", Number(u32::from(*port)))]),
        E::NotPortlease { port, .. } => ("NotPortlease", vec![("port", Number(u32::from(*port)))]),
        E::HeldByProcess { key, pid, .. } => (
            "HeldByProcess",
            vec![("key", Text(key.clone())), ("pid", Number(*pid))],
        ),
        E::NoRegistry { dir } => ("NoRegistry", vec![("dir", Text(dir.display().to_string()))]),
        E::ReadOnly { dir } => ("ReadOnly", vec![("dir", Text(dir.display().to_string()))]),
        E::TooLarge { path, .. } => (
            "RegistryTooLarge",
            vec![("path", Text(path.display().to_string()))],
        ),
        // `portlease::Error` is non-exhaustive: an error added later is still an Error.
        _ => ("Error", Vec::new()),
    }
}

/// Converts a library error into the matching `portlease` exception.
pub(crate) fn to_py(error: portlease::Error) -> PyErr {
    Python::attach(|py| {
        let (name, attributes) = class_of(&error);
        let made = (|| -> PyResult<PyErr> {
            let class = py.import("portlease._errors")?.getattr(name)?;
            let exception = class.call1((error.to_string(),))?;
            for (attribute, value) in attributes {
                match value {
                    Value::Number(number) => exception.setattr(attribute, number)?,
                    Value::Text(text) => exception.setattr(attribute, text)?,
                }
            }
            Ok(PyErr::from_value(exception))
        })();
        // Only a broken installation lacks the classes: then say what failed, still.
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
