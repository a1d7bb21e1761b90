"""One exception class per error of the library, each a portlease.Error.

Ports 14000-14099.
"""

from __future__ import annotations

import json
import os
import pathlib
import time

import pytest

import portlease


def test_every_error_of_the_library_has_its_own_class() -> None:
    for name in ["NotLeased", "NotPortlease", "HeldByProcess", "NoRegistry", "ReadOnly",
                 "RegistryTooLarge"]:
        assert name in portlease.__all__
        kind = getattr(portlease, name)
        assert issubclass(kind, portlease.Error) and kind is not portlease.Error
        assert kind.__module__ == "portlease" and kind.__doc__


def test_renewing_a_port_nobody_leased_raises_not_leased(registry: pathlib.Path) -> None:
    allocator = portlease.Allocator(registry)
    with pytest.raises(portlease.NotLeased) as raised:
        allocator.renew(14000)
    assert raised.value.port == 14000


def test_renewing_a_lease_of_the_seed_raises_not_portlease(registry: pathlib.Path) -> None:
    allocator = portlease.Allocator(registry)
    # A lease in the seed's own format, held by this (live) process.
    (registry / "port_registry.json").write_text(
        json.dumps({"14001": {"pid": os.getpid(), "timestamp": time.time()}}))
    with pytest.raises(portlease.NotPortlease) as raised:
        allocator.renew(14001)
    assert raised.value.port == 14001


def test_leases_of_a_missing_directory_raise_no_registry_and_create_nothing(
    tmp_path: pathlib.Path,
) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(portlease.NoRegistry) as raised:
        portlease.leases(missing)
    assert isinstance(raised.value, FileNotFoundError) and raised.value.dir == str(missing)
    assert not missing.exists(), "reading made the directory"


def test_leases_read_a_registry_without_changing_it(registry: pathlib.Path) -> None:
    with portlease.lease(ranges=(14010, 14019), dir=registry, label="read") as held:
        before = sorted(p.name for p in registry.iterdir())
        assert [(i.port, i.label) for i in portlease.leases(registry)] == [(held.port, "read")]
        assert sorted(p.name for p in registry.iterdir()) == before


def test_a_write_past_the_read_limit_raises_registry_too_large_and_changes_nothing(
    registry: pathlib.Path,
) -> None:
    registry.mkdir(mode=0o700)
    path = registry / "port_registry.json"
    # One entry of the seed's, held by init, padded to just under the 64 MiB limit.
    padding = "x" * ((64 << 20) - 2000)
    path.write_text(json.dumps({"14020": {"pid": 1, "timestamp": time.time(), "pad": padding}}))
    before = path.read_bytes()
    with pytest.raises(portlease.RegistryTooLarge) as raised:
        portlease.Allocator(registry).allocate(ranges=(14021, 14029), label="y" * 4000)
    assert raised.value.path == str(path)
    assert path.read_bytes() == before, "nothing was written"
