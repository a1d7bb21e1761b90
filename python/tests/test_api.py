"""The pythonic API: Allocator, Lease, lease(), leases() and the exceptions.

Ports 12000-12199.
"""

from __future__ import annotations

import fcntl
import os
import pathlib
import socket
import subprocess
import sys
import threading

import pytest

import portlease

R = (12000, 12049)


def test_a_lease_is_in_the_registry_until_its_block_ends(registry: pathlib.Path) -> None:
    allocator = portlease.Allocator(registry)
    with allocator.allocate(ranges=R, label="web") as held:
        assert R[0] <= held.port <= R[1] and held.ports == (held.port,)
        [info] = allocator.leases()
        assert (info.port, info.pid, info.label, info.kind, info.owner_alive) == (
            held.port, os.getpid(), "web", "portlease", True)
    assert not held.held
    assert allocator.leases() == []


def test_allocate_takes_every_option_of_a_request(registry: pathlib.Path) -> None:
    allocator = portlease.Allocator(registry)
    block = allocator.allocate(ranges=[range(12060, 12070), "12080-12089"], count=4, block=True,
                               exclude=[12060], protocol="both", owner=None, ttl=60, label="b")
    assert block.ports == (12061, 12062, 12063, 12064)
    preferred = allocator.allocate(ranges=R, preferred=12123, host="127.0.0.1", ttl=None)
    assert preferred.port == 12123
    by_port = {info.port: info for info in allocator.leases()}
    assert by_port[12061].owned_by_process is False and by_port[12061].ttl_secs == 60
    assert by_port[12061].protocol == "both" and by_port[12061].label == "b"
    assert by_port[12123].ttl_secs is None and by_port[12123].owned_by_process
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        theirs = allocator.allocate(ranges=R, owner=child.pid)
        assert {i.port: i.pid for i in allocator.leases()}[theirs.port] == child.pid
    finally:
        child.kill()
        child.wait()
    # The owner is gone: the lease is stale, and reclaimed.
    assert theirs.port in {info.port for info in allocator.gc()}


def test_keep_leaves_the_lease_and_release_ends_it(registry: pathlib.Path) -> None:
    allocator = portlease.Allocator(registry)
    lease = allocator.allocate(ranges=R)
    port = lease.port
    assert lease.keep() == (port,)
    del lease
    assert [i.port for i in allocator.leases()] == [port]
    assert allocator.release(port) is True
    assert allocator.release(port) is False


def test_renew_and_hand_to(registry: pathlib.Path) -> None:
    allocator = portlease.Allocator(registry)
    lease = allocator.allocate(ranges=R, ttl=30)
    lease.renew(ttl=90)
    assert allocator.leases()[0].ttl_secs == 90
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        lease.hand_to(child.pid)
        handed = allocator.leases()[0]
        assert handed.pid == child.pid
        # Handed, it lasts as long as the process: the TTL is cleared.
        assert handed.ttl_secs is None
    finally:
        child.kill()
        child.wait()
    with pytest.raises(portlease.NoSuchProcess):
        lease.hand_to(child.pid)
    lease.release()


def test_socket_is_bound_to_the_leased_port_and_ends_the_lease(registry: pathlib.Path) -> None:
    allocator = portlease.Allocator(registry)
    lease = allocator.allocate(ranges=R)
    port = lease.port
    server = lease.socket()
    assert server.type == socket.SOCK_STREAM and server.getsockname() == ("127.0.0.1", port)
    with socket.create_connection(("127.0.0.1", port)) as client:
        accepted, _ = server.accept()
        client.sendall(b"hi")
        assert accepted.recv(2) == b"hi"
        accepted.close()
    assert allocator.leases() == []
    server.close()
    several = allocator.allocate(ranges=R, count=2)
    with pytest.raises(portlease.InvalidRequest):
        several.socket()
    assert several.held, "a refused socket() leaves the lease as it was"
    several.release()
    udp = allocator.allocate(ranges=R, protocol="udp").socket()
    assert udp.type == socket.SOCK_DGRAM
    udp.close()


def test_module_level_lease_and_leases(registry: pathlib.Path) -> None:
    with portlease.lease(ranges=R, dir=registry, label="m") as held:
        assert [i.port for i in portlease.leases(registry)] == [held.port]
    assert portlease.leases(registry) == []


def test_exceptions_are_errors_and_the_builtin_kinds(registry: pathlib.Path) -> None:
    allocator = portlease.Allocator(registry)
    first = allocator.allocate(ranges=(12150, 12150))
    with pytest.raises(portlease.Exhausted) as exhausted:
        allocator.allocate(ranges=(12150, 12150))
    assert isinstance(exhausted.value, RuntimeError) and isinstance(exhausted.value, portlease.Error)
    assert "12150-12150" in str(exhausted.value)
    assert issubclass(portlease.LockTimeout, TimeoutError)
    for bad in [dict(ranges=(12100, 12000)), dict(count=0), dict(protocol="sctp"),
                dict(preferred=70000), dict(owner=None, ttl=None), dict(ranges="x")]:
        with pytest.raises(portlease.InvalidRequest):
            allocator.allocate(**bad)  # type: ignore[arg-type]
    first.release()
    first.release()  # a lease already ended: nothing to do
    with pytest.raises(portlease.LeaseLost) as lost:
        first.renew()
    assert lost.value.port == 12150


def test_a_lock_held_elsewhere_times_out_as_lock_timeout(registry: pathlib.Path) -> None:
    allocator = portlease.Allocator(registry, lock_timeout=0.2)
    with open(registry / "port_registry.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(portlease.LockTimeout) as timeout:
            allocator.allocate(ranges=R)
    assert isinstance(timeout.value, TimeoutError) and timeout.value.dir == str(registry)


def test_a_blocked_call_lets_other_threads_run(registry: pathlib.Path) -> None:
    """While one thread waits for the lock, another runs Python: the lock is only let
    go once the other thread has counted, so a call holding the GIL would time out."""
    allocator = portlease.Allocator(registry, lock_timeout=20)
    lock = open(registry / "port_registry.lock", "a")
    fcntl.flock(lock, fcntl.LOCK_EX)
    result: list[object] = []
    entered = threading.Event()

    def wait_for_a_port() -> None:
        entered.set()
        result.append(allocator.allocate(ranges=R))

    waiter = threading.Thread(target=wait_for_a_port)
    waiter.start()
    entered.wait()
    counted = 0
    while counted < 200_000:
        counted += 1
    assert not result, "the lock is held: the call cannot have returned"
    fcntl.flock(lock, fcntl.LOCK_UN)
    lock.close()
    waiter.join()
    assert isinstance(result[0], portlease.Lease)


def test_an_unsafe_directory_is_refused(tmp_path: pathlib.Path) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    with pytest.raises(portlease.UnsafeDirectory):
        portlease.Allocator(open_dir)


def test_a_lease_nobody_holds_is_released_when_collected(registry: pathlib.Path) -> None:
    import gc

    allocator = portlease.Allocator(registry)
    allocator.allocate(ranges=R)
    gc.collect()
    assert allocator.leases() == []
    kept = allocator.allocate(ranges=R)
    kept.keep()
    assert "kept" in repr(kept)
    del kept
    gc.collect()
    assert len(allocator.leases()) == 1
