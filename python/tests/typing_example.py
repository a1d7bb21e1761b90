"""An example that uses the whole typed API; `mypy --strict` must accept it (test_typing.py)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Callable, List, Optional

import portlease
import portlease as portpicker
from portlease import aidb


def pythonic(directory: Path) -> List[int]:
    allocator = portlease.Allocator(directory, lock_timeout=5.0)
    with allocator.allocate(ranges=[(12000, 12009), range(12010, 12020), "12020-12029"], preferred=12005,
                            exclude=[12001], count=2, block=True, protocol="both", host="127.0.0.1",
                            owner="self", ttl=60.0, label="example") as lease:
        ports: tuple[int, ...] = lease.ports
        first: int = lease.port
        lease.renew(ttl=None)
        lease.hand_to(1)
    kept = allocator.allocate(owner=None, ttl=30).keep()
    server: socket.socket = portlease.lease(dir=directory, ttl=None).socket("tcp")
    server.close()
    infos: List[portlease.LeaseInfo] = portlease.leases(directory) + allocator.gc() + allocator.leases()
    ages: List[Optional[float]] = [info.age_secs for info in infos]
    released: bool = allocator.release(first)
    allocator.renew(kept[0], 10.0)
    return [*ports, *kept, len(ages), int(released)]


def errors() -> None:
    try:
        portpicker.return_port(portpicker.pick_unused_port())
        free: bool = portpicker.is_port_free(12000)
        print(free)
        portpicker.pick_unused_port(pid=1, portserver_address=None)
    except portlease.Exhausted as exhausted:
        reason: RuntimeError = exhausted
        print(reason, exhausted.ranges)
    except portlease.LockTimeout as timeout:
        waited: TimeoutError = timeout
        print(waited, timeout.dir)
    except (portlease.LeaseLost, portlease.NoSuchProcess, portlease.OwnerLimit, portlease.InvalidRequest,
            portlease.RegistryIOError, portlease.UnsafeDirectory, portlease.BindError) as other:
        base: portlease.Error = other
        print(base)


def seed_switch() -> int:
    allocator: aidb.CrossProcessPortAllocator = aidb.get_allocator(Path("/tmp/x"))
    port: int = aidb.allocate_port(preferred=None, range_start=aidb.DEFAULT_PORT_RANGE_START,
                                   range_size=aidb.DEFAULT_PORT_RANGE_SIZE, host="127.0.0.1")
    aidb.release_port(port)
    allocator.release(allocator.allocate(12000))
    timeout: float = aidb.LOCK_TIMEOUT_S + aidb.DEFAULT_LEASE_TIMEOUT_S + allocator.lease_timeout
    paths: List[Path] = [aidb.DEFAULT_REGISTRY_DIR, allocator.registry_file, allocator.lock_file, allocator.registry_dir]
    names: List[str] = [aidb.DEFAULT_REGISTRY_FILE, aidb.DEFAULT_LOCK_FILE]
    return port + int(timeout) + len(paths) + len(names)


def fixtures(unused_port: int, unused_udp_port: int, unused_port_factory: Callable[..., int]) -> int:
    return unused_port + unused_udp_port + unused_port_factory(protocol="udp")
