"""Type stubs of the native module (Rust, PyO3): the library's allocator and lease."""

from typing import Optional, final

__all__ = [
    "DEFAULT_RANGE_END",
    "DEFAULT_RANGE_START",
    "NativeAllocator",
    "NativeLease",
    "TEST_HOOKS",
    "__version__",
    "default_dir",
    "existing_leases_json",
    "is_port_free",
    "run_cli",
]

__version__: str
TEST_HOOKS: bool
DEFAULT_RANGE_START: int
DEFAULT_RANGE_END: int

def run_cli(argv: list[str]) -> int:
    """Runs the ``portlease`` command line on ``argv``; returns its exit code."""

def is_port_free(port: int) -> bool:
    """Whether ``port`` can be bound now for TCP and UDP on every local address."""

def default_dir() -> str:
    """The registry directory used when none is given."""

def existing_leases_json(dir: Optional[str], lock_timeout: float) -> str:
    """Every entry of the existing registry in ``dir``, as ``portlease list --json``
    prints them; creates nothing, raises ``NoRegistry`` when ``dir`` is missing."""

@final
class NativeAllocator:
    """The registry in one directory."""

    def __new__(cls, dir: Optional[str], lock_timeout: float) -> NativeAllocator: ...
    @property
    def dir(self) -> str:
        """The registry directory."""
    def with_lock_timeout(self, lock_timeout: float) -> NativeAllocator:
        """The same registry with another lock timeout."""
    def allocate(
        self,
        *,
        ranges: list[tuple[int, int]],
        preferred: Optional[int],
        exclude: list[int],
        count: int,
        block: bool,
        protocol: str,
        host: Optional[str],
        owner: str,
        owner_pid: Optional[int],
        ttl_given: bool,
        ttl: Optional[float],
        label: Optional[str],
        source: str,
    ) -> NativeLease:
        """Leases ports."""
    def allocate_kept(
        self,
        preferred: Optional[int],
        range_start: int,
        range_size: int,
        host: Optional[str],
        ttl: float,
        seed_lease: float = 300.0,
    ) -> int:
        """Leases one port for this process, kept in the registry; returns it. Seed
        entries older than ``seed_lease`` seconds count as ended."""
    def release(self, port: int) -> bool:
        """Ends the lease on ``port``, whoever holds it."""
    def renew(self, port: int, ttl: Optional[float] = None) -> None:
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
    def renew(self, ttl: Optional[float] = None) -> None:
        """Restarts the lease's time."""
    def keep(self) -> list[int]:
        """Leaves the lease in the registry when the guard goes."""
    def hand_to(self, pid: int) -> None:
        """Hands the lease to the running process ``pid``; its TTL is kept."""
    def bind_socket_fd(self, kind: str) -> int:
        """Binds a socket to the port, ends the lease, returns the descriptor."""
    def listen_fds(self, kind: str) -> list[int]:
        """Binds a socket to each port, keeps the lease, returns the descriptors."""
