"""The pytest plugin (entry point ``pytest11``): fixtures that lease ports.

- ``unused_port``: a TCP port leased to the test process, released at teardown.
- ``unused_udp_port``: the same for UDP.
- ``unused_port_factory``: call it for more ports, with the options of
  ``portlease.Allocator.allocate`` (``preferred``, ``protocol``, ``exclude``, ...);
  every port it gave is released at teardown.
- ``unused_port_factory_session``: the same, session-scoped: its ports stay leased to
  the worker process until the session ends.
- pytest-asyncio's names, leased: ``unused_tcp_port`` and ``unused_udp_port``
  (function scope), ``unused_tcp_port_factory`` and ``unused_udp_port_factory``
  (session scope: each port leased to the worker process until the session ends).
  With pytest-asyncio installed too, these are the ones tests get, in either plugin
  order: they are registered in ``pytest_configure``, after every plugin loaded at
  start-up, and pytest gives a name to the fixture registered last. The header says so.

Options: ``--portlease-dir DIR`` (ini ``portlease_dir``; default ``$PORTLEASE_DIR``,
else the default directory) and ``--portlease-range START-END[,START-END...]`` (ini
``portlease_range``; default ``$PORTLEASE_RANGE``, else 15000-24999). Safe under ``pytest -n N``: every worker
leases from the same registry, so no per-worker ranges are needed.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator, List, Optional, Union

import pytest

from portlease._api import DEFAULT_RANGE, Allocator, Lease, default_dir

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
        help="ports the fixtures lease from (default $PORTLEASE_RANGE, else 15000-24999)",
    )
    parser.addini("portlease_dir", "registry directory for the port fixtures", default="")
    parser.addini("portlease_range", "ports the fixtures lease from, START-END[,START-END]", default="")


def _setting(config: pytest.Config, name: str) -> Optional[str]:
    value = config.getoption(f"--portlease-{name}") or config.getini(f"portlease_{name}")
    return str(value) if value else None


def _ranges(config: pytest.Config) -> Optional[str]:
    # As written: ``Allocator.allocate`` reads START-END[,START-END] text itself.
    text = _setting(config, "range")
    return text.strip() if text is not None else None


class _Leaser:
    """Leases ports for a fixture and releases them all at its end."""

    def __init__(self, allocator: Allocator, ranges: Optional[str]) -> None:
        self.allocator = allocator
        self.ranges = ranges
        self.held: List[Lease] = []

    def take(self, **options: Any) -> int:
        options.setdefault("ranges", self.ranges)
        options.setdefault("ttl", None)
        options.setdefault("label", "pytest")
        lease = self.allocator.allocate(**options)
        self.held.append(lease)
        return lease.port

    def release_all(self) -> None:
        for lease in self.held:
            if lease.held and not lease.kept:
                lease.release()
        self.held.clear()


@pytest.fixture(scope="session")
def portlease_allocator(pytestconfig: pytest.Config) -> Allocator:
    """The Allocator the port fixtures use (``--portlease-dir``, else the default)."""
    return Allocator(_setting(pytestconfig, "dir"))


@pytest.fixture
def unused_port_factory(portlease_allocator: Allocator, pytestconfig: pytest.Config) -> Iterator[PortFactory]:
    """A function that leases one more port each call, with the options of
    ``Allocator.allocate`` (``ranges`` defaults to ``--portlease-range``); the
    ports are leased to the test process and released at teardown."""
    leaser = _Leaser(portlease_allocator, _ranges(pytestconfig))
    yield leaser.take
    leaser.release_all()


@pytest.fixture(scope="session")
def unused_port_factory_session(portlease_allocator: Allocator, pytestconfig: pytest.Config) -> Iterator[PortFactory]:
    """``unused_port_factory`` for the whole session: its ports stay leased to the
    (worker) process until the session ends."""
    leaser = _Leaser(portlease_allocator, _ranges(pytestconfig))
    yield leaser.take
    leaser.release_all()


@pytest.fixture
def unused_port(unused_port_factory: PortFactory) -> int:
    """A TCP port leased to the test process, released at teardown."""
    return unused_port_factory()


class _SharedNames:
    """The fixtures whose names pytest-asyncio defines too, registered as a plugin of
    their own in ``pytest_configure`` so that they come after pytest-asyncio's
    (pytest resolves a name to the fixture registered last)."""

    @pytest.fixture
    def unused_udp_port(self, unused_port_factory: PortFactory) -> int:
        """A UDP port leased to the test process, released at teardown."""
        return unused_port_factory(protocol="udp")

    @pytest.fixture
    def unused_tcp_port(self, unused_port_factory: PortFactory) -> int:
        """A TCP port leased to the test process, released at teardown
        (pytest-asyncio's name for ``unused_port``)."""
        return unused_port_factory()

    @pytest.fixture(scope="session")
    def unused_tcp_port_factory(self, unused_port_factory_session: PortFactory) -> PortFactory:
        """A function giving a new TCP port each call, leased to the (worker) process
        until the session ends (pytest-asyncio's name)."""
        return unused_port_factory_session

    @pytest.fixture(scope="session")
    def unused_udp_port_factory(self, unused_port_factory_session: PortFactory) -> PortFactory:
        """A function giving a new UDP port each call, leased to the (worker) process
        until the session ends (pytest-asyncio's name)."""

        def factory(**options: Any) -> int:
            options.setdefault("protocol", "udp")
            return unused_port_factory_session(**options)

        return factory


_SHARED_NAMES_PLUGIN = "portlease-shared-fixture-names"


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """Registers the fixtures pytest-asyncio names too, after every plugin loaded so far."""
    if not config.pluginmanager.has_plugin(_SHARED_NAMES_PLUGIN):
        config.pluginmanager.register(_SharedNames(), _SHARED_NAMES_PLUGIN)


def pytest_report_header(config: pytest.Config) -> Union[str, List[str]]:
    """One line: which registry and ports the fixtures lease, and whose names they serve."""
    directory = _setting(config, "dir") or default_dir()
    default = os.environ.get("PORTLEASE_RANGE", "").strip() or "{}-{}".format(*DEFAULT_RANGE)
    ranges = _ranges(config) or default
    asyncio = any(config.pluginmanager.has_plugin(name) for name in ("asyncio", "pytest_asyncio.plugin"))
    over = ", over pytest-asyncio's" if asyncio else ""
    return (
        f"portlease: unused_port, unused_tcp_port, unused_udp_port and their factories lease "
        f"ports {ranges} in {directory}{over}"
    )
