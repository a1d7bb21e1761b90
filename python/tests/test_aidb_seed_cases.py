"""portlease.aidb beside the seed module on the seed's edge cases: the same inputs to
both, the same outcomes. Releasing ints that are not held, exhaustion's message, bad
ranges, and seed entries reclaimed by the seed's rule (no timestamp, or older than
the allocator's lease_timeout).

Ports 14600-14699.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
import types
from typing import Any, Callable

import pytest

from portlease import aidb


def side_by_side(seed: types.ModuleType, tmp_path: pathlib.Path,
                 scenario: Callable[[Any, pathlib.Path], object], **options: Any) -> tuple[object, object]:
    """`scenario` run with the seed's allocator and with portlease.aidb's, each on a
    fresh registry directory; both results."""
    results = []
    for name, module in (("seed", seed), ("aidb", aidb)):
        directory = tmp_path / name
        directory.mkdir()
        results.append(scenario(module.CrossProcessPortAllocator(registry_dir=directory, **options), directory))
    return results[0], results[1]


def outcome(call: Callable[[], object]) -> object:
    """What a call gave: its value, or the seed-visible kind of its error and message."""
    try:
        return call()
    except RuntimeError as e:
        return ("RuntimeError", str(e).split(":")[0])
    except OverflowError:
        return ("OverflowError",)


def test_releasing_ints_not_held_does_nothing(seed: types.ModuleType, tmp_path: pathlib.Path) -> None:
    def scenario(allocator: Any, directory: pathlib.Path) -> object:
        held = allocator.allocate(range_start=14600, range_size=5)
        for port in (0, -1, 70000, 2**40, 14601, held + 3):
            allocator.release(port)
        return held, sorted(json.loads((directory / "port_registry.json").read_text()))

    theirs, ours = side_by_side(seed, tmp_path, scenario)
    assert ours == theirs == (14600, ["14600"])


def test_exhaustion_and_empty_ranges_raise_the_seeds_runtime_error(seed: types.ModuleType, tmp_path: pathlib.Path) -> None:
    def scenario(allocator: Any, _: pathlib.Path) -> object:
        return [
            outcome(lambda: allocator.allocate(range_start=14610, range_size=1)),
            outcome(lambda: allocator.allocate(range_start=14610, range_size=1)),  # exhausted
            outcome(lambda: allocator.allocate(range_start=14611, range_size=0)),  # empty range
            outcome(lambda: allocator.allocate(range_start=14611, range_size=-3)),
            outcome(lambda: allocator.allocate(preferred=14612, range_start=14611, range_size=0)),
            outcome(lambda: allocator.allocate(preferred=14612, range_start=14611, range_size=0)),
        ]

    theirs, ours = side_by_side(seed, tmp_path, scenario)
    assert theirs == [
        14610,
        ("RuntimeError", "No available ports in range 14610-14611"),
        ("RuntimeError", "No available ports in range 14611-14611"),
        ("RuntimeError", "No available ports in range 14611-14608"),
        14612,
        ("RuntimeError", "No available ports in range 14611-14611"),
    ]
    assert ours == theirs


def test_ports_past_65535_raise_the_seeds_overflow_error(seed: types.ModuleType, tmp_path: pathlib.Path) -> None:
    def scenario(allocator: Any, _: pathlib.Path) -> object:
        return [
            outcome(lambda: allocator.allocate(preferred=70000, range_start=14620, range_size=2)),
            # A range past 65535: the preferred port first, as the seed.
            outcome(lambda: allocator.allocate(preferred=14621, range_start=70000, range_size=5)),
            outcome(lambda: allocator.allocate(preferred=14621, range_start=70000, range_size=5)),
            outcome(lambda: allocator.allocate(range_start=65536, range_size=1)),
        ]

    theirs, ours = side_by_side(seed, tmp_path, scenario)
    assert ours == theirs == [("OverflowError",), 14621, ("OverflowError",), ("OverflowError",)]


@pytest.mark.parametrize("lease_timeout", [60.0, 300.0])
def test_seed_entries_are_reclaimed_by_the_seeds_rule(
        seed: types.ModuleType, tmp_path: pathlib.Path, lease_timeout: float) -> None:
    now = time.time()
    entries = {
        "14630": {"pid": os.getpid()},  # no timestamp: the seed reads 0
        "14631": {"pid": os.getpid(), "timestamp": now - 100},  # past 60 s, within 300 s
        "14632": {"pid": os.getpid(), "timestamp": now - 30},
        "14633": {"timestamp": now - 1000},  # no pid, long expired
    }

    def scenario(allocator: Any, directory: pathlib.Path) -> object:
        (directory / "port_registry.json").write_text(json.dumps(entries))
        return [outcome(lambda: allocator.allocate(range_start=14630, range_size=5)) for _ in range(5)]

    theirs, ours = side_by_side(seed, tmp_path, scenario, lease_timeout=lease_timeout)
    if lease_timeout == 60.0:
        assert theirs[:4] == [14630, 14631, 14633, 14634]
    else:
        assert theirs[:3] == [14630, 14633, 14634]
    assert ours == theirs
