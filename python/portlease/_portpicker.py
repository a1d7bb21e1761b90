"""portpicker's calls: ``pick_unused_port``, ``return_port`` and ``is_port_free``, on
portlease leases.

``import portlease as portpicker`` works for the calls test suites make.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Iterable, Optional, Union

from portlease._api import Lease, PortRange, _allocator_for
from portlease import _native
from portlease._errors import InvalidRequest, NoSuchProcess

#: The ports ``pick_unused_port`` leases from unless told otherwise: the pool of
#: ``portlease serve``, below the kernel's usual ephemeral range.
PICK_RANGE = (15000, 24999)

# The leases this process picked, by port, so that return_port can end them.
_picked: dict[int, Lease] = {}
_picked_lock = threading.Lock()


def _forget_parents_picks() -> None:
    # A forked child inherits the dict, but the leases are its parent's to return.
    global _picked_lock
    _picked.clear()
    _picked_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_parents_picks)


def _ask_portserver(address: str, pid: int) -> Optional[int]:
    """Asks a portserver (portpicker's protocol: send the pid, read the port); ``None``
    when it cannot be reached or gives no port."""
    path = "\0" + address[1:] if address.startswith("@") else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(path)
            sock.sendall(f"{pid}\n".encode())
            answer = b""
            while True:
                chunk = sock.recv(64)
                if not chunk:
                    break
                answer += chunk
    except OSError:
        return None
    text = answer.decode(errors="replace").strip()
    return int(text) if text.isdigit() and 0 < int(text) <= 65535 else None


def pick_unused_port(
    pid: Optional[int] = None,
    portserver_address: Optional[str] = None,
    *,
    ranges: Union[PortRange, Iterable[PortRange], None] = None,
    dir: Union[str, "os.PathLike[str]", None] = None,
) -> int:
    """Return a port free for both TCP and UDP, leased to process ``pid`` (default:
    the caller) until that process exits or :func:`return_port` ends the lease.

    As portpicker's function of the same name: with ``portserver_address`` (else
    ``$PORTSERVER_ADDRESS``; ``@name`` for an abstract socket, or a path), the port is
    asked of that portserver, and leased from the registry when it cannot answer.
    ``ranges`` (where the registry lease is taken, default 15000-24999) and ``dir``
    (the registry directory; given, the registry is used directly) are portlease's own.
    Raises Exhausted when no port is free, NoSuchProcess for a pid that does not run.
    """
    if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0):
        raise NoSuchProcess(f"no process with pid {pid!r}: the owner of a lease must be a running process")
    address = portserver_address if portserver_address is not None else os.environ.get("PORTSERVER_ADDRESS")
    if address and dir is None:
        served = _ask_portserver(address, os.getpid() if pid is None else pid)
        if served is not None:
            return served
    lease = _allocator_for(dir).allocate(
        ranges=PICK_RANGE if ranges is None else ranges,
        protocol="both",
        owner="self" if pid is None or pid == os.getpid() else pid,
        ttl=None,
        label="pick_unused_port",
    )
    lease.keep()
    with _picked_lock:
        _picked[lease.port] = lease
    return lease.port


def is_port_free(port: int) -> bool:
    """Whether ``port`` can be bound right now for both TCP and UDP, on every local
    address, as portpicker's function of the same name. Leases are not consulted:
    use :func:`pick_unused_port` to get a port nobody else is given."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidRequest(f"port must be a port number from 1 to 65535, not {port!r}")
    return _native.is_port_free(port)


def return_port(port: int) -> None:
    """End the lease on a port that :func:`pick_unused_port` gave this process, as
    portpicker's function of the same name; other ports are left alone."""
    with _picked_lock:
        lease = _picked.pop(port, None)
    if lease is not None and lease.held:
        lease.release()


__all__ = ["PICK_RANGE", "is_port_free", "pick_unused_port", "return_port"]
