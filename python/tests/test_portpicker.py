"""portpicker's calls: pick_unused_port and return_port, and `import portlease as portpicker`.

Ports 12300-12399.
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

import pytest

import portlease
from conftest import needs_serve, wait_listening
import portlease as portpicker

R = (12300, 12349)


def test_a_picked_port_is_free_for_tcp_and_udp_and_leased_to_the_caller(registry: pathlib.Path) -> None:
    port = portpicker.pick_unused_port(ranges=R, dir=registry)
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", port))
    [info] = portlease.leases(registry)
    assert (info.port, info.pid, info.protocol, info.ttl_secs, info.owned_by_process) == (
        port, os.getpid(), "both", None, True)
    portpicker.return_port(port)
    assert portlease.leases(registry) == []
    portpicker.return_port(port)  # twice: nothing to do


def test_a_port_picked_for_another_process_ends_with_it(registry: pathlib.Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    port = portpicker.pick_unused_port(pid=child.pid, ranges=R, dir=registry)
    assert [(i.port, i.pid, i.stale) for i in portlease.leases(registry)] == [(port, child.pid, False)]
    assert child.stdin is not None
    child.stdin.close()
    child.wait()
    assert [(i.port, i.stale) for i in portlease.leases(registry)] == [(port, True)]
    with pytest.raises(portlease.NoSuchProcess):
        portpicker.pick_unused_port(pid=child.pid, ranges=R, dir=registry)


@needs_serve
def test_a_portserver_is_asked_when_its_address_is_given(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTLEASE_DIR", str(tmp_path / "default"))
    address = f"@portlease-test-{os.getpid()}"
    server = subprocess.Popen(["portlease", "--dir", str(tmp_path / "served"), "serve", "--address", address,
                               "--pool", "12380-12389"], stderr=subprocess.DEVNULL)
    try:
        wait_listening(address, server)
        port = portpicker.pick_unused_port(portserver_address=address, ranges=(12390, 12399))
        assert 12380 <= port <= 12389
        assert [(i.port, i.pid, i.source) for i in portlease.leases(tmp_path / "served")] == [(port, os.getpid(), "serve")]
        assert not (tmp_path / "default").exists(), "the portserver answered: the registry was not used"
    finally:
        server.terminate()
        server.wait()


def test_without_a_portserver_answering_the_registry_is_used(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTLEASE_DIR", str(tmp_path / "default"))
    monkeypatch.setenv("PORTSERVER_ADDRESS", f"@portlease-test-nobody-{os.getpid()}")
    port = portpicker.pick_unused_port(ranges=(12350, 12359))
    assert [(i.port, i.pid) for i in portlease.leases()] == [(port, os.getpid())]
    portpicker.return_port(port)


def test_is_port_free_sees_tcp_and_udp_holders() -> None:
    assert portpicker.is_port_free(12360)
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as holder:
            holder.bind(("127.0.0.1", 12360))
            assert not portpicker.is_port_free(12360)
    with pytest.raises(portlease.InvalidRequest):
        portpicker.is_port_free(0)


def test_the_names_suites_use_are_there() -> None:
    for name in ("pick_unused_port", "return_port", "is_port_free"):
        assert callable(getattr(portpicker, name))
