"""A child forked without exec never keeps the registry locked for everyone else.

multiprocessing's `fork` start method copies every descriptor of the parent; the
registry's `flock` belongs to the open file, so a copy of a lock file would keep the
lock after the parent let go of it or died. Ports 13500-13599.
"""

from __future__ import annotations

import multiprocessing
import os
import pathlib
import signal
import subprocess
import threading
import time

import pytest

import portlease

R = (13500, 13599)
LOCK = "port_registry.lock"


def _sleep_forever() -> None:
    while True:
        time.sleep(60)


def _hold_lock(registry: pathlib.Path) -> subprocess.Popen[bytes]:
    """flock(1) holding the registry's lock, in one process, until killed."""
    registry.mkdir(mode=0o700, exist_ok=True)
    holder = subprocess.Popen(
        ["flock", "--no-fork", str(registry / LOCK), "-c", "echo locked; exec sleep 600"],
        stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == b"locked"
    return holder


def _others_get_the_lock(registry: pathlib.Path) -> bool:
    """Whether another process gets the lock within 10 s."""
    return subprocess.run(["flock", "-w", "10", str(registry / LOCK), "true"]).returncode == 0


def _kill(process: "multiprocessing.process.BaseProcess") -> None:
    if process.pid is not None:
        os.kill(process.pid, signal.SIGKILL)
    process.join()


def test_a_worker_forked_after_a_timed_out_wait_leaves_the_lock_free(registry: pathlib.Path) -> None:
    allocator = portlease.Allocator(registry, lock_timeout=0.2)
    holder = _hold_lock(registry)
    try:
        with pytest.raises(portlease.LockTimeout):
            allocator.allocate(ranges=R)
        worker = multiprocessing.get_context("fork").Process(target=_sleep_forever)
        worker.start()
    finally:
        holder.kill()
        holder.wait()
    try:
        assert _others_get_the_lock(registry), "the forked worker kept the lock"
    finally:
        _kill(worker)
    with allocator.allocate(ranges=R) as lease:
        assert R[0] <= lease.port <= R[1]


def test_workers_forked_by_a_busy_threaded_process_never_hold_the_lock(registry: pathlib.Path) -> None:
    allocator = portlease.Allocator(registry, lock_timeout=0.05)
    running, stop = threading.Event(), threading.Event()
    idle = threading.Semaphore(0)
    timeouts = []

    def busy() -> None:
        while not stop.is_set():
            if not running.is_set():
                idle.release()
                running.wait()
                continue
            try:
                with allocator.allocate(ranges=R):
                    pass
            except portlease.LockTimeout:
                timeouts.append(1)

    threads = [threading.Thread(target=busy) for _ in range(3)]
    for thread in threads:
        thread.start()
    context = multiprocessing.get_context("fork")
    workers = []
    try:
        for turn in range(5):
            # Another process holds the lock while the threads wait on it and give
            # up, and a worker is forked meanwhile; then the threads pause, and the
            # lock comes free with no thread waiting for it.
            holder = _hold_lock(registry)
            running.set()
            time.sleep(0.2)
            worker = context.Process(target=_sleep_forever)
            worker.start()
            workers.append(worker)
            running.clear()
            for _ in threads:
                idle.acquire()
            holder.kill()
            holder.wait()
            assert _others_get_the_lock(registry), f"round {turn}: a forked worker holds the lock"
    finally:
        stop.set()
        running.set()
        for thread in threads:
            thread.join()
        for worker in workers:
            _kill(worker)
    assert timeouts, "the busy threads never waited out a lock timeout"
