"""The pytest plugin (entry point ``pytest11``): fixtures that lease ports.

- ``unused_port``: a TCP port leased to the test process, released at teardown.
- ``unused_udp_port``: the same for UDP.
- ``unused_port_factory``: call it for more ports, with the options of
  ``portlease.Allocator.allocate`` (``preferred``, ``protocol``, ``exclude``, ...);
  every port it gave is released at teardown.

Options: ``--portlease-dir DIR`` (ini ``portlease_dir``; default ``$PORTLEASE_DIR``,
else the default directory) and ``--portlease-range START-END[,START-END...]`` (ini
``portlease_range``; default 10000-10999). Safe under ``pytest -n N``: every worker
leases from the same registry, so no per-worker ranges are needed.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, List, Optional

import pytest

from portlease._api import Allocator, Lease

#: What ``unused_port_factory`` is: options of ``Allocator.allocate`` in, a port out.
PortFactory = Callable[..., int]


def pytest_addoption(parser: pytest.Parser) -> None:
    """Adds ``--portlease-dir`` and ``--portlease-range`` and their ini keys."""
    group = parser.getgroup("portlease", "port leases (portlease)")
    group.addoption(
        "--portlease-dir",
        metavar="DIR",
        default=None,
        help="registry directory for the port fixtures (default: $PORTLEASE_DIR, else the default)",
    )
    group.addoption(
        "--portlease-range",
        metavar="START-END[,START-END]",
        default=None,
        help="ports the fixtures lease from (default 10000-10999)",
    )
    parser.addini("portlease_dir", "registry directory for the port fixtures", default="")
    parser.addini("portlease_range", "ports the fixtures lease from, START-END[,START-END]", default="")


def _setting(config: pytest.Config, name: str) -> Optional[str]:
    value = config.getoption(f"--portlease-{name}") or config.getini(f"portlease_{name}")
    return str(value) if value else None


def _ranges(config: pytest.Config) -> Optional[List[str]]:
    text = _setting(config, "range")
    if text is None:
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


@pytest.fixture(scope="session")
def portlease_allocator(pytestconfig: pytest.Config) -> Allocator:
    """The Allocator the port fixtures use (``--portlease-dir``, else the default)."""
    return Allocator(_setting(pytestconfig, "dir"))


@pytest.fixture
def unused_port_factory(portlease_allocator: Allocator, pytestconfig: pytest.Config) -> Iterator[PortFactory]:
    """A function that leases one more port each call, with the options of
    ``Allocator.allocate`` (``ranges`` defaults to ``--portlease-range``); the
    ports are leased to the test process and released at teardown."""
    held: List[Lease] = []
    default_ranges = _ranges(pytestconfig)

    def factory(**options: Any) -> int:
        options.setdefault("ranges", default_ranges)
        options.setdefault("ttl", None)
        options.setdefault("label", "pytest")
        lease = portlease_allocator.allocate(**options)
        held.append(lease)
        return lease.port

    yield factory
    for lease in held:
        if lease.held and not lease.kept:
            lease.release()


@pytest.fixture
def unused_port(unused_port_factory: PortFactory) -> int:
    """A TCP port leased to the test process, released at teardown."""
    return unused_port_factory()


@pytest.fixture
def unused_udp_port(unused_port_factory: PortFactory) -> int:
    """A UDP port leased to the test process, released at teardown."""
    return unused_port_factory(protocol="udp")
