"""portpicker's calls: ``pick_unused_port``, ``return_port`` and ``is_port_free``, on
portlease leases.

``import portlease as portpicker`` works for the calls test suites make. One deliberate
difference: a portserver that answers but refuses (it closes without a port, say over
its per-user limit, or answers something that is no port) is final, and
``pick_unused_port`` raises ``NoFreePortFoundError``; portpicker would then pick a port
itself, one the portserver may have leased to another process. Only when no portserver
answers at all is the caller's own registry used.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Iterable, Optional, Union

from portlease._api import Lease, PortRange, _allocator_for
from portlease import _checks, _native
from portlease._errors import Exhausted, InvalidRequest, NoFreePortFoundError

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
    when no portserver answers there (nothing listens, no such socket). Raises
    NoFreePortFoundError when one answered without a port: it refused."""
    path = "\0" + address[1:] if address.startswith("@") else address
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return None
        except OSError as e:
            raise NoFreePortFoundError(
                f"cannot ask the portserver at {address} for a port: {e}; fix its address "
                "($PORTSERVER_ADDRESS) or the socket's permissions"
            ) from e
        answer = b""
        try:
            sock.sendall(f"{pid}\n".encode())
            while len(answer) <= 64:
                chunk = sock.recv(64)
                if not chunk:
                    break
                answer += chunk
        except OSError as e:
            raise NoFreePortFoundError(
                f"the portserver at {address} gave no port ({e}); it may be out of ports or "
                "over its limit for this user: return some ports, or ask its operator"
            ) from e
    text = answer.decode("ascii", errors="replace").strip()
    if text.isascii() and text.isdigit() and 0 < int(text) <= 65535:
        return int(text)
    raise NoFreePortFoundError(
        f"the portserver at {address} refused to give a port "
        f"({'it closed without an answer' if not text else f'it answered {text[:40]!r}'}): it may be "
        "out of ports or over its limit for this user (--max-per-uid); return some ports, or ask its operator"
    )


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
    asked of that portserver, and leased from the registry only when no portserver
    answers there. A portserver that answers but gives no port raises
    NoFreePortFoundError (portpicker would pick a port itself then).
    ``ranges`` (where the registry lease is taken, default 15000-24999) and ``dir``
    (the registry directory; given, the registry is used directly) are portlease's own.
    Raises NoFreePortFoundError (an Exhausted) when no port is free, NoSuchProcess for
    a pid that does not run, InvalidRequest for a pid that cannot be one.
    """
    if pid is not None:
        _checks.pid(pid, "pid")
    _checks.text(portserver_address, "portserver_address")
    _checks.directory(dir)
    address = portserver_address if portserver_address is not None else os.environ.get("PORTSERVER_ADDRESS")
    if address and dir is None:
        served = _ask_portserver(address, os.getpid() if pid is None else pid)
        if served is not None:
            return served
    try:
        lease = _allocator_for(dir).allocate(
            ranges=PICK_RANGE if ranges is None else ranges,
            protocol="both",
            owner="self" if pid is None or pid == os.getpid() else pid,
            ttl=None,
            label="pick_unused_port",
        )
    except Exhausted as e:
        # portpicker's name for it, still an Exhausted with what was searched.
        raised = NoFreePortFoundError(str(e))
        raised.ranges = getattr(e, "ranges", "")
        raise raised from None
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
    if isinstance(port, bool) or not isinstance(port, int):
        raise InvalidRequest(f"port must be an int, not {port!r}")
    with _picked_lock:
        lease = _picked.pop(port, None)
    if lease is not None and lease.held:
        lease.release()


__all__ = ["PICK_RANGE", "NoFreePortFoundError", "is_port_free", "pick_unused_port", "return_port"]
