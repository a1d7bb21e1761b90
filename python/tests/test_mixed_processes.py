"""Several processes mixing the seed module, portlease.aidb and portlease.Allocator on a
few ports: no port is ever held by two at once.

Ports 12600-12603.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

from conftest import SEED, load_seed

PORTS = (12600, 4)  # start, count: fewer ports than processes, so they contend
CYCLES = 25

WORKER = r"""
import json, pathlib, sys, time
kind, directory, seed_dir, start, size, cycles = sys.argv[1:7]
start, size, cycles = int(start), int(size), int(cycles)
if kind == "seed":
    sys.path.insert(0, seed_dir)
    import port_allocator as module
elif kind == "aidb":
    from portlease import aidb as module
if kind == "allocate":
    import portlease
    allocator = portlease.Allocator(directory)
    def take():
        return allocator.allocate(ranges=(start, start + size - 1))
    def give(lease):
        lease.release()
    def port_of(lease):
        return lease.port
else:
    allocator = module.CrossProcessPortAllocator(registry_dir=pathlib.Path(directory))
    def take():
        return allocator.allocate(range_start=start, range_size=size)
    def give(port):
        allocator.release(port)
    def port_of(port):
        return port
holds = []
while len(holds) < cycles:
    try:
        held = take()
    except RuntimeError:  # every port is taken just now
        time.sleep(0.002)
        continue
    began = time.monotonic_ns()
    time.sleep(0.001)
    ended = time.monotonic_ns()
    holds.append((port_of(held), began, ended))
    give(held)
print(json.dumps(holds))
"""


def test_no_port_is_held_twice_at_once(tmp_path: pathlib.Path) -> None:
    load_seed()  # fails under CI, skips elsewhere, when the seed is missing
    directory = tmp_path / "registry"
    kinds = ["seed", "aidb", "allocate"] * 2
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, kind, str(directory), str(SEED.parent),
                          str(PORTS[0]), str(PORTS[1]), str(CYCLES)], stdout=subprocess.PIPE, text=True)
        for kind in kinds
    ]
    holds = []
    for kind, worker in zip(kinds, workers):
        out, _ = worker.communicate(timeout=300)
        assert worker.returncode == 0, kind
        holds += [(port, began, ended, kind) for port, began, ended in json.loads(out)]
    assert len(holds) == CYCLES * len(kinds)
    holds.sort()
    overlaps = [(a, b) for a, b in zip(holds, holds[1:]) if a[0] == b[0] and b[1] < a[2]]
    assert overlaps == []
    assert {kind for *_, kind in holds} == set(kinds)
    assert {port for port, *_ in holds} <= set(range(PORTS[0], PORTS[0] + PORTS[1]))
