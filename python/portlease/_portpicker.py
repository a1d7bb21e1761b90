"""portpicker's public API on portlease leases: ``pick_unused_port``, ``return_port``,
``add_reserved_port``, ``is_port_free``, ``bind``, ``get_port_from_port_server``,
``NoFreePortFoundError`` and the legacy CapWords names.

``import portlease as portpicker`` is the whole switch. portpicker's reuse rule holds:
a port from a portserver, or one given to :func:`add_reserved_port`, goes back to this
process's pool when returned, and the next :func:`pick_unused_port` hands it out again
before anything new is asked for (the portserver keeps it leased to this process
meanwhile). A port leased from the registry ends its lease when returned, as
portpicker forgets a port it chose itself.

One deliberate difference: a portserver that answers but refuses (it closes without a
port, say over its per-user limit, or answers something that is no port) is final, and
``pick_unused_port`` raises ``NoFreePortFoundError``; portpicker would then pick a port
itself, one the portserver may have leased to another process. Only when no portserver
answers at all is the caller's own registry used.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Iterable, Optional, Set, Union

from portlease._api import DEFAULT_RANGE, Lease, PortRange, _allocator_for
from portlease import _native
from portlease._native import Exhausted, NoFreePortFoundError

logger = logging.getLogger(__name__)

#: The ports ``pick_unused_port`` leases from unless told otherwise or
#: ``$PORTLEASE_RANGE`` says: the default range of every front end, and the pool of
#: ``portlease serve``, below the kernel's usual ephemeral range.
PICK_RANGE = DEFAULT_RANGE

#: portpicker's handle on Windows' API; portlease runs on Linux, so always None.
_winapi = None

# portpicker's three sets, under the same names (its tests clear them):
# ports ready to be handed out again (returned portserver ports, reserved ports),
_free_ports: Set[int] = set()
# ports from a portserver or the reserved pool that this process handed out,
_owned_ports: Set[int] = set()
# and ports leased from the registry that this process handed out.
_random_ports: Set[int] = set()
# The registry leases behind _random_ports, by port, so that return_port ends them.
_picked: dict[int, Lease] = {}
_picked_lock = threading.Lock()


def _forget_parents_picks() -> None:
    # A forked child inherits the pools, but the ports are its parent's.
    global _picked_lock
    _picked.clear()
    _free_ports.clear()
    _owned_ports.clear()
    _random_ports.clear()
    _picked_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_parents_picks)


def _exchange(address: str, pid: int) -> Optional[bytes]:
    """Sends ``pid`` to the portserver at ``address`` (``@name``: abstract socket) and
    returns its answer's first line; ``None`` when nothing listens there. Other socket
    errors propagate (OSError)."""
    path = "\0" + address[1:] if address.startswith("@") else address
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return None
        sock.sendall(f"{pid}\n".encode("ascii"))
        answer = b""
        # One line (a port and a newline); a portserver closes after it.
        while b"\n" not in answer and len(answer) <= 64:
            chunk = sock.recv(64)
            if not chunk:
                break
            answer += chunk
        return answer.split(b"\n")[0]
    finally:
        sock.close()


def _port_in(answer: bytes) -> Optional[int]:
    text = answer.decode("ascii", errors="replace").strip()
    if text.isascii() and text.isdigit() and 0 < int(text) <= 65535:
        return int(text)
    return None


def _ask_portserver(address: str, pid: int) -> Optional[int]:
    """Asks a portserver (portpicker's protocol: send the pid, read the port); ``None``
    when no portserver answers there (nothing listens, no such socket). Raises
    NoFreePortFoundError when one answered without a port: it refused."""
    try:
        answer = _exchange(address, pid)
    except OSError as e:
        raise NoFreePortFoundError(
            f"cannot ask the portserver at {address} for a port: {e}; fix its address "
            "($PORTSERVER_ADDRESS) or the socket's permissions, or check that it is not out "
            "of ports or over its limit for this user"
        ) from e
    if answer is None:
        return None
    port = _port_in(answer)
    if port is not None:
        return port
    text = answer.decode("ascii", errors="replace").strip()
    raise NoFreePortFoundError(
        f"the portserver at {address} refused to give a port "
        f"({'it closed without an answer' if not text else f'it answered {text[:40]!r}'}): it may be "
        "out of ports or over its limit for this user (--max-per-uid); return some ports, or ask its operator"
    )


def get_port_from_port_server(portserver_address: Optional[str], pid: Optional[int] = None) -> Optional[int]:
    """Ask the portserver at ``portserver_address`` (``@name`` for an abstract socket,
    else a path) for a port for process ``pid`` (default: the caller), as portpicker's
    function of the same name: the port, or ``None`` when there is no address, nothing
    answers, or the answer is no port. The port is this process's to hand out again
    after :func:`return_port`."""
    if not portserver_address:
        return None
    _native.check_text(portserver_address, "portserver_address")
    if pid is None:
        pid = os.getpid()
    try:
        answer = _exchange(portserver_address, pid)
    except OSError as e:
        logger.warning("cannot ask the portserver at %s for a port: %s", portserver_address, e)
        return None
    port = None if answer is None else _port_in(answer)
    if port is None:
        logger.warning("the portserver at %s gave no port", portserver_address)
        return None
    with _picked_lock:
        _owned_ports.add(port)
    return port


def pick_unused_port(
    pid: Optional[int] = None,
    portserver_address: Optional[str] = None,
    *,
    ranges: Union[PortRange, Iterable[PortRange], None] = None,
    dir: Union[str, "os.PathLike[str]", None] = None,
) -> int:
    """Return a port free for both TCP and UDP, as portpicker's function of the same
    name: first a port of this process's pool (one returned after a portserver gave
    it, or given to :func:`add_reserved_port`); else one asked of the portserver at
    ``portserver_address`` (else ``$PORTSERVER_ADDRESS``; ``@name`` for an abstract
    socket, or a path); else one leased from the registry to process ``pid``
    (default: the caller) until that process exits or :func:`return_port` ends it.

    A portserver that answers but gives no port raises NoFreePortFoundError
    (portpicker would pick a port itself then). ``ranges`` (where the registry lease
    is taken, default 15000-24999) and ``dir`` (the registry directory) are
    portlease's own; given ``dir``, that registry is used directly, without the pool
    or a portserver. Raises NoFreePortFoundError (an Exhausted) when no port is free,
    NoSuchProcess for a pid that does not run, InvalidRequest for a pid that cannot be one.
    """
    if pid is not None:
        _native.check_pid(pid, "pid")
    _native.check_text(portserver_address, "portserver_address")
    _native.check_dir(dir, "dir")
    if dir is None:
        with _picked_lock:
            if _free_ports:
                port = _free_ports.pop()
                _owned_ports.add(port)
                return port
        address = portserver_address if portserver_address is not None else os.environ.get("PORTSERVER_ADDRESS")
        if address:
            served = _ask_portserver(address, os.getpid() if pid is None else pid)
            if served is not None:
                with _picked_lock:
                    _owned_ports.add(served)
                return served
    try:
        lease = _allocator_for(dir).allocate(
            ranges=ranges,
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
        _random_ports.add(lease.port)
    return lease.port


def add_reserved_port(port: int) -> None:
    """Add a port acquired by other means to this process's pool, as portpicker's
    function of the same name: :func:`pick_unused_port` hands it out before asking for
    a new one, and again each time it is returned. portlease does not lease it: it is
    the caller's already."""
    _native.check_port(port, "port")
    with _picked_lock:
        _free_ports.add(port)


def bind(port: int, socket_type: int, socket_proto: int) -> Optional[int]:
    """Whether ``port`` (0: one the OS chooses) binds for ``socket_type`` and
    ``socket_proto`` on every address of each address family this kernel supports,
    as portpicker's function of the same name: the port on success, else ``None``.
    Sockets are bound with SO_REUSEADDR (and listen, for TCP), then closed."""
    bound = port
    families = 0
    for family in (socket.AF_INET6, socket.AF_INET):
        try:
            sock = socket.socket(family, socket_type, socket_proto)
        except OSError:
            continue  # this family is not supported here
        families += 1
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("", bound))
            if socket_type == socket.SOCK_STREAM:
                sock.listen(1)
            bound = sock.getsockname()[1]
        except OSError:
            return None
        finally:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # moves TCP's state along before close
            except OSError:
                pass
            sock.close()
    return bound if families else None


def is_port_free(port: int) -> bool:
    """Whether ``port`` can be bound right now for both TCP and UDP, on every local
    address, as portpicker's function of the same name. Leases are not consulted:
    use :func:`pick_unused_port` to get a port nobody else is given."""
    # The native check first: it refuses what is no port before Python binds it.
    return (
        _native.is_port_free(port)
        and bind(port, socket.SOCK_STREAM, socket.IPPROTO_TCP) is not None
        and bind(port, socket.SOCK_DGRAM, socket.IPPROTO_UDP) is not None
    )


def return_port(port: int) -> None:
    """Give back a port :func:`pick_unused_port` gave, as portpicker's function of the
    same name: one leased from the registry ends its lease; one from a portserver or
    the reserved pool goes back to this process's pool, for its next pick. Other ports
    are left alone."""
    _native.check_int(port, "port")
    with _picked_lock:
        lease = _picked.pop(port, None)
        if lease is not None or port in _random_ports:
            _random_ports.discard(port)
        elif port in _owned_ports:
            _owned_ports.remove(port)
            _free_ports.add(port)
        elif port in _free_ports:
            logger.info("port %d was returned already", port)
        else:
            logger.info("port %d was not given by pick_unused_port: nothing to return", port)
    if lease is not None and lease.held:
        lease.release()


# portpicker's legacy names.
Bind = bind
GetPortFromPortServer = get_port_from_port_server
IsPortFree = is_port_free
PickUnusedPort = pick_unused_port

__all__ = [
    "PICK_RANGE",
    "NoFreePortFoundError",
    "add_reserved_port",
    "bind",
    "get_port_from_port_server",
    "is_port_free",
    "pick_unused_port",
    "return_port",
]
