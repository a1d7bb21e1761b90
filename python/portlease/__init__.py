"""portlease: TCP/UDP port leases that never collide, shared by every process on a host.

A port handed out is a lease recorded in a registry that all processes of the host
share (the ``portlease`` command, Rust programs, AIDB's seed module), checked by
binding. A lease ends when it is released, when its owner process exits, or when
its time runs out.

- Pythonic leases: ``with portlease.lease() as held: serve(held.port)``, or an
  :class:`Allocator` on a directory of your choice; ``Lease.socket()`` gives a bound
  socket, with no race at all.
- portpicker's whole API: ``import portlease as portpicker``;
  ``portpicker.pick_unused_port()``, ``portpicker.return_port(port)``,
  ``add_reserved_port``, ``is_port_free``, ``bind``, ``get_port_from_port_server``
  and the CapWords names.
- The AIDB drop-in: ``from portlease.aidb import allocate_port, release_port``.
- A pytest plugin: the fixtures ``unused_port``, ``unused_udp_port`` and
  ``unused_port_factory``.
- The ``portlease`` command, installed with the package.
"""

from __future__ import annotations

from portlease._api import (
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_RANGE,
    Allocator,
    Lease,
    LeaseInfo,
    default_dir,
    lease,
    leases,
)
# The exception classes: made by the native module, shown as portlease.X.
from portlease._native import (
    BindError,
    Error,
    Exhausted,
    HeldByProcess,
    InvalidRequest,
    LeaseLost,
    LockTimeout,
    NoFreePortFoundError,
    NoRegistry,
    NoSuchProcess,
    NotLeased,
    NotPortlease,
    OwnerLimit,
    ReadOnly,
    RegistryIOError,
    RegistryTooLarge,
    UnsafeDirectory,
)
# The workspace's version (Cargo.toml), which the native module was built with.
from portlease._native import __version__ as __version__
from portlease._portpicker import (
    PICK_RANGE,
    Bind,
    GetPortFromPortServer,
    IsPortFree,
    PickUnusedPort,
    add_reserved_port,
    bind,
    get_port_from_port_server,
    is_port_free,
    pick_unused_port,
    return_port,
)

# portpicker's private pools, under its names, so that code (and portpicker's own
# tests) written against `import portpicker` that inspects or clears them still works.
from portlease._portpicker import _free_ports, _owned_ports, _random_ports, _winapi  # noqa: F401

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "DEFAULT_RANGE",
    "PICK_RANGE",
    "Allocator",
    "BindError",
    "Error",
    "Exhausted",
    "HeldByProcess",
    "InvalidRequest",
    "Lease",
    "LeaseInfo",
    "LeaseLost",
    "LockTimeout",
    "NoFreePortFoundError",
    "NoRegistry",
    "NoSuchProcess",
    "NotLeased",
    "NotPortlease",
    "OwnerLimit",
    "ReadOnly",
    "RegistryIOError",
    "RegistryTooLarge",
    "UnsafeDirectory",
    "add_reserved_port",
    "bind",
    "default_dir",
    "get_port_from_port_server",
    "is_port_free",
    "lease",
    "leases",
    "pick_unused_port",
    "return_port",
]
