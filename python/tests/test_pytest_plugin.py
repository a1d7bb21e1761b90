"""The pytest plugin: a small suite run with `pytest -n 4` using the fixtures gets every
test its own port, and leaks none.

Ports 12700-12899.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import portlease

SUITE = r'''
import json, os, socket, time

def record(tmp, *ports):
    began = time.monotonic_ns()
    time.sleep(0.02)
    with open(os.environ["HOLDS"], "a") as out:
        for port in ports:
            out.write(json.dumps([port, began, time.monotonic_ns(), os.getpid()]) + "\n")

def test_tcp_{n}(unused_port, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", unused_port))
    record(tmp_path, unused_port)

def test_udp_{n}(unused_udp_port, tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", unused_udp_port))
    record(tmp_path, unused_udp_port)

def test_factory_{n}(unused_port_factory, tmp_path):
    a = unused_port_factory()
    b = unused_port_factory(protocol="both", exclude=[a])
    record(tmp_path, a, b)
'''


def test_xdist_workers_each_get_their_own_ports_and_leak_none(tmp_path: pathlib.Path) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    for n in range(6):
        (suite / f"test_s{n}.py").write_text(SUITE.replace("{n}", str(n)))
    (suite / "pytest.ini").write_text("[pytest]\nportlease_range = 12800-12899\n")
    holds_file = tmp_path / "holds.jsonl"
    directory = tmp_path / "registry"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "4", "-q", "-p", "no:cacheprovider",
         "--portlease-dir", str(directory), "--portlease-range", "12700-12749", str(suite)],
        capture_output=True, text=True, env={**__import__("os").environ, "HOLDS": str(holds_file)}, cwd=suite,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "18 passed" in run.stdout
    holds = sorted(json.loads(line) for line in holds_file.read_text().splitlines())
    assert len(holds) == 6 * 4
    assert len({pid for *_, pid in holds}) > 1, "the tests ran in several workers"
    assert all(12700 <= port <= 12749 for port, *_ in holds), "--portlease-range overrides the ini key"
    overlaps = [(a, b) for a, b in zip(holds, holds[1:]) if a[0] == b[0] and b[1] < a[2]]
    assert overlaps == []
    assert portlease.leases(directory) == [], "every fixture released its port"


def test_the_ini_key_sets_the_range(tmp_path: pathlib.Path) -> None:
    (tmp_path / "pytest.ini").write_text(f"[pytest]\nportlease_range = 12850-12859\nportlease_dir = {tmp_path / 'reg'}\n")
    (tmp_path / "test_one.py").write_text("def test_one(unused_port):\n    assert 12850 <= unused_port <= 12859\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "reg" / "port_registry.lock").exists()
