"""Bad arguments to every public function: booleans where numbers are meant, anything but
a boolean where a flag is, numbers out of range and unparsable text all raise
portlease.InvalidRequest (a ValueError), never OverflowError or a bare ValueError, and
leave nothing leased.

Ports 13200-13299.
"""

from __future__ import annotations

import math
import pathlib
from typing import Any, Callable, Iterator

import pytest

import portlease
from portlease import aidb

R = (13200, 13209)

Call = Callable[[pathlib.Path, portlease.Lease], Any]


def _allocate(**options: Any) -> Call:
    return lambda registry, _: portlease.Allocator(registry).allocate(**{"ranges": R, **options})


def _lease(**options: Any) -> Call:
    return lambda registry, _: portlease.lease(**{"ranges": R, "dir": registry, **options})


BAD_TTLS = [True, False, -1, -0.5, math.nan, math.inf, 1e300, "5", [1]]
BAD_PORTS = [True, False, 0, -1, 65536, 2**64, "13200", 13200.0, None]
BAD_PIDS = [True, False, 0, -1, 2**31, 2**40, "1", 1.0]

CASES: dict[str, Call] = {}
for i, value in enumerate([True, -1, math.nan, math.inf, 1e300, "5", None]):
    CASES[f"Allocator(lock_timeout={value!r})"] = lambda r, _, v=value: portlease.Allocator(r, lock_timeout=v)
CASES["Allocator(dir=5)"] = lambda r, _: portlease.Allocator(5)  # type: ignore[arg-type]
for name, options in {
    "ranges=[]": {"ranges": []},
    "ranges=()": {"ranges": ()},
    "ranges='¹²³⁴⁵-¹²³⁴⁶'": {"ranges": "¹²³⁴⁵-¹²³⁴⁶"},
    "ranges='١٣٢٠٠-١٣٢٠٩'": {"ranges": "١٣٢٠٠-١٣٢٠٩"},
    "ranges='13200-99999999999999999999'": {"ranges": "13200-99999999999999999999"},
    "ranges=(True, 13209)": {"ranges": (True, 13209)},
    "ranges=(13200, 2**64)": {"ranges": (13200, 2**64)},
    "ranges=[(13200, 13209.0)]": {"ranges": [(13200, 13209.0)]},
    "ranges=range(13200, 2**70)": {"ranges": range(13200, 2**70)},
    "ranges=5": {"ranges": 5},
    "count=True": {"count": True},
    "count=2**64": {"count": 2**64},
    "count=0": {"count": 0},
    "count=-1": {"count": -1},
    "count=1.0": {"count": 1.0},
    "block='no'": {"block": "no"},
    "block=1": {"block": 1},
    "block=None": {"block": None},
    "protocol='tcp6'": {"protocol": "tcp6"},
    "protocol=True": {"protocol": True},
    "host='not an address'": {"host": "not an address"},
    "host=5": {"host": 5},
    "owner=2**32+1": {"owner": 2**32 + 1},
    "owner=True": {"owner": True},
    "owner=-1": {"owner": -1},
    "owner='me'": {"owner": "me"},
    "owner=None ttl=None": {"owner": None, "ttl": None},
    "label=5": {"label": 5},
    "exclude=5": {"exclude": 5},
    "exclude=[True]": {"exclude": [True]},
    "exclude=[2**70]": {"exclude": [2**70]},
    **{f"ttl={v!r}": {"ttl": v} for v in BAD_TTLS},
    **{f"preferred={v!r}": {"preferred": v} for v in BAD_PORTS if v is not None},
}.items():
    CASES[f"Allocator.allocate({name})"] = _allocate(**options)
for name, options in {
    "ranges=[]": {"ranges": []},
    "count=2**64": {"count": 2**64},
    "block='no'": {"block": "no"},
    "ttl=True": {"ttl": True},
    "owner=2**32+1": {"owner": 2**32 + 1},
    "dir=5": {"dir": 5},
}.items():
    CASES[f"lease({name})"] = _lease(**options)
for value in BAD_PORTS:
    CASES[f"Allocator.release({value!r})"] = lambda r, _, v=value: portlease.Allocator(r).release(v)
    CASES[f"Allocator.renew({value!r})"] = lambda r, _, v=value: portlease.Allocator(r).renew(v)
    CASES[f"is_port_free({value!r})"] = lambda r, _, v=value: portlease.is_port_free(v)
for value in BAD_TTLS:
    CASES[f"Allocator.renew(port, ttl={value!r})"] = lambda r, held, v=value: portlease.Allocator(r).renew(held.port, v)
    CASES[f"Lease.renew({value!r})"] = lambda r, held, v=value: held.renew(v)
for value in BAD_PIDS:
    CASES[f"Lease.hand_to({value!r})"] = lambda r, held, v=value: held.hand_to(v)
    CASES[f"pick_unused_port(pid={value!r})"] = lambda r, _, v=value: portlease.pick_unused_port(v, ranges=R, dir=r)
for value in ["tcp6", True, 5]:
    CASES[f"Lease.socket({value!r})"] = lambda r, held, v=value: held.socket(v)
for name, options in {
    "ranges=[]": {"ranges": []},
    "ranges='¹-²'": {"ranges": "¹-²"},
    "ranges=(13200, 2**64)": {"ranges": (13200, 2**64)},
    "portserver_address=5": {"portserver_address": 5},
    "dir=5": {"dir": 5},
}.items():
    CASES[f"pick_unused_port({name})"] = lambda r, _, o=options: portlease.pick_unused_port(**{"ranges": R, "dir": r, **o})
for value in [True, "13200", 13200.0, None]:
    CASES[f"return_port({value!r})"] = lambda r, _, v=value: portlease.return_port(v)
for value in [True, 5]:
    CASES[f"leases(dir={value!r})"] = lambda r, _, v=value: portlease.leases(v)
# portlease.aidb: the seed's names and signatures.
for value in [True, -1, math.nan, math.inf, 1e300, "5"]:
    CASES[f"aidb.CrossProcessPortAllocator(lease_timeout={value!r})"] = (
        lambda r, _, v=value: aidb.CrossProcessPortAllocator(r, lease_timeout=v).allocate(range_start=R[0], range_size=10))
for name, options in {
    **{f"preferred={v!r}": {"preferred": v} for v in BAD_PORTS if v is not None},
    **{f"range_start={v!r}": {"range_start": v} for v in BAD_PORTS if v is not None},
    # An empty range (range_size <= 0) or one past 65535 does what the seed's does
    # (test_aidb_seed_cases.py): the preferred port alone, or the ports up to 65535.
    "range_size=True": {"range_size": True},
    "range_size=10.0": {"range_size": 10.0},
    "host='not an address'": {"host": "not an address"},
    "host=5": {"host": 5},
}.items():
    CASES[f"aidb.allocate({name})"] = (
        lambda r, _, o=options: aidb.CrossProcessPortAllocator(r).allocate(**{"range_start": R[0], "range_size": 10, **o}))
for value in [True, "13200", 13200.0, None]:
    CASES[f"aidb.release({value!r})"] = lambda r, _, v=value: aidb.CrossProcessPortAllocator(r).release(v)
    CASES[f"aidb.release_port({value!r})"] = lambda r, _, v=value: aidb.release_port(v)
CASES["aidb.CrossProcessPortAllocator(registry_dir=5)"] = lambda r, _: aidb.CrossProcessPortAllocator(5)  # type: ignore[arg-type]
CASES["aidb.get_allocator(registry_dir=5)"] = lambda r, _: aidb.get_allocator(5)  # type: ignore[arg-type]
CASES["aidb.allocate_port(range_size=10.0)"] = lambda r, _: aidb.allocate_port(range_start=R[0], range_size=10.0)  # type: ignore[arg-type]
CASES["aidb.allocate_port(preferred=True)"] = lambda r, _: aidb.allocate_port(True, R[0], 10)


@pytest.fixture
def held(registry: pathlib.Path, fresh_aidb: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[portlease.Lease]:
    """A lease on 13250-13259, for the calls on a Lease; the default registry and
    portlease.aidb's are this test's own."""
    monkeypatch.setenv("PORTLEASE_DIR", str(registry))
    monkeypatch.setattr(aidb, "DEFAULT_REGISTRY_DIR", registry / "aidb")
    with portlease.Allocator(registry).allocate(ranges=(13250, 13259)) as lease:
        yield lease


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_argument_raises_invalid_request(registry: pathlib.Path, held: portlease.Lease, case: str) -> None:
    with pytest.raises(portlease.InvalidRequest) as raised:
        CASES[case](registry, held)
    assert isinstance(raised.value, ValueError)
    assert str(raised.value), "the message says what was wrong"
    assert held.held
    # Nothing leased but the fixture's own lease.
    assert [i.port for i in portlease.Allocator(registry).leases()] == [held.port]
    aidb_dir = registry / "aidb"
    if aidb_dir.exists():
        assert portlease.leases(aidb_dir) == []


@pytest.mark.parametrize("port", [70000, -1, 0, 2**64, -(2**70), 13299])
def test_aidb_release_of_a_port_it_does_not_hold_does_nothing(registry: pathlib.Path, port: int, fresh_aidb: Any) -> None:
    allocator = aidb.CrossProcessPortAllocator(registry)
    kept = allocator.allocate(range_start=R[0], range_size=10)
    allocator.release(port)
    aidb.get_allocator(registry).release(port)
    aidb.release_port(port)
    assert [i.port for i in portlease.leases(registry)] == [kept]


def test_good_arguments_of_every_kind_are_taken(registry: pathlib.Path) -> None:
    allocator = portlease.Allocator(registry, lock_timeout=5)
    for options in [
        {"ranges": "13200-13209"},
        {"ranges": " 13200 - 13209 "},
        {"ranges": range(13200, 13210)},
        {"ranges": [(13200, 13204), "13205-13209"]},
        {"ranges": R, "ttl": 30},
        {"ranges": R, "ttl": 2.5, "owner": None},
        {"ranges": R, "ttl": None},
        {"ranges": R, "count": 2, "block": True},
        {"ranges": R, "preferred": 13205, "exclude": [13200]},
        {"ranges": R, "host": "localhost", "label": "x", "protocol": "udp"},
    ]:
        with allocator.allocate(**options) as lease:  # type: ignore[arg-type]
            assert all(R[0] <= p <= R[1] for p in lease.ports)
    assert allocator.leases() == []
