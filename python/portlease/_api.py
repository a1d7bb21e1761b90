"""The pythonic API: Allocator, Lease, LeaseInfo, lease() and leases()."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket as _socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Iterable, Literal, Optional, Sequence, Tuple, Union

from portlease import _native

#: How long a call waits for the registry lock unless told otherwise, in seconds.
DEFAULT_LOCK_TIMEOUT = _native.DEFAULT_LOCK_TIMEOUT

#: The range searched when a request names none and ``$PORTLEASE_RANGE`` is unset
#: (inclusive): 15000-24999, the same for every front end.
DEFAULT_RANGE: Tuple[int, int] = (_native.DEFAULT_RANGE_START, _native.DEFAULT_RANGE_END)

#: A range of ports: ``(start, end)`` inclusive, a ``range`` object, or ``"START-END"``
#: (several joined by commas, as ``$PORTLEASE_RANGE`` writes them, are taken too).
PortRange = Union[Tuple[int, int], range, str]
#: Which protocols a port must be free for, and is leased for.
ProtocolName = Literal["tcp", "udp", "both"]
#: Whose lease it is: ``"self"`` (the calling process), a pid, or ``None`` (no process:
#: the lease lives by its TTL alone).
OwnerSpec = Union[int, None, Literal["self"]]
#: A TTL in seconds, ``None`` (for as long as the owner lives), or ``"default"`` (the
#: library's default).
TtlSpec = Union[float, None, Literal["default"]]


@dataclass(frozen=True)
class LeaseInfo:
    """One registry entry as it stood when it was read: what ``portlease list --json`` shows."""

    #: The registry key, as written in the file.
    key: str
    #: The port the key names (``None`` for a key that is not a port).
    port: Optional[int]
    #: Who wrote the entry: ``"portlease"``, ``"seed"`` (AIDB's module) or ``"unknown"``.
    kind: str
    #: The recorded pid: the owner's, or for a lease with no owner, the allocator's.
    pid: Optional[int]
    #: Whether the lease ends with a process (``False``: it lives by its TTL alone).
    owned_by_process: bool
    #: Whether the owner process still runs (``None`` when there is no owner).
    owner_alive: Optional[bool]
    #: Seconds since the lease was made or last renewed.
    age_secs: Optional[float]
    #: The lease's lifetime in seconds (``None``: for its owner's lifetime).
    ttl_secs: Optional[float]
    #: Seconds until the TTL runs out (0 when it has); ``None`` with no TTL.
    ttl_left_secs: Optional[float]
    #: The protocols leased: ``"tcp"``, ``"udp"`` or ``"both"``.
    protocol: Optional[str]
    #: The label given when it was made.
    label: Optional[str]
    #: The tool that made it: "library", "cli", "exec", "serve", "python", "aidb", ...
    source: Optional[str]
    #: Whether the lease has ended and will be reclaimed.
    stale: bool

    @classmethod
    def _from_json(cls, text: str) -> list[LeaseInfo]:
        fields = cls.__dataclass_fields__
        return [cls(**{k: v for k, v in item.items() if k in fields}) for item in json.loads(text)]


class Lease:
    """Ports leased to the caller; a context manager that releases them on exit.

    ``port`` is the (first) port, ``ports`` all of them. The lease ends on
    :meth:`release`, when the block of a ``with`` ends, or when the object is garbage
    collected, unless :meth:`keep` was called; it also ends when its owner process
    exits or its TTL passes. A forked child never releases its parent's leases.
    """

    __slots__ = ("_native", "_protocol")

    def __init__(self, native: _native.NativeLease, protocol: str) -> None:
        """Wraps a native lease (made by :meth:`Allocator.allocate`)."""
        self._native = native
        self._protocol = protocol

    @property
    def port(self) -> int:
        """The leased port (the first, when several were asked for)."""
        return self._native.ports[0]

    @property
    def ports(self) -> Tuple[int, ...]:
        """Every leased port, in the order they were chosen (ascending for a block)."""
        return tuple(self._native.ports)

    @property
    def held(self) -> bool:
        """Whether this object still holds the lease (not released, not a socket yet)."""
        return self._native.held

    @property
    def kept(self) -> bool:
        """Whether :meth:`keep` was called: the lease outlives this object."""
        return self._native.kept

    def release(self) -> None:
        """End the lease now; a lease already ended is left alone.

        Another thread's call on this lease finishes first. Raises LeaseLost when a port
        went to somebody else meanwhile (this lease had expired); the other ports are
        released all the same. When the release fails (LockTimeout, or Ctrl-C while it
        waits), the lease is still held, and the release can be retried.
        """
        self._native.release()

    def renew(self, ttl: Optional[float] = None) -> None:
        """Start the lease's time again from now, with ``ttl`` seconds as its new
        lifetime, or the lifetime it had (``None``). Raises LeaseLost if it ended
        (released, turned into a socket, or expired)."""
        self._native.renew(ttl)

    def keep(self) -> Tuple[int, ...]:
        """Leave the lease in the registry when this object goes (it ends when its
        owner exits or its TTL passes, or by :meth:`release`); returns the ports."""
        return tuple(self._native.keep())

    def hand_to(self, pid: int) -> None:
        """Hand the lease to the running process ``pid`` (say, a server just spawned),
        recorded by pid and start time: from now on it lasts exactly as long as that
        process runs. Any TTL is cleared, as ``portlease hand`` does: a lease made with
        ``ttl=60`` cannot expire while the process, perhaps still starting, has yet to
        bind its port. Raises NoSuchProcess, LeaseLost (the lease has ended)."""
        self._native.hand_to(pid)

    def socket(self, kind: Optional[Literal["tcp", "udp"]] = None) -> _socket.socket:
        """Bind a socket to the one leased port and end the lease: the bound socket
        keeps the port from then on, so there is no race at all.

        ``kind`` is ``"tcp"`` (a listening socket) or ``"udp"``; by default UDP for a
        UDP lease, else TCP. It binds the request's host, or 127.0.0.1.
        """
        if kind is None:
            kind = "udp" if self._protocol == "udp" else "tcp"
        fd = self._native.bind_socket_fd(kind)
        return _socket.socket(fileno=fd)

    def __enter__(self) -> Lease:
        """Returns the lease itself."""
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        """Releases the lease (unless it was kept or turned into a socket)."""
        if self._native.held and not self._native.kept:
            self._native.release()

    def __repr__(self) -> str:
        """Shows the ports and whether the lease is still held."""
        state = ("kept" if self.kept else "held") if self.held else "ended"
        return f"<portlease.Lease ports={list(self.ports)} {state}>"

    def popen(
        self,
        args: Union[str, Sequence[str]],
        *,
        listen: bool = False,
        names: Optional[Sequence[str]] = None,
        **popen_kwargs: Any,
    ) -> subprocess.Popen[Any]:
        """Start ``args`` (as :class:`subprocess.Popen` does, with ``popen_kwargs``) as
        the owner of this lease from before the command runs.

        The child starts as a small trampoline that waits until the lease is recorded
        as its own (pid and start time; its TTL cleared, as :meth:`hand_to` does),
        then execs the command in the same process: ``popen(...).pid`` is the
        command's pid. If this process dies before the hand-over, the trampoline exits
        with code 125 without running the command, so no command ever runs on a port
        leased to no living process (a ``Popen`` followed by :meth:`hand_to` leaves
        such a moment).

        With ``listen=True``, each leased port is bound first (on the request's host,
        or 127.0.0.1; listening for TCP, bound for a UDP lease) and passed as
        descriptors 3, 4, ..., with ``LISTEN_FDS``, ``LISTEN_PID`` (the command's own
        pid) and ``LISTEN_FDNAMES`` (``names``, else ``port0``, ``port1``, ...), as
        systemd's socket activation does: ``uvicorn --fd 3``, gunicorn and Rust's
        ``listenfd`` take them.

        The lease stays with this object too: release it (or leave the ``with`` block)
        once the command has ended; it ends with the command anyway. ``shell=True`` runs
        ``args`` with ``/bin/sh -c``; ``executable`` and ``preexec_fn`` are refused.
        Raises FileNotFoundError or PermissionError for a command that cannot run
        (nothing ran, the lease is untouched), LeaseLost, and ``Popen``'s errors.
        """
        for refused in ("executable", "preexec_fn", "pass_fds"):
            if refused in popen_kwargs:
                raise TypeError(f"Lease.popen() does not take {refused}=")
        if isinstance(args, (str, bytes, os.PathLike)):
            command = [os.fsdecode(args)]
        else:
            command = [os.fsdecode(arg) for arg in args]
        if popen_kwargs.pop("shell", False):
            command = ["/bin/sh", "-c", *command]
        if not command:
            raise ValueError("Lease.popen() needs a command")
        _check_runnable(command[0], popen_kwargs.get("env"), popen_kwargs.get("cwd"))
        fds: list[int] = []
        socket_names: list[str] = []
        if listen:
            kind = "udp" if self._protocol == "udp" else "tcp"
            fds, socket_names = self._native.listen_fds(kind, names)
        gate_read, gate_write = os.pipe()
        try:
            trampoline = [
                sys.executable,
                "-I",
                "-S",
                "-c",
                _TRAMPOLINE,
                str(gate_read),
                str(len(fds) if listen else -1),
                *[str(fd) for fd in fds],
                *socket_names,
                "--",
                *command,
            ]
            child = subprocess.Popen(trampoline, pass_fds=(gate_read, *fds), **popen_kwargs)
        except BaseException:
            os.close(gate_write)
            raise
        finally:
            os.close(gate_read)
            for fd in fds:
                os.close(fd)
        try:
            _stop_here_for_tests("forked")
            self._native.hand_to(child.pid)
            _stop_here_for_tests("handed")
            os.write(gate_write, b"G")
        except BaseException:
            os.close(gate_write)
            child.wait()
            raise
        os.close(gate_write)
        return child



class Allocator:
    """Hands out leases from the registry in one directory.

    ``dir`` defaults to ``$PORTLEASE_DIR``, else a per-user RAM-backed directory
    (the one the ``portlease`` command uses); it is created with mode 0700 if missing.
    ``lock_timeout`` is how long a call waits for the registry lock, in seconds. One
    Allocator may be used from many threads; every call releases the GIL.
    """

    __slots__ = ("_native",)

    def __init__(
        self,
        dir: Union[str, os.PathLike[str], None] = None,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        """Opens (or creates) the registry directory ``dir``."""
        self._native = _native.NativeAllocator(dir, lock_timeout)

    @property
    def dir(self) -> str:
        """The registry directory."""
        return self._native.dir

    def allocate(
        self,
        *,
        ranges: Union[PortRange, Iterable[PortRange], None] = None,
        preferred: Optional[int] = None,
        exclude: Iterable[int] = (),
        count: int = 1,
        block: bool = False,
        protocol: ProtocolName = "tcp",
        host: Optional[str] = None,
        owner: OwnerSpec = "self",
        ttl: TtlSpec = "default",
        label: Optional[str] = None,
    ) -> Lease:
        """Lease ports and return the Lease.

        - ``ranges``: where to search (default ``$PORTLEASE_RANGE``, else 15000-24999),
          searched in order.
        - ``preferred``: try this port first; when taken, fall back to the ranges.
        - ``exclude``: ports never to hand out.
        - ``count``: how many ports, all in one transaction; ``block``: consecutive.
        - ``protocol``: ``"tcp"``, ``"udp"`` or ``"both"``, what the ports must be free for.
        - ``host``: check the ports on this address only (plus ::1 for 127.0.0.1);
          by default on every address.
        - ``owner``: ``"self"`` (this process), a pid, or ``None`` (no process; needs a TTL).
        - ``ttl``: seconds the lease lives unless renewed; ``None`` for as long as its
          owner runs; ``"default"`` for the library's default.
        - ``label``: shown by ``portlease list``; leases can be released by label.

        Raises Exhausted, InvalidRequest, NoSuchProcess, LockTimeout, RegistryIOError.
        """
        native = self._native.allocate(
            ranges=ranges,
            preferred=preferred,
            exclude=exclude,
            count=count,
            block=block,
            protocol=protocol,
            host=host,
            owner=owner,
            ttl=ttl,
            label=label,
            source="python",
        )
        return Lease(native, protocol)

    def release(self, port: int) -> bool:
        """End the lease on ``port``, whoever holds it; returns whether there was one."""
        return self._native.release(port)

    def renew(self, port: int, ttl: Optional[float] = None) -> None:
        """Restart the lease on ``port``'s time, with a new TTL or its own."""
        self._native.renew(port, ttl)

    def leases(self) -> list[LeaseInfo]:
        """Every entry of the registry, stale ones included (marked)."""
        return LeaseInfo._from_json(self._native.leases_json())

    def gc(self) -> list[LeaseInfo]:
        """Reclaim every stale lease (owner gone, or TTL passed) and return them."""
        return LeaseInfo._from_json(self._native.gc_json())

    def __repr__(self) -> str:
        """Shows the directory."""
        return f"<portlease.Allocator dir={self.dir!r}>"


_allocators: dict[Tuple[str, float], Allocator] = {}
_allocators_lock = threading.Lock()


def _new_lock_in_child() -> None:
    # Another thread of the parent may have held the lock at the fork: the child has
    # no such thread, so it starts with a lock of its own.
    global _allocators_lock
    _allocators_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_in_child)


def _allocator_for(dir: Union[str, os.PathLike[str], None], lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> Allocator:
    """One Allocator per directory, made on first use (it keeps the lock file open)."""
    # The default directory is looked up each time: $PORTLEASE_DIR may have changed.
    path = _native.check_dir(dir, "dir")
    key = (_native.default_dir() if path is None else path, lock_timeout)
    with _allocators_lock:
        allocator = _allocators.get(key)
        if allocator is None:
            allocator = _allocators[key] = Allocator(key[0], key[1])
        return allocator


def lease(
    *,
    ranges: Union[PortRange, Iterable[PortRange], None] = None,
    preferred: Optional[int] = None,
    exclude: Iterable[int] = (),
    count: int = 1,
    block: bool = False,
    protocol: ProtocolName = "tcp",
    host: Optional[str] = None,
    owner: OwnerSpec = "self",
    ttl: TtlSpec = "default",
    label: Optional[str] = None,
    dir: Union[str, os.PathLike[str], None] = None,
) -> Lease:
    """Lease ports from the registry in ``dir`` (default: the default directory), with
    the options of :meth:`Allocator.allocate`::

        with portlease.lease() as held:
            start_server(port=held.port)
    """
    return _allocator_for(dir).allocate(
        ranges=ranges,
        preferred=preferred,
        exclude=exclude,
        count=count,
        block=block,
        protocol=protocol,
        host=host,
        owner=owner,
        ttl=ttl,
        label=label,
    )


def leases(dir: Union[str, os.PathLike[str], None] = None) -> list[LeaseInfo]:
    """Every entry of the registry in ``dir`` (default: the default directory), as
    ``portlease list --json`` shows them.

    Only reads, as ``portlease list`` does: creates and writes nothing, and works on a
    registry this user may read but not write. Raises :class:`NoRegistry` when ``dir``
    does not exist.
    """
    return LeaseInfo._from_json(
        _native.existing_leases_json(dir, DEFAULT_LOCK_TIMEOUT)
    )


def default_dir() -> str:
    """The registry directory used when none is given."""
    return _native.default_dir()


__all__: Sequence[str] = [
    "DEFAULT_LOCK_TIMEOUT",
    "DEFAULT_RANGE",
    "Allocator",
    "Lease",
    "LeaseInfo",
    "default_dir",
    "lease",
    "leases",
]


def _check_runnable(program: str, env: Any, cwd: Any) -> None:
    """Raise FileNotFoundError or PermissionError when ``program`` cannot be run, as
    ``Popen`` would, before anything is forked."""
    if "/" in program:
        path = os.path.join(os.fsdecode(cwd), program) if cwd is not None else program
        if not os.path.exists(path):
            raise FileNotFoundError(2, "No such file or directory", program)
        if not os.access(path, os.X_OK) or os.path.isdir(path):
            raise PermissionError(13, "Permission denied", program)
        return
    search = (env if env is not None else os.environ).get("PATH", os.defpath)
    if shutil.which(program, path=search) is None:
        raise FileNotFoundError(2, "No such file or directory", program)


def _stop_here_for_tests(step: str) -> None:
    """Stops this thread (SIGSTOP) at ``step`` of :meth:`Lease.popen` when
    ``PORTLEASE_TEST_STOP_AT`` names it, for tests to kill the parent exactly there."""
    if os.environ.get("PORTLEASE_TEST_STOP_AT") == step:
        signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)


with open(os.path.join(os.path.dirname(__file__), "_exec.py"), encoding="utf-8") as _source:
    #: The trampoline's source, run with ``python -c`` so that it imports nothing.
    _TRAMPOLINE = _source.read()
