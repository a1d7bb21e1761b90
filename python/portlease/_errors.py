"""The exceptions of portlease: one class per error of the library, all under Error."""

from __future__ import annotations


class Error(Exception):
    """Base class of every error portlease raises."""


class LockTimeout(Error, TimeoutError):
    """Another process held the registry lock for longer than the lock timeout.

    Also a ``TimeoutError``, as the seed module's lock timeout was. ``dir`` is the
    registry directory.
    """

    dir: str


class Exhausted(Error, RuntimeError):
    """No port (or block of ports) in the requested ranges is free.

    Also a ``RuntimeError``, as the seed module's exhaustion was. ``ranges`` says which
    ranges were searched.
    """

    ranges: str


class NoFreePortFoundError(Exhausted):
    """portpicker's name for no free port: raised by ``pick_unused_port`` when no port
    is free, and when the portserver asked answered without a port (it refused: out of
    ports, or over its limit for this user). An :class:`Exhausted` too."""


class InvalidRequest(Error, ValueError):
    """The request cannot be satisfied as written (a bad port, range, count or TTL)."""


class NoSuchProcess(Error, ProcessLookupError):
    """The owner process named in the request does not run. ``pid`` is its pid."""

    pid: int


class OwnerLimit(Error):
    """The owner already holds as many leases as the request allows. ``pid`` is its pid."""

    pid: int


class LeaseLost(Error):
    """The lease is gone from the registry (it expired and was reclaimed, or another
    process released it). ``port`` is the port."""

    port: int


class NotLeased(Error):
    """The port holds no lease at all (never leased, or released already), so there is
    no lease to change. ``port`` is the port."""

    port: int


class NotPortlease(Error):
    """The port's lease was not made by portlease (it is the seed's, or not understood),
    so portlease neither renews nor hands it on. ``port`` is the port."""

    port: int


class HeldByProcess(Error):
    """The lease is held by a running process that the caller may not end or hand on.
    ``key`` is its registry key (the port), ``pid`` the process."""

    key: str
    pid: int


class NoRegistry(Error, FileNotFoundError):
    """A call that only reads was pointed at a registry directory that does not exist.
    ``dir`` is the directory."""

    dir: str


class ReadOnly(Error):
    """A change was asked of a registry opened to read only. ``dir`` is the directory."""

    dir: str


class RegistryIOError(Error, OSError):
    """Reading or writing a file of the registry failed. ``path`` names the file."""

    path: str


class RegistryTooLarge(Error):
    """A change would have made the registry larger than every reader accepts (64 MiB),
    so nothing was changed. ``path`` names the registry file."""

    path: str


class UnsafeDirectory(Error, PermissionError):
    """The registry directory or one of its files is not safe to use (owned by another
    user, writable by others, a symbolic link). ``path`` names it."""

    path: str


class BindError(Error, OSError):
    """Binding a socket to a leased port failed. ``address`` is the address."""

    address: str


# Shown as portlease.Exhausted etc., where users import them from.
for _class in (Error, LockTimeout, Exhausted, NoFreePortFoundError, InvalidRequest, NoSuchProcess, OwnerLimit, LeaseLost,
               NotLeased, NotPortlease, HeldByProcess, NoRegistry, ReadOnly, RegistryIOError,
               RegistryTooLarge, UnsafeDirectory, BindError):
    _class.__module__ = "portlease"
del _class

__all__ = [
    "BindError",
    "Error",
    "Exhausted",
    "HeldByProcess",
    "InvalidRequest",
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
]
