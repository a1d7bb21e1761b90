"""A process that forks keeps working, in the parent and in the child.

Ports 12200-12299.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import pathlib

import portlease

R = (12200, 12249)


def _child_work(directory: str, parents_port: int, queue: "multiprocessing.Queue[object]") -> None:
    allocator = portlease.Allocator(directory)
    with allocator.allocate(ranges=R) as mine:
        held = {info.port: info.pid for info in allocator.leases()}
        queue.put((mine.port, held[mine.port], held.get(parents_port)))
    kept = allocator.allocate(ranges=R)
    kept.keep()
    queue.put(kept.port)  # left for the child's exit to end


def test_parent_and_forked_child_both_lease(registry: pathlib.Path) -> None:
    allocator = portlease.Allocator(registry)
    parents = allocator.allocate(ranges=R)
    picked = portlease.pick_unused_port(ranges=R, dir=registry)
    context = multiprocessing.get_context("fork")
    queue: "multiprocessing.Queue[object]" = context.Queue()
    child = context.Process(target=_child_work, args=(str(registry), parents.port, queue))
    child.start()
    (port, owner, parents_owner), kept = queue.get(timeout=60), queue.get(timeout=60)
    child.join()
    assert child.exitcode == 0
    # The child's lease was its own, made under its own pid; the parent's was untouched.
    assert owner == child.pid and parents_owner == os.getpid() and port != parents.port
    # The child kept a lease and exited: it is stale now, and reclaimed.
    assert kept in {info.port for info in allocator.gc()}
    assert {info.port for info in allocator.leases()} == {parents.port, picked}
    parents.release()
    portlease.return_port(picked)
    assert allocator.leases() == []


def test_a_forked_child_never_releases_its_parents_leases(registry: pathlib.Path) -> None:
    allocator = portlease.Allocator(registry)
    lease = allocator.allocate(ranges=R)
    picked = portlease.pick_unused_port(ranges=R, dir=registry)
    pid = os.fork()
    if pid == 0:  # the child drops its copies, returns the port and leaves
        code = 0
        try:
            portlease.return_port(picked)  # not the child's to return: ignored
            with lease:
                pass
        except RuntimeError:
            code = 3  # refused: the lease is the parent's
        except BaseException:
            code = 1
        del lease
        gc.collect()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 3
    assert {info.port for info in allocator.leases()} == {lease.port, picked}
    lease.release()
    portlease.return_port(picked)
    assert allocator.leases() == []


def test_the_aidb_drop_in_works_in_parent_and_forked_child(registry: pathlib.Path, fresh_aidb: object) -> None:
    from portlease import aidb

    aidb.get_allocator(registry)
    parents = aidb.allocate_port(range_start=R[0], range_size=50)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            mine = aidb.allocate_port(range_start=R[0], range_size=50)
            aidb.release_port(parents)  # the seed's release: whoever holds the port
            os.write(write, json.dumps([mine, {i.port: i.pid for i in portlease.leases(registry)}]).encode())
        finally:
            os._exit(0)
    os.close(write)
    mine, seen = json.loads(os.read(read, 4096))
    os.waitpid(pid, 0)
    assert seen == {str(mine): pid}, "the child's port is the child's, the parent's was released"
    assert [i.stale for i in portlease.leases(registry)] == [True], "and ends with the child"
    again = aidb.allocate_port(preferred=parents, range_start=R[0], range_size=50)
    assert again == parents
    aidb.release_port(again)
    assert {i.port for i in portlease.leases(registry) if not i.stale} == set()
