"""pytest-asyncio's fixture names (unused_tcp_port, unused_udp_port and their
factories), served by portlease with leases, in either plugin order, under -n 4.

Ports 14500-14599.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

import portlease

SUITE = r'''
import json, os, socket

import portlease

def leased(port, protocol):
    """Whether `port` is leased to this (worker) process in the test registry."""
    return any(i.port == port and i.pid == os.getpid() and i.protocol == protocol
               for i in portlease.leases(os.environ["REGISTRY"]))

def record(kind, port):
    with open(os.environ["HOLDS"], "a") as out:
        out.write(json.dumps([kind, port, os.getpid()]) + "\n")

def test_tcp_{n}(unused_tcp_port):
    assert leased(unused_tcp_port, "tcp")
    with socket.socket() as s:
        s.bind(("127.0.0.1", unused_tcp_port))
    record("function", unused_tcp_port)

def test_udp_{n}(unused_udp_port):
    assert leased(unused_udp_port, "udp")
    record("function", unused_udp_port)

def test_factories_{n}(unused_tcp_port_factory, unused_udp_port_factory, unused_port_factory_session):
    a, b = unused_tcp_port_factory(), unused_tcp_port_factory()
    c = unused_udp_port_factory()
    d = unused_port_factory_session(protocol="both")
    assert len({a, b, c, d}) == 4
    assert leased(a, "tcp") and leased(b, "tcp") and leased(c, "udp") and leased(d, "both")
    for port in (a, b, c, d):
        record("session", port)
'''


@pytest.mark.parametrize("order", [["-p", "portlease", "-p", "asyncio"], ["-p", "asyncio", "-p", "portlease"]],
                         ids=["portlease-first", "asyncio-first"])
def test_pytest_asyncios_names_give_leased_ports_in_either_plugin_order(
        tmp_path: pathlib.Path, order: list[str]) -> None:
    pytest.importorskip("pytest_asyncio", reason="pytest-asyncio is not installed (python/test.sh installs it)")
    suite = tmp_path / "suite"
    suite.mkdir()
    for n in range(4):
        (suite / f"test_s{n}.py").write_text(SUITE.replace("{n}", str(n)))
    holds_file = tmp_path / "holds.jsonl"
    directory = tmp_path / "registry"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", *order, "-n", "4", "-p", "no:cacheprovider",
         "--portlease-dir", str(directory), "--portlease-range", "14500-14599", str(suite)],
        capture_output=True, text=True, cwd=suite,
        env={**os.environ, "HOLDS": str(holds_file), "REGISTRY": str(directory)},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "12 passed" in run.stdout
    header = [line for line in run.stdout.splitlines() if line.startswith("portlease:")]
    assert len(header) == 1 and "over pytest-asyncio's" in header[0], run.stdout
    holds = [json.loads(line) for line in holds_file.read_text().splitlines()]
    assert all(14500 <= port <= 14599 for _, port, _ in holds)
    # A session factory's ports stay leased in its worker: never given out twice there.
    session = [(port, pid) for kind, port, pid in holds if kind == "session"]
    assert len(session) == len(set(session)) == 16
    assert portlease.leases(directory) == [], "every port was released at the end of its scope"
