"""The AIDB drop-in: the seed module's (``aidb_common.network.allocator``) public
names, signatures, defaults and behaviour, on portlease.

Switching is one import line::

    from portlease.aidb import allocate_port, release_port

Seed processes and processes using this module share ``~/.aidb`` with no collision:
the registry format and lock are the same. Where the seed was wrong, this module is
right: a damaged registry is salvaged instead of taken for an empty one, a lease
ends when the process holding it exits (not only after ``lease_timeout``), a late
release of an expired lease leaves the port's next holder alone, and a waiter gets
the lock the moment it is released instead of polling every 100 ms.
Exhaustion raises ``portlease.Exhausted`` (a ``RuntimeError``) whose message starts
as the seed's (``No available ports in range START-END``), a lock timeout
``portlease.LockTimeout`` (a ``TimeoutError``), as the seed's did. Entries the seed
wrote are judged as the seed judges them: one older than this allocator's
``lease_timeout``, or without a ``timestamp``, is reclaimed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from portlease import _native
from portlease._native import PortOutOfRange

logger = logging.getLogger(__name__)

#: Seconds to wait for the registry lock before raising ``TimeoutError``.
LOCK_TIMEOUT_S = _native.DEFAULT_LOCK_TIMEOUT
#: The seed's lock poll interval. portlease does not poll (a waiter blocks on the lock
#: and gets it as soon as it is released); kept for code that reads it.
LOCK_RETRY_INTERVAL_S = 0.1
#: The registry directory shared with AIDB's processes.
DEFAULT_REGISTRY_DIR = Path.home() / ".aidb"
#: The registry file's name in the directory.
DEFAULT_REGISTRY_FILE = _native.REGISTRY_FILE
#: The lock file's name in the directory.
DEFAULT_LOCK_FILE = _native.LOCK_FILE
#: Seconds a lease lives unless released (it also ends when its process exits).
DEFAULT_LEASE_TIMEOUT_S = _native.SEED_LEASE_SECS
#: The first port of the default range.
DEFAULT_PORT_RANGE_START = _native.SEED_RANGE_START
#: How many ports the default range holds.
DEFAULT_PORT_RANGE_SIZE = _native.SEED_RANGE_SIZE


class CrossProcessPortAllocator:
    """Atomic cross-process port allocation, in the seed's registry format.

    ``registry_dir`` defaults to ``~/.aidb`` (created if missing); a lease lives
    ``lease_timeout`` seconds unless released, and ends earlier when the process that
    took it exits.
    """

    def __init__(
        self,
        registry_dir: Optional[Path] = None,
        lease_timeout: float = DEFAULT_LEASE_TIMEOUT_S,
    ) -> None:
        """Opens (or creates) the registry directory."""
        _native.check_dir(registry_dir or None, "registry_dir")
        self.registry_dir: Path = Path(registry_dir or DEFAULT_REGISTRY_DIR)
        self.registry_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.registry_file: Path = self.registry_dir / DEFAULT_REGISTRY_FILE
        self.lock_file: Path = self.registry_dir / DEFAULT_LOCK_FILE
        self.lease_timeout: float = lease_timeout
        self._lock_timeout = LOCK_TIMEOUT_S
        self._native = _native.NativeAllocator(str(self.registry_dir), LOCK_TIMEOUT_S)

    def _allocator(self) -> _native.NativeAllocator:
        # The seed reads LOCK_TIMEOUT_S on every call: so does this module.
        if LOCK_TIMEOUT_S != self._lock_timeout:
            self._native = self._native.with_lock_timeout(LOCK_TIMEOUT_S)
            self._lock_timeout = LOCK_TIMEOUT_S
        return self._native

    def allocate(
        self,
        preferred: Optional[int] = None,
        range_start: int = DEFAULT_PORT_RANGE_START,
        range_size: int = DEFAULT_PORT_RANGE_SIZE,
        host: str = "127.0.0.1",
    ) -> int:
        """Lease a port and return it: ``preferred`` if free, else the first free one
        of ``range_start .. range_start + range_size - 1``, checked by binding on
        ``host`` (and ::1 for 127.0.0.1).

        Raises ``portlease.Exhausted`` (a ``RuntimeError``, its message starting as
        the seed's, ``No available ports in range START-END``) when none is free (an
        empty range, ``range_size <= 0``, tries ``preferred`` alone, as the seed),
        :class:`PortOutOfRange` (an ``OverflowError``, as the seed's ``bind()``
        raised) when the next port to try would be past 65535 or below 0,
        ``portlease.LockTimeout`` (a ``TimeoutError``) after ``LOCK_TIMEOUT_S``.
        Seed entries older than ``lease_timeout`` (or without a timestamp) are
        reclaimed, as the seed reclaims them.
        """
        port = self._allocator().allocate_as_seed(preferred, range_start, range_size, host, self.lease_timeout)
        logger.debug("Allocated port %d", port)
        return port

    def release(self, port: int) -> None:
        """End the lease on ``port``; a port not leased is no error.

        A port this allocator leased ends that lease (left alone if it expired and
        the port went to another process meanwhile); any other port's lease is ended
        whoever holds it, as the seed did. An int that is no port (``70000``, ``-1``)
        is leased by nobody: nothing to do, as with the seed. Anything but an int
        raises ``portlease.InvalidRequest``.
        """
        if self._allocator().release_as_seed(port):
            logger.debug("Released port %d", port)


_allocator: Optional[CrossProcessPortAllocator] = None


def get_allocator(registry_dir: Optional[Path] = None) -> CrossProcessPortAllocator:
    """The process's shared allocator, made on first use (on ``registry_dir``, or
    ``~/.aidb``; later calls return the same one, as the seed's did)."""
    global _allocator
    if _allocator is None:
        _allocator = CrossProcessPortAllocator(registry_dir=registry_dir)
    return _allocator


def allocate_port(
    preferred: Optional[int] = None,
    range_start: int = DEFAULT_PORT_RANGE_START,
    range_size: int = DEFAULT_PORT_RANGE_SIZE,
    host: str = "127.0.0.1",
) -> int:
    """Lease a port with the shared allocator (see ``CrossProcessPortAllocator.allocate``)."""
    return get_allocator().allocate(preferred, range_start, range_size, host)


def release_port(port: int) -> None:
    """End the lease on ``port`` with the shared allocator."""
    get_allocator().release(port)


__all__ = [
    "DEFAULT_LEASE_TIMEOUT_S",
    "DEFAULT_LOCK_FILE",
    "DEFAULT_PORT_RANGE_SIZE",
    "DEFAULT_PORT_RANGE_START",
    "DEFAULT_REGISTRY_DIR",
    "DEFAULT_REGISTRY_FILE",
    "LOCK_RETRY_INTERVAL_S",
    "LOCK_TIMEOUT_S",
    "CrossProcessPortAllocator",
    "PortOutOfRange",
    "allocate_port",
    "get_allocator",
    "release_port",
]
