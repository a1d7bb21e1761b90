"""pick_unused_port with a portserver: a server that answers but refuses (closes without
a port, or answers garbage) raises NoFreePortFoundError; only a server that does not
answer at all (nobody listens) sends the caller to its own registry.

Ports 13300-13399.
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import threading
from typing import Iterator, Optional

import pytest

import portlease
from conftest import needs_serve, wait_listening

POOL = "13300-13309"
OWN = (13350, 13359)


@pytest.fixture
def own_registry(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """The caller's own registry (the default directory), which must stay unused."""
    monkeypatch.setenv("PORTLEASE_DIR", str(tmp_path / "own"))
    monkeypatch.delenv("PORTSERVER_ADDRESS", raising=False)
    return tmp_path / "own"


@needs_serve
def test_a_portserver_over_its_per_user_limit_refuses_and_the_registry_is_not_used(
    tmp_path: pathlib.Path, own_registry: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = f"@portlease-test-fallback-{os.getpid()}"
    server = subprocess.Popen(["portlease", "--dir", str(tmp_path / "served"), "serve", "--address", address,
                               "--pool", POOL, "--max-per-uid", "1"], stderr=subprocess.DEVNULL)
    try:
        wait_listening(address, server)
        first = portlease.pick_unused_port(portserver_address=address, ranges=OWN)
        assert 13300 <= first <= 13309
        with pytest.raises(portlease.NoFreePortFoundError) as refused:
            portlease.pick_unused_port(portserver_address=address, ranges=OWN)
        assert address in str(refused.value)
        assert isinstance(refused.value, portlease.Exhausted)
        assert not own_registry.exists() or portlease.leases(own_registry) == [], \
            "the portserver refused, yet the caller's own registry handed out a port"
        # The same through $PORTSERVER_ADDRESS.
        monkeypatch.setenv("PORTSERVER_ADDRESS", address)
        with pytest.raises(portlease.NoFreePortFoundError):
            portlease.pick_unused_port(ranges=OWN)
        assert not own_registry.exists() or portlease.leases(own_registry) == []
    finally:
        server.terminate()
        server.wait()


class TinyServer:
    """A portserver in a thread that answers each client with `answer` (nothing: it
    closes the connection at once)."""

    def __init__(self, answer: Optional[bytes]) -> None:
        self.address = f"@portlease-test-tiny-{os.getpid()}-{id(self)}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind("\0" + self.address[1:])
        self.sock.listen()
        self.answer = answer
        self.asked: list[bytes] = []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            with client:
                self.asked.append(client.recv(64))
                if self.answer is not None:
                    client.sendall(self.answer)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept
        except OSError:
            pass
        self.sock.close()


@pytest.fixture(params=[None, b"", b"hello\n", b"0\n", b"70000\n", b"-5\n", b"\xff\xfe\n"],
                ids=["closes", "empty", "garbage", "zero", "too-big", "negative", "not-utf8"])
def refusing_server(request: pytest.FixtureRequest) -> Iterator[TinyServer]:
    server = TinyServer(request.param)
    yield server
    server.close()


def test_a_portserver_that_answers_without_a_port_is_a_refusal(
    refusing_server: TinyServer, own_registry: pathlib.Path
) -> None:
    with pytest.raises(portlease.NoFreePortFoundError):
        portlease.pick_unused_port(portserver_address=refusing_server.address, ranges=OWN)
    assert refusing_server.asked == [f"{os.getpid()}\n".encode()]
    assert not own_registry.exists() or portlease.leases(own_registry) == []


def test_with_nobody_listening_the_callers_registry_is_used(own_registry: pathlib.Path, tmp_path: pathlib.Path) -> None:
    for address in (f"@portlease-test-nobody-{os.getpid()}", str(tmp_path / "no-such-socket")):
        port = portlease.pick_unused_port(portserver_address=address, ranges=OWN)
        assert [(i.port, i.pid) for i in portlease.leases(own_registry)] == [(port, os.getpid())]
        portlease.return_port(port)


def test_a_path_that_is_no_socket_is_no_server(own_registry: pathlib.Path, tmp_path: pathlib.Path) -> None:
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(stale))  # bound, never listening, then closed: connection refused
    port = portlease.pick_unused_port(portserver_address=str(stale), ranges=OWN)
    assert [i.port for i in portlease.leases(own_registry)] == [port]
    portlease.return_port(port)


def test_no_free_port_found_error_is_portpickers_name_and_an_exhausted() -> None:
    assert issubclass(portlease.NoFreePortFoundError, portlease.Exhausted)
    assert "NoFreePortFoundError" in portlease.__all__
    assert portlease.NoFreePortFoundError.__module__ == "portlease"
