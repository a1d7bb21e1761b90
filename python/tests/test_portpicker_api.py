"""portpicker's whole API under `import portlease as portpicker`: the reuse rule
(returned portserver ports and reserved ports are handed out again before a new one
is asked for), add_reserved_port, bind, get_port_from_port_server and the CapWords names.

Ports 13900-13999.
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
from typing import Iterator

import pytest

import portlease
from conftest import needs_serve, wait_listening
import portlease as portpicker

POOL = "13900-13949"


@pytest.fixture
def clean_pools() -> Iterator[None]:
    """This process's portpicker pools, empty before and after the test."""
    for pool in (portpicker._free_ports, portpicker._owned_ports, portpicker._random_ports):
        pool.clear()
    yield
    for pool in (portpicker._free_ports, portpicker._owned_ports, portpicker._random_ports):
        pool.clear()


@pytest.fixture
def portserver(tmp_path: pathlib.Path) -> Iterator[tuple[str, pathlib.Path]]:
    """`portlease serve` on a 50-port pool: its address and its registry directory."""
    address = f"@portlease-test-pp-{os.getpid()}"
    served = tmp_path / "served"
    server = subprocess.Popen(["portlease", "--dir", str(served), "serve", "--address", address,
                               "--pool", POOL], stderr=subprocess.DEVNULL)
    try:
        wait_listening(address, server)
        yield address, served
    finally:
        server.terminate()
        server.wait()


@needs_serve
def test_a_returned_portserver_port_is_reused_by_the_next_pick(
        portserver: tuple[str, pathlib.Path], clean_pools: None, tmp_path: pathlib.Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    address, served = portserver
    monkeypatch.setenv("PORTLEASE_DIR", str(tmp_path / "default"))
    seen = set()
    for _ in range(200):  # four times the pool: without reuse, the pool runs dry
        port = portpicker.pick_unused_port(portserver_address=address)
        seen.add(port)
        portpicker.return_port(port)
    assert len(seen) == 1
    # Still leased to this process while it keeps it in its pool, as with portpicker.
    assert [(i.port, i.pid) for i in portlease.leases(served)] == [(seen.pop(), os.getpid())]
    assert not (tmp_path / "default").exists(), "the portserver answered: the registry was not used"


@needs_serve
def test_get_port_from_port_server_gives_a_port_or_none(
        portserver: tuple[str, pathlib.Path], clean_pools: None) -> None:
    address, served = portserver
    port = portpicker.get_port_from_port_server(address)
    assert port is not None and 13900 <= port <= 13949
    assert [(i.port, i.pid) for i in portlease.leases(served)] == [(port, os.getpid())]
    portpicker.return_port(port)
    assert portpicker.pick_unused_port() == port, "a returned portserver port is this process's to reuse"
    assert portpicker.get_port_from_port_server(f"@portlease-test-nobody-{os.getpid()}") is None
    assert portpicker.get_port_from_port_server("") is None
    assert portpicker.GetPortFromPortServer is portpicker.get_port_from_port_server


def test_a_reserved_port_is_handed_out_again_until_kept(
        clean_pools: None, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTLEASE_DIR", str(tmp_path / "default"))
    monkeypatch.delenv("PORTSERVER_ADDRESS", raising=False)
    portpicker.add_reserved_port(13960)
    for _ in range(3):
        assert portpicker.pick_unused_port() == 13960
        portpicker.return_port(13960)
    assert portpicker.pick_unused_port() == 13960
    other = portpicker.pick_unused_port()  # the pool is empty: a registry lease
    assert other != 13960
    assert [(i.port, i.pid) for i in portlease.leases()] == [(other, os.getpid())]
    portpicker.return_port(other)  # a registry port's lease ends; it is not pooled
    assert portlease.leases() == []
    assert other not in portpicker._free_ports
    with pytest.raises(portlease.InvalidRequest, match="port must be a port number"):
        portpicker.add_reserved_port(70000)


def test_bind_says_whether_a_port_binds() -> None:
    assert portpicker.bind(13970, socket.SOCK_STREAM, socket.IPPROTO_TCP) == 13970
    assert portpicker.bind(13970, socket.SOCK_DGRAM, socket.IPPROTO_UDP) == 13970
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 13970))
        holder.listen()
        assert portpicker.bind(13970, socket.SOCK_STREAM, socket.IPPROTO_TCP) is None
        assert not portpicker.is_port_free(13970)
    chosen = portpicker.bind(0, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    assert chosen is not None and chosen > 0


def test_the_names_are_portpickers() -> None:
    names = ("bind", "is_port_free", "pick_unused_port", "return_port", "add_reserved_port",
             "get_port_from_port_server")
    for name in names:
        assert callable(getattr(portpicker, name)), name
        assert name in portlease.__all__, name
    assert (portpicker.Bind, portpicker.IsPortFree, portpicker.PickUnusedPort, portpicker.GetPortFromPortServer) == (
        portpicker.bind, portpicker.is_port_free, portpicker.pick_unused_port, portpicker.get_port_from_port_server)
    assert issubclass(portpicker.NoFreePortFoundError, portlease.Exhausted)
