"""portlease.aidb's release of the leases it made: by their own token, even on a retry.

Ports 14100-14199.
"""

from __future__ import annotations

import fcntl
import pathlib

import pytest

import portlease
from portlease import aidb


def test_a_retried_release_leaves_the_next_holders_lease_alone(
    registry: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aidb, "LOCK_TIMEOUT_S", 0.2)
    allocator = aidb.CrossProcessPortAllocator(registry)
    port = allocator.allocate(preferred=14100, range_start=14100, range_size=1)
    with open(registry / "port_registry.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(portlease.LockTimeout):
            allocator.release(port)
    # Meanwhile the lease ends elsewhere and the port goes to another holder.
    other = portlease.Allocator(registry)
    assert other.release(port)
    theirs = other.allocate(ranges=(port, port), label="next holder")
    allocator.release(port)  # the retry: the lease it made is gone, nothing to end
    assert [(i.port, i.label) for i in portlease.leases(registry)] == [(port, "next holder")]
    theirs.release()
