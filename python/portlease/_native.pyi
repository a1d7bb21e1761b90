"""Type stubs of the native module (Rust, PyO3): the library's allocator and lease,
the exception classes, the checks of arguments and the defaults every front end shares.

Every argument is taken as the caller passed it and checked here, raising
``InvalidRequest``; the annotations say what is accepted."""

from typing import Iterable, Optional, final

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "DEFAULT_RANGE_END",
    "DEFAULT_RANGE_START",
    "LOCK_FILE",
    "REGISTRY_FILE",
    "SEED_LEASE_SECS",
    "SEED_RANGE_SIZE",
    "SEED_RANGE_START",
    "PROCESS_IDENTITY",
    "REQUEST_BOARD",
    "SERVE",
    "TEST_HOOKS",
    "BindError",
    "Error",
    "Exhausted",
    "HeldByProcess",
    "InvalidRequest",
    "LeaseLost",
    "LockTimeout",
    "NativeAllocator",
    "NativeLease",
    "NoFreePortFoundError",
    "NoRegistry",
    "NoSuchProcess",
    "NotLeased",
    "NotPortlease",
    "OwnerLimit",
    "PortOutOfRange",
    "ReadOnly",
    "RegistryIOError",
    "RegistryTooLarge",
    "UnsafeDirectory",
    "__version__",
    "check_dir",
    "check_int",
    "check_pid",
    "check_port",
    "check_text",
    "default_dir",
    "existing_leases_json",
    "is_port_free",
    "run_cli",
]

__version__: str
TEST_HOOKS: bool
REQUEST_BOARD: bool
PROCESS_IDENTITY: bool
SERVE: bool
DEFAULT_RANGE_START: int
DEFAULT_RANGE_END: int
DEFAULT_LOCK_TIMEOUT: float
REGISTRY_FILE: str
LOCK_FILE: str
SEED_LEASE_SECS: float
SEED_RANGE_START: int
SEED_RANGE_SIZE: int

class Error(Exception):
    """Base class of every error portlease raises."""

class LockTimeout(Error, TimeoutError):
    """Another process held the registry lock for longer than the lock timeout."""

    dir: str

class Exhausted(Error, RuntimeError):
    """No port (or block of ports) in the requested ranges is free."""

    ranges: str

class NoFreePortFoundError(Exhausted):
    """portpicker's name for no free port."""

class InvalidRequest(Error, ValueError):
    """The request cannot be satisfied as written (a bad port, range, count or TTL)."""

class PortOutOfRange(InvalidRequest, OverflowError):
    """A port past 65535 (or below 0) would be next to try (``portlease.aidb``)."""

class NoSuchProcess(Error, ProcessLookupError):
    """The owner process named in the request does not run."""

    pid: int

class OwnerLimit(Error):
    """The owner already holds as many leases as the request allows."""

    pid: int

class LeaseLost(Error):
    """The lease is gone from the registry."""

    port: int

class NotLeased(Error):
    """The port holds no lease at all."""

    port: int

class NotPortlease(Error):
    """The port's lease was not made by portlease."""

    port: int

class HeldByProcess(Error):
    """The lease is held by a running process that the caller may not end or hand on."""

    key: str
    pid: int

class NoRegistry(Error, FileNotFoundError):
    """A call that only reads was pointed at a registry directory that does not exist."""

    dir: str

class ReadOnly(Error):
    """A change was asked of a registry opened to read only."""

    dir: str

class RegistryIOError(Error, OSError):
    """Reading or writing a file of the registry failed."""

    path: str

class RegistryTooLarge(Error):
    """A change would have made the registry larger than every reader accepts."""

    path: str

class UnsafeDirectory(Error, PermissionError):
    """The registry directory or one of its files is not safe to use."""

    path: str

class BindError(Error, OSError):
    """Binding a socket to a leased port failed."""

    address: str

def run_cli(argv: list[str]) -> int:
    """Runs the ``portlease`` command line on ``argv``; returns its exit code."""

def is_port_free(port: object) -> bool:
    """Whether ``port`` can be bound now for TCP and UDP on every local address."""

def check_port(value: object, what: str) -> int:
    """``value`` as a port; raises ``InvalidRequest`` naming it ``what``."""

def check_pid(value: object, what: str) -> int:
    """``value`` as a process id."""

def check_int(value: object, what: str) -> int:
    """``value`` as any int (not a bool)."""

def check_text(value: object, what: str) -> Optional[str]:
    """``value`` as a str or None."""

def check_dir(value: object, what: str) -> Optional[str]:
    """``value`` as a directory's path (str or ``os.PathLike``) or None."""

def default_dir() -> str:
    """The registry directory used when none is given."""

def existing_leases_json(dir: object, lock_timeout: object) -> str:
    """Every entry of the existing registry in ``dir``, as ``portlease list --json``
    prints them; creates nothing, raises ``NoRegistry`` when ``dir`` is missing."""

@final
class NativeAllocator:
    """The registry in one directory."""

    def __new__(cls, dir: object, lock_timeout: object) -> NativeAllocator: ...
    @property
    def dir(self) -> str:
        """The registry directory."""
    def with_lock_timeout(self, lock_timeout: object) -> NativeAllocator:
        """The same registry with another lock timeout."""
    def allocate(
        self,
        *,
        ranges: object,
        preferred: object,
        exclude: object,
        count: object,
        block: object,
        protocol: object,
        host: object,
        owner: object,
        ttl: object,
        label: object,
        source: object,
    ) -> NativeLease:
        """Leases ports."""
    def allocate_as_seed(
        self,
        preferred: object,
        range_start: object,
        range_size: object,
        host: object,
        lease_timeout: object,
    ) -> int:
        """The AIDB drop-in's allocation, the range read as the seed reads it."""
    def release(self, port: object) -> bool:
        """Ends the lease on ``port``, whoever holds it."""
    def release_as_seed(self, port: object) -> bool:
        """The AIDB drop-in's release: an int that is no port names no lease."""
    def renew(self, port: object, ttl: object = None) -> None:
        """Restarts the lease on ``port``'s time."""
    def leases_json(self) -> str:
        """Every entry, as ``portlease list --json`` prints them."""
    def gc_json(self) -> str:
        """Reclaims stale leases; returns them as JSON."""

@final
class NativeLease:
    """Ports leased to the caller."""

    @property
    def ports(self) -> list[int]:
        """The ports."""
    @property
    def held(self) -> bool:
        """Whether the guard still holds the lease."""
    @property
    def kept(self) -> bool:
        """Whether the lease is left to end by its owner or TTL."""
    def release(self) -> None:
        """Ends the lease now."""
    def renew(self, ttl: object = None) -> None:
        """Restarts the lease's time."""
    def keep(self) -> list[int]:
        """Leaves the lease in the registry when the guard goes."""
    def hand_to(self, pid: object) -> None:
        """Hands the lease to the running process ``pid``; its TTL is cleared."""
    def bind_socket_fd(self, kind: object) -> int:
        """Binds a socket to the port, ends the lease, returns the descriptor."""
    def listen_fds(
        self, kind: object, names: Optional[Iterable[str]] = None
    ) -> tuple[list[int], list[str]]:
        """Binds a socket to each port, keeps the lease, returns the descriptors and
        their names."""
