"""A Lease shared by threads: leaving ``with`` (or ``release()``) while another thread is
in a call on the same lease still releases it, once that call ends.

Ports 13100-13199.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap
import threading
import time
from typing import Callable, Iterator

import pytest

import portlease

R = (13100, 13109)

HOLDER = textwrap.dedent(
    """
    import fcntl, sys
    with open(sys.argv[1], "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        print("locked", flush=True)
        sys.stdin.readline()
    """
)


class Holder:
    """Another process holding the registry lock until `let_go`."""

    def __init__(self, registry: pathlib.Path) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", HOLDER, str(registry / "port_registry.lock")],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        assert self.process.stdout.readline() == "locked\n"

    def let_go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait()


@pytest.fixture
def holder_factory(registry: pathlib.Path) -> Iterator[Callable[[], Holder]]:
    made: list[Holder] = []

    def make() -> Holder:
        made.append(Holder(registry))
        return made[-1]

    yield make
    for holder in made:
        holder.process.kill()
        holder.process.wait()


def _lock_waiter_runs() -> bool:
    """Whether a thread of this process waits for the registry lock (the library's helper)."""
    for task in pathlib.Path("/proc/self/task").iterdir():
        try:
            if (task / "comm").read_text().strip() == "portlease-lock":
                return True
        except OSError:
            pass
    return False


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(600):
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"never happened: {what}")


# What the other thread does with the lease while this one ends it.
OTHER_CALLS: dict[str, Callable[[portlease.Lease], object]] = {
    "renew": lambda lease: lease.renew(60),
    "hand_to_self": lambda lease: lease.hand_to(__import__("os").getpid()),
}

# How this thread ends it.
ENDINGS: dict[str, Callable[[portlease.Lease], object]] = {
    "with": lambda lease: lease.__exit__(None, None, None),
    "release": lambda lease: lease.release(),
}


@pytest.mark.parametrize("ending", sorted(ENDINGS))
@pytest.mark.parametrize("other", sorted(OTHER_CALLS))
def test_ending_a_lease_another_thread_is_using_releases_it(
    registry: pathlib.Path, holder_factory: Callable[[], Holder], other: str, ending: str
) -> None:
    allocator = portlease.Allocator(registry, lock_timeout=60)
    lease = allocator.allocate(ranges=R)
    holder = holder_factory()
    errors: list[BaseException] = []

    def run(call: Callable[[portlease.Lease], object]) -> None:
        try:
            call(lease)
        except portlease.LeaseLost:
            pass  # ended by the other thread first: a truthful answer
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    using = threading.Thread(target=run, args=(OTHER_CALLS[other],))
    using.start()
    _wait_until(_lock_waiter_runs, "the other thread waits for the lock inside its call")
    assert lease.held, "a lease in use by another thread reads as not held"
    ender = threading.Thread(target=run, args=(ENDINGS[ending],))
    ender.start()
    time.sleep(0.5)  # the ending has begun (it cannot finish before the lock is free)
    holder.let_go()
    using.join(60)
    ender.join(60)
    assert not using.is_alive() and not ender.is_alive()
    assert errors == []
    assert not lease.held
    assert allocator.leases() == [], "the lease outlived its release"
    lease.release()  # again: nothing to do


def test_calls_on_a_released_lease_say_it_ended(registry: pathlib.Path) -> None:
    allocator = portlease.Allocator(registry)
    lease = allocator.allocate(ranges=R)
    lease.release()
    with pytest.raises(portlease.LeaseLost):
        lease.renew(10)
    with pytest.raises(portlease.LeaseLost):
        lease.socket()
    lease.release()
    assert not lease.held


def test_a_release_that_times_out_leaves_the_lease_held_to_retry(
    registry: pathlib.Path, holder_factory: Callable[[], Holder]
) -> None:
    allocator = portlease.Allocator(registry, lock_timeout=0.2)
    lease = allocator.allocate(ranges=R)
    holder = holder_factory()
    with pytest.raises(portlease.LockTimeout):
        lease.release()
    assert lease.held, "a release that failed let go of the lease"
    holder.let_go()
    lease.release()
    assert not lease.held
    assert allocator.leases() == []
