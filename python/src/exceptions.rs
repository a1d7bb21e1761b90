//! The exception classes of `portlease`, made here: one per error of the library, all
//! under `Error`, shown as `portlease.X` (where users import them from).
//!
//! A class with one base is PyO3's `create_exception!`. A class that is a built-in
//! exception too (`LockTimeout` is a `TimeoutError`, as the seed's lock timeout was) is
//! a [`Derived`]: made with `type(name, bases, namespace)`, as `class` would make it,
//! once per interpreter (when the module is set up).

use pyo3::PyTypeInfo;
use pyo3::create_exception;
use pyo3::exceptions::{
    PyException, PyFileNotFoundError, PyOSError, PyOverflowError, PyPermissionError,
    PyProcessLookupError, PyRuntimeError, PyTimeoutError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

create_exception!(
    portlease,
    Error,
    PyException,
    "Base class of every error portlease raises."
);
create_exception!(
    portlease,
    OwnerLimit,
    Error,
    "The owner already holds as many leases as the request allows. ``pid`` is its pid."
);
create_exception!(
    portlease,
    LeaseLost,
    Error,
    "The lease is gone from the registry (it expired and was reclaimed, or another\n\
     process released it). ``port`` is the port."
);
create_exception!(
    portlease,
    NotLeased,
    Error,
    "The port holds no lease at all (never leased, or released already), so there is\n\
     no lease to change. ``port`` is the port."
);
create_exception!(
    portlease,
    NotPortlease,
    Error,
    "The port's lease was not made by portlease (it is the seed's, or not understood),\n\
     so portlease neither renews nor hands it on. ``port`` is the port."
);
create_exception!(
    portlease,
    HeldByProcess,
    Error,
    "The lease is held by a running process that the caller may not end or hand on.\n\
     ``key`` is its registry key (the port), ``pid`` the process."
);
create_exception!(
    portlease,
    ReadOnly,
    Error,
    "A change was asked of a registry opened to read only. ``dir`` is the directory."
);
create_exception!(
    portlease,
    RegistryTooLarge,
    Error,
    "A change would have made the registry larger than every reader accepts (64 MiB),\n\
     so nothing was changed. ``path`` names the registry file."
);

/// An exception class with a built-in exception among its bases, or under one that
/// has: `class name(parent, builtin)`, made the first time it is asked for.
pub(crate) struct Derived {
    name: &'static str,
    module: &'static str,
    doc: &'static str,
    parent: Parent,
    builtin: Option<fn(Python<'_>) -> Bound<'_, PyType>>,
    class: PyOnceLock<Py<PyType>>,
}

/// The portlease class a [`Derived`] class is under.
enum Parent {
    Error,
    Derived(&'static Derived),
}

impl Derived {
    const fn new(
        name: &'static str,
        module: &'static str,
        parent: Parent,
        builtin: Option<fn(Python<'_>) -> Bound<'_, PyType>>,
        doc: &'static str,
    ) -> Derived {
        Derived {
            name,
            module,
            doc,
            parent,
            builtin,
            class: PyOnceLock::new(),
        }
    }

    /// The class, made on first use.
    pub(crate) fn class<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyType>> {
        self.class
            .get_or_try_init(py, || self.make(py))
            .map(|class| class.bind(py).clone())
    }

    fn make(&self, py: Python<'_>) -> PyResult<Py<PyType>> {
        let mut bases = vec![match self.parent {
            Parent::Error => py.get_type::<Error>(),
            Parent::Derived(parent) => parent.class(py)?,
        }];
        bases.extend(self.builtin.map(|builtin| builtin(py)));
        let namespace = PyDict::new(py);
        namespace.set_item("__module__", self.module)?;
        namespace.set_item("__doc__", self.doc)?;
        let class =
            py.get_type::<PyType>()
                .call1((self.name, PyTuple::new(py, bases)?, namespace))?;
        Ok(class.cast_into::<PyType>()?.unbind())
    }
}

/// A built-in exception class, as a [`Derived`] class's second base.
fn builtin<T: PyTypeInfo>(py: Python<'_>) -> Bound<'_, PyType> {
    py.get_type::<T>()
}

pub(crate) static LOCK_TIMEOUT: Derived = Derived::new(
    "LockTimeout",
    "portlease",
    Parent::Error,
    Some(builtin::<PyTimeoutError>),
    "Another process held the registry lock for longer than the lock timeout.\n\n\
     Also a ``TimeoutError``, as the seed module's lock timeout was. ``dir`` is the\n\
     registry directory.",
);

pub(crate) static EXHAUSTED: Derived = Derived::new(
    "Exhausted",
    "portlease",
    Parent::Error,
    Some(builtin::<PyRuntimeError>),
    "No port (or block of ports) in the requested ranges is free.\n\n\
     Also a ``RuntimeError``, as the seed module's exhaustion was. ``ranges`` says which\n\
     ranges were searched.",
);

pub(crate) static NO_FREE_PORT_FOUND: Derived = Derived::new(
    "NoFreePortFoundError",
    "portlease",
    Parent::Derived(&EXHAUSTED),
    None,
    "portpicker's name for no free port: raised by ``pick_unused_port`` when no port\n\
     is free, and when the portserver asked answered without a port (it refused: out of\n\
     ports, or over its limit for this user). An :class:`Exhausted` too.",
);

pub(crate) static INVALID_REQUEST: Derived = Derived::new(
    "InvalidRequest",
    "portlease",
    Parent::Error,
    Some(builtin::<PyValueError>),
    "The request cannot be satisfied as written (a bad port, range, count or TTL).",
);

pub(crate) static PORT_OUT_OF_RANGE: Derived = Derived::new(
    "PortOutOfRange",
    "portlease.aidb",
    Parent::Derived(&INVALID_REQUEST),
    Some(builtin::<PyOverflowError>),
    "A port past 65535 (or below 0) would be next to try: raised where the seed's\n\
     ``bind()`` raised ``OverflowError``, which this is too (and an ``InvalidRequest``).",
);

pub(crate) static NO_SUCH_PROCESS: Derived = Derived::new(
    "NoSuchProcess",
    "portlease",
    Parent::Error,
    Some(builtin::<PyProcessLookupError>),
    "The owner process named in the request does not run. ``pid`` is its pid.",
);

pub(crate) static NO_REGISTRY: Derived = Derived::new(
    "NoRegistry",
    "portlease",
    Parent::Error,
    Some(builtin::<PyFileNotFoundError>),
    "A call that only reads was pointed at a registry directory that does not exist.\n\
     ``dir`` is the directory.",
);

pub(crate) static REGISTRY_IO_ERROR: Derived = Derived::new(
    "RegistryIOError",
    "portlease",
    Parent::Error,
    Some(builtin::<PyOSError>),
    "Reading or writing a file of the registry failed. ``path`` names the file.",
);

pub(crate) static UNSAFE_DIRECTORY: Derived = Derived::new(
    "UnsafeDirectory",
    "portlease",
    Parent::Error,
    Some(builtin::<PyPermissionError>),
    "The registry directory or one of its files is not safe to use (owned by another\n\
     user, writable by others, a symbolic link). ``path`` names it.",
);

pub(crate) static BIND_ERROR: Derived = Derived::new(
    "BindError",
    "portlease",
    Parent::Error,
    Some(builtin::<PyOSError>),
    "Binding a socket to a leased port failed. ``address`` is the address.",
);

/// Every [`Derived`] class, parents before their children.
static DERIVED: [&Derived; 10] = [
    &LOCK_TIMEOUT,
    &EXHAUSTED,
    &NO_FREE_PORT_FOUND,
    &INVALID_REQUEST,
    &PORT_OUT_OF_RANGE,
    &NO_SUCH_PROCESS,
    &NO_REGISTRY,
    &REGISTRY_IO_ERROR,
    &UNSAFE_DIRECTORY,
    &BIND_ERROR,
];

/// Makes every class and adds it to `module` under its name.
pub(crate) fn add_to(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    module.add("Error", py.get_type::<Error>())?;
    module.add("OwnerLimit", py.get_type::<OwnerLimit>())?;
    module.add("LeaseLost", py.get_type::<LeaseLost>())?;
    module.add("NotLeased", py.get_type::<NotLeased>())?;
    module.add("NotPortlease", py.get_type::<NotPortlease>())?;
    module.add("HeldByProcess", py.get_type::<HeldByProcess>())?;
    module.add("ReadOnly", py.get_type::<ReadOnly>())?;
    module.add("RegistryTooLarge", py.get_type::<RegistryTooLarge>())?;
    for derived in DERIVED {
        module.add(derived.name, derived.class(py)?)?;
    }
    Ok(())
}
