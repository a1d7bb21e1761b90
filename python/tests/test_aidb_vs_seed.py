"""portlease.aidb beside the seed module (../shared/seed/port_allocator.py): the same
results where the seed is right, and right where the seed is not.

Ports 12400-12599.
"""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time
import types
from typing import Any, Callable

import pytest

import portlease
from portlease import aidb

START, SIZE = 12400, 20
OUTSIDE = 12590  # a preferred port outside the range


def both(seed: types.ModuleType, tmp_path: pathlib.Path, scenario: Callable[[Any, pathlib.Path], object]) -> tuple[object, object]:
    """Runs `scenario` with the seed's allocator and with portlease.aidb's, each in a
    fresh registry directory; returns both results."""
    results = []
    for name, module in (("seed", seed), ("aidb", aidb)):
        directory = tmp_path / name
        results.append(scenario(module.CrossProcessPortAllocator(registry_dir=directory), directory))
    return results[0], results[1]


def test_the_public_names_signatures_and_defaults_are_the_seeds(seed: types.ModuleType) -> None:
    import inspect

    names = [n for n in vars(seed) if not n.startswith("_") and n.isupper()]
    for name in names:
        assert getattr(aidb, name) == getattr(seed, name), name
    assert aidb.DEFAULT_REGISTRY_DIR == pathlib.Path.home() / ".aidb"
    for name in ["CrossProcessPortAllocator", "get_allocator", "allocate_port", "release_port"]:
        assert callable(getattr(aidb, name))
    for ours, theirs in [
        (aidb.CrossProcessPortAllocator.__init__, seed.CrossProcessPortAllocator.__init__),
        (aidb.CrossProcessPortAllocator.allocate, seed.CrossProcessPortAllocator.allocate),
        (aidb.CrossProcessPortAllocator.release, seed.CrossProcessPortAllocator.release),
        (aidb.get_allocator, seed.get_allocator),
        (aidb.allocate_port, seed.allocate_port),
        (aidb.release_port, seed.release_port),
    ]:
        ours_sig, theirs_sig = inspect.signature(ours), inspect.signature(theirs)
        assert list(ours_sig.parameters) == list(theirs_sig.parameters)
        assert [p.default for p in ours_sig.parameters.values()] == [
            p.default for p in theirs_sig.parameters.values()]


def test_attributes_are_the_seeds(seed: types.ModuleType, tmp_path: pathlib.Path) -> None:
    def attributes(allocator: Any, directory: pathlib.Path) -> object:
        return (allocator.registry_dir == directory, allocator.registry_file.name,
                allocator.lock_file.name, allocator.lease_timeout, directory.is_dir())

    theirs, ours = both(seed, tmp_path, attributes)
    assert ours == theirs == (True, "port_registry.json", "port_registry.lock", 300.0, True)


def test_the_preferred_port_when_free_else_the_range(seed: types.ModuleType, tmp_path: pathlib.Path) -> None:
    def scenario(allocator: Any, _: pathlib.Path) -> object:
        first = allocator.allocate(preferred=OUTSIDE, range_start=START, range_size=SIZE)
        second = allocator.allocate(preferred=OUTSIDE, range_start=START, range_size=SIZE)
        third = allocator.allocate(range_start=START, range_size=SIZE)
        return first, second, third

    theirs, ours = both(seed, tmp_path, scenario)
    assert ours == theirs == (OUTSIDE, START, START + 1)


def test_leased_and_bound_ports_are_skipped(seed: types.ModuleType, tmp_path: pathlib.Path) -> None:
    def scenario(allocator: Any, _: pathlib.Path) -> object:
        with socket.socket() as bound:
            bound.bind(("127.0.0.1", START + 5))
            bound.listen()
            got = [allocator.allocate(preferred=START + 5, range_start=START + 4, range_size=4) for _ in range(3)]
        return got

    theirs, ours = both(seed, tmp_path, scenario)
    assert ours == theirs == [START + 4, START + 6, START + 7]


def test_exhaustion_raises_a_runtime_error(seed: types.ModuleType, tmp_path: pathlib.Path) -> None:
    def scenario(allocator: Any, _: pathlib.Path) -> object:
        held = [allocator.allocate(range_start=START, range_size=2) for _ in range(2)]
        with pytest.raises(RuntimeError):
            allocator.allocate(range_start=START, range_size=2)
        return held

    theirs, ours = both(seed, tmp_path, scenario)
    assert ours == theirs == [START, START + 1]


def test_release_frees_the_port_and_a_missing_port_is_no_error(seed: types.ModuleType, tmp_path: pathlib.Path) -> None:
    def scenario(allocator: Any, directory: pathlib.Path) -> object:
        port = allocator.allocate(preferred=START + 10, range_start=START, range_size=SIZE)
        allocator.release(START + 11)  # never leased
        before = set(json.loads((directory / "port_registry.json").read_text()))
        allocator.release(port)
        after = json.loads((directory / "port_registry.json").read_text())
        again = allocator.allocate(preferred=START + 10, range_start=START, range_size=SIZE)
        return before, after, again

    theirs, ours = both(seed, tmp_path, scenario)
    assert ours == theirs == ({str(START + 10)}, {}, START + 10)


def test_module_functions_share_one_allocator(seed: types.ModuleType, fresh_aidb: types.ModuleType, tmp_path: pathlib.Path) -> None:
    results = []
    for name, module in (("seed", seed), ("aidb", fresh_aidb)):
        shared = module.get_allocator(tmp_path / name)
        assert module.get_allocator(tmp_path / "other") is shared
        port = module.allocate_port(preferred=START + 3)
        module.release_port(port)
        results.append((port, json.loads((tmp_path / name / "port_registry.json").read_text())))
    assert results[0] == results[1] == (START + 3, {})


def test_seed_and_aidb_processes_share_a_registry(seed: types.ModuleType, tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "shared"
    theirs = seed.CrossProcessPortAllocator(registry_dir=directory)
    ours = aidb.CrossProcessPortAllocator(registry_dir=directory)
    a = theirs.allocate(range_start=START, range_size=4)
    b = ours.allocate(preferred=a, range_start=START, range_size=4)
    c = theirs.allocate(preferred=b, range_start=START, range_size=4)
    assert len({a, b, c}) == 3
    kinds = {info.port: info.kind for info in portlease.leases(directory)}
    assert kinds == {a: "seed", b: "portlease", c: "seed"}
    ours.release(a)  # the seed's release: whoever holds it
    theirs.release(b)
    assert set(json.loads((directory / "port_registry.json").read_text())) == {str(c)}


# Where the seed is wrong, portlease.aidb is right.


def test_a_damaged_registry_is_salvaged_not_taken_for_empty(seed: types.ModuleType, tmp_path: pathlib.Path) -> None:
    def scenario(allocator: Any, directory: pathlib.Path) -> object:
        held = {"pid": os.getpid(), "timestamp": time.time()}
        # A live lease on START, then a torn entry: the file was cut short.
        text = json.dumps({str(START): held, str(START + 1): held})
        (directory / "port_registry.json").write_text(text[: text.rindex("timestamp")])
        return allocator.allocate(range_start=START, range_size=SIZE)

    theirs, ours = both(seed, tmp_path, scenario)
    assert theirs == START, "the seed reads a damaged file as empty and hands out a held port"
    assert ours != START
    assert list((tmp_path / "aidb").glob("port_registry.json.corrupt-*")), "the damaged bytes are kept"


def test_a_dead_holders_port_comes_back_at_once(seed: types.ModuleType, tmp_path: pathlib.Path) -> None:
    def scenario(allocator: Any, directory: pathlib.Path) -> object:
        module = "portlease.aidb" if isinstance(allocator, aidb.CrossProcessPortAllocator) else None
        code = (f"import sys, pathlib; sys.path.insert(0, {str(pathlib.Path(seed.__file__).parent)!r});\n"
                + (f"from portlease import aidb as m\n" if module else "import port_allocator as m\n")
                + f"print(m.CrossProcessPortAllocator(pathlib.Path({str(directory)!r})).allocate("
                  f"preferred={START + 7}, range_start={START}, range_size={SIZE}))")
        # The holder exits without releasing (a crash).
        dead = int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
        return dead, allocator.allocate(preferred=START + 7, range_start=START, range_size=SIZE)

    theirs, ours = both(seed, tmp_path, scenario)
    assert theirs[0] == ours[0] == START + 7
    assert theirs[1] != START + 7, "the seed keeps a dead process's port for 300 s"
    assert ours[1] == START + 7


def test_releasing_an_expired_lease_leaves_the_ports_new_holder_alone(seed: types.ModuleType, tmp_path: pathlib.Path) -> None:
    def scenario(allocator: Any, directory: pathlib.Path) -> object:
        module = aidb if isinstance(allocator, aidb.CrossProcessPortAllocator) else seed
        first = module.CrossProcessPortAllocator(registry_dir=directory, lease_timeout=0.05)
        port = first.allocate(preferred=START + 9, range_start=START, range_size=SIZE)
        time.sleep(0.1)  # the lease expires
        second = module.CrossProcessPortAllocator(registry_dir=directory, lease_timeout=0.05)
        taken = second.allocate(preferred=START + 9, range_start=START, range_size=SIZE)
        first.release(port)  # late: the port is the second's by now
        return taken, set(json.loads((directory / "port_registry.json").read_text()))

    theirs, ours = both(seed, tmp_path, scenario)
    assert theirs == (START + 9, set()), "the seed's late release ends the new holder's lease"
    assert ours == (START + 9, {str(START + 9)})


def test_a_lock_waiter_gets_the_lock_when_it_is_released(seed: types.ModuleType, tmp_path: pathlib.Path) -> None:
    """A process takes the lock again and again, letting it go for short moments: a
    waiter that blocks on the lock gets it in one of the first gaps; the seed polls every
    100 ms and mostly misses them. Rounds are counted, not times asserted."""

    def scenario(allocator: Any, directory: pathlib.Path) -> object:
        allocator.release(1)  # makes the files
        lock = open(directory / "port_registry.lock", "a")
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = threading.Event()
        thread = threading.Thread(target=lambda: (allocator.allocate(range_start=START, range_size=SIZE), done.set()))
        thread.start()
        time.sleep(0.05)  # let the waiter start waiting
        rounds = 0
        while not done.is_set() and rounds < 40:
            fcntl.flock(lock, fcntl.LOCK_UN)
            time.sleep(0.01)
            fcntl.flock(lock, fcntl.LOCK_EX)
            rounds += 1
            done.wait(0.05)  # hold the lock a while (the waiter may be done meanwhile)
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
        thread.join()
        return rounds

    theirs, ours = both(seed, tmp_path, scenario)
    print(f"rounds until the lock was had: seed {theirs}, portlease.aidb {ours}")
    assert ours <= 3


def test_lock_timeout_is_a_timeout_error_in_both(seed: types.ModuleType, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seed, "LOCK_TIMEOUT_S", 0.3)
    monkeypatch.setattr(aidb, "LOCK_TIMEOUT_S", 0.3)

    def scenario(allocator: Any, directory: pathlib.Path) -> object:
        allocator.release(1)
        with open(directory / "port_registry.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with pytest.raises(TimeoutError) as raised:
                allocator.allocate(range_start=START, range_size=SIZE)
        return type(raised.value).__name__

    theirs, ours = both(seed, tmp_path, scenario)
    assert (theirs, ours) == ("TimeoutError", "LockTimeout")


def test_under_ci_a_missing_seed_fails_saying_what_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    import conftest

    monkeypatch.setattr(conftest, "SEED", tmp_path / "shared" / "seed" / "port_allocator.py")
    monkeypatch.setenv("PORTLEASE_REQUIRE_PEERS", "1")
    with pytest.raises(pytest.fail.Exception) as failed:
        conftest.load_seed()
    assert "port_allocator.py is missing" in str(failed.value)
    monkeypatch.setenv("PORTLEASE_REQUIRE_PEERS", "0")
    with pytest.raises(pytest.skip.Exception):
        conftest.load_seed()
