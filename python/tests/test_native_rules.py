"""The rules that moved into native code: arguments are checked there, by the library's
rules, with one wording whichever call they reach; the exception classes are made
there; the defaults come from there.

Ports 14200-14299.
"""

from __future__ import annotations

import math
import pathlib
import pickle
import sys

import pytest

import portlease
from portlease import _native, aidb

R = (14200, 14209)

BASES = {
    "Error": (Exception,),
    "LockTimeout": (portlease.Error, TimeoutError),
    "Exhausted": (portlease.Error, RuntimeError),
    "NoFreePortFoundError": (portlease.Exhausted,),
    "InvalidRequest": (portlease.Error, ValueError),
    "NoSuchProcess": (portlease.Error, ProcessLookupError),
    "OwnerLimit": (portlease.Error,),
    "LeaseLost": (portlease.Error,),
    "NotLeased": (portlease.Error,),
    "NotPortlease": (portlease.Error,),
    "HeldByProcess": (portlease.Error,),
    "NoRegistry": (portlease.Error, FileNotFoundError),
    "ReadOnly": (portlease.Error,),
    "RegistryIOError": (portlease.Error, OSError),
    "RegistryTooLarge": (portlease.Error,),
    "UnsafeDirectory": (portlease.Error, PermissionError),
    "BindError": (portlease.Error, OSError),
}


@pytest.mark.parametrize("name", sorted(BASES))
def test_each_exception_class_is_made_natively_with_its_bases(name: str) -> None:
    kind = getattr(portlease, name)
    assert kind is getattr(_native, name), "made by the native module, re-exported"
    assert kind.__bases__ == BASES[name]
    assert kind.__module__ == "portlease" and kind.__qualname__ == name
    assert (kind.__doc__ or "").strip()


def test_port_out_of_range_is_the_aidb_modules_and_an_overflow_error() -> None:
    kind = aidb.PortOutOfRange
    assert kind is _native.PortOutOfRange
    assert kind.__bases__ == (portlease.InvalidRequest, OverflowError)
    assert kind.__module__ == "portlease.aidb" and (kind.__doc__ or "").strip()


def test_an_exception_keeps_its_attributes_through_pickle(registry: pathlib.Path) -> None:
    with pytest.raises(portlease.NotLeased) as raised:
        portlease.Allocator(registry).renew(14250)
    copy = pickle.loads(pickle.dumps(raised.value))
    assert type(copy) is portlease.NotLeased and copy.port == 14250
    assert str(copy) == str(raised.value)


@pytest.mark.parametrize("value", [True, False])
def test_a_bool_where_a_port_is_meant_is_refused_by_native_code(registry: pathlib.Path, value: bool) -> None:
    native = _native.NativeAllocator(str(registry), 5.0)
    for call in (lambda: native.release(value), lambda: _native.is_port_free(value),
                 lambda: _native.check_port(value, "port")):
        with pytest.raises(portlease.InvalidRequest, match=f"port must be a port number from 1 to 65535, not {value}"):
            call()


def test_native_calls_refuse_what_pythons_conversions_would_overflow_on(registry: pathlib.Path) -> None:
    native = _native.NativeAllocator(str(registry), 5.0)
    for call in (lambda: native.release(2**64), lambda: native.renew(2**200),
                 lambda: _native.check_pid(-(2**70), "pid"),
                 lambda: native.renew(14200, 10**400)):
        with pytest.raises(portlease.InvalidRequest) as raised:
            call()
        assert not isinstance(raised.value, OverflowError)
    with pytest.raises(portlease.InvalidRequest, match=r"not 18446744073709551616\b"):
        native.release(2**64)


def test_a_rule_reads_the_same_whichever_call_it_reaches(registry: pathlib.Path) -> None:
    seconds = "must be a finite number of seconds from 0 to 1e18, not nan"
    with portlease.Allocator(registry).allocate(ranges=R) as held:
        for call, what in [
            (lambda: portlease.Allocator(registry, lock_timeout=math.nan), "lock_timeout"),
            (lambda: held.renew(math.nan), "ttl"),
            (lambda: portlease.Allocator(registry).renew(held.port, math.nan), "ttl"),
            (lambda: aidb.CrossProcessPortAllocator(registry / "aidb", lease_timeout=math.nan).allocate(
                range_start=R[0], range_size=10), "lease_timeout"),
        ]:
            with pytest.raises(portlease.InvalidRequest, match=f"{what} {seconds}"):
                call()


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "LocalHost"])
def test_localhost_is_read_in_any_case_by_every_front_end(registry: pathlib.Path, host: str, fresh_aidb: object) -> None:
    with portlease.Allocator(registry).allocate(ranges=R, host=host) as held:
        assert R[0] <= held.port <= R[1]
    allocator = aidb.CrossProcessPortAllocator(registry / "aidb")
    port = allocator.allocate(range_start=14210, range_size=10, host=host)
    assert 14210 <= port <= 14219
    allocator.release(port)


def test_ranges_as_text_take_several_joined_by_commas(registry: pathlib.Path) -> None:
    with portlease.Allocator(registry).allocate(ranges="14220-14221, 14230-14231", count=4) as held:
        assert sorted(held.ports) == [14220, 14221, 14230, 14231]
    with pytest.raises(portlease.InvalidRequest, match="runs backwards"):
        portlease.Allocator(registry).allocate(ranges=(14231, 14230))


def test_socket_names_are_checked_by_the_librarys_rule(registry: pathlib.Path) -> None:
    with portlease.Allocator(registry).allocate(ranges=R) as held:
        for names in (["a:b"], ["a", "b"], ["x=y"], "web", [5]):
            with pytest.raises(portlease.InvalidRequest):
                held.popen([sys.executable, "-c", "pass"], listen=True, names=names)  # type: ignore[arg-type]
            assert held.held
        assert [i.port for i in portlease.leases(registry)] == [held.port]


def test_the_defaults_are_the_librarys() -> None:
    assert portlease.DEFAULT_LOCK_TIMEOUT == _native.DEFAULT_LOCK_TIMEOUT == 30.0
    assert portlease.DEFAULT_RANGE == (15000, 24999)
    assert (aidb.DEFAULT_REGISTRY_FILE, aidb.DEFAULT_LOCK_FILE) == ("port_registry.json", "port_registry.lock")
    assert (aidb.DEFAULT_PORT_RANGE_START, aidb.DEFAULT_PORT_RANGE_SIZE, aidb.DEFAULT_LEASE_TIMEOUT_S) == (10000, 1000, 300.0)
