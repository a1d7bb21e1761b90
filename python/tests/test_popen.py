"""Lease.popen (issue 18): the command owns its lease from before it runs; with
listen=True it gets the ports bound, as descriptors 3, 4, ... with LISTEN_* set.
Ports 13800-13899."""

import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

import portlease
from portlease import _native

R = (13800, 13899)

INSPECT = textwrap.dedent(
    """
    import os, socket
    n = int(os.environ["LISTEN_FDS"])
    print(os.environ["LISTEN_PID"] == str(os.getpid()), os.environ["LISTEN_FDNAMES"])
    for fd in range(3, 3 + n):
        s = socket.socket(fileno=fd)
        print(fd, s.type == socket.SOCK_STREAM, s.getsockname()[1])
        s.detach()
    """
)


def test_the_command_owns_the_lease_when_popen_returns(tmp_path):
    allocator = portlease.Allocator(str(tmp_path))
    with allocator.allocate(ranges=[(13800, 13809)]) as lease:
        child = lease.popen(["sleep", "600"])
        try:
            (info,) = allocator.leases()
            assert info.pid == child.pid
            # The trampoline becomes the command, in the same process.
            deadline = time.monotonic() + 60
            while True:
                with open(f"/proc/{child.pid}/comm") as comm:
                    if comm.read().strip() == "sleep":
                        break
                assert time.monotonic() < deadline, "the command never ran"
                time.sleep(0.01)
            (info,) = allocator.leases()
            assert (info.pid, info.owner_alive) == (child.pid, True)
        finally:
            child.kill()
            child.wait()


def test_listen_passes_bound_sockets_with_the_commands_own_pid(tmp_path):
    allocator = portlease.Allocator(str(tmp_path))
    with allocator.allocate(ranges=[(13810, 13819)], count=2) as lease:
        child = lease.popen(
            [sys.executable, "-c", INSPECT], listen=True, names=["web", "admin"],
            stdout=subprocess.PIPE, text=True,
        )
        out, _ = child.communicate()
        assert child.returncode == 0, out
        assert out.splitlines() == [
            "True web:admin",
            f"3 True {lease.ports[0]}",
            f"4 True {lease.ports[1]}",
        ]


def test_a_command_that_cannot_run_raises_and_leaves_the_lease(tmp_path):
    allocator = portlease.Allocator(str(tmp_path))
    with allocator.allocate(ranges=[(13820, 13829)]) as lease:
        with pytest.raises(FileNotFoundError):
            lease.popen(["no-such-command-for-portlease"])
        (info,) = allocator.leases()
        assert info.pid == os.getpid()


PARENT = textwrap.dedent(
    """
    import sys, portlease
    lease = portlease.Allocator(sys.argv[1]).allocate(ranges=[(int(sys.argv[2]), int(sys.argv[2]))])
    lease.popen(["sh", "-c", "echo ran > " + sys.argv[3] + "; exec sleep 600"])
    import time; time.sleep(600)
    """
)


def _stopped(pid):
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(") ", 1)[1].startswith("T")


@pytest.mark.skipif(not _native.TEST_HOOKS, reason="this wheel has no test stop points (a release build): python/test.sh builds one that has")
@pytest.mark.parametrize("step,port", [("forked", 13830), ("handed", 13831)])
def test_a_parent_killed_before_the_go_never_runs_the_command(tmp_path, step, port):
    marker = tmp_path / "ran"
    registry = tmp_path / "registry"
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(registry), str(port), str(marker)],
        env={**os.environ, "PORTLEASE_TEST_STOP_AT": step},
    )
    try:
        deadline = time.monotonic() + 60
        while not _stopped(parent.pid):
            assert parent.poll() is None, "the parent ended without stopping"
            assert time.monotonic() < deadline, "the parent never stopped"
            time.sleep(0.01)
        with open(f"/proc/{parent.pid}/task/{parent.pid}/children") as f:
            (child,) = [int(pid) for pid in f.read().split()]
    finally:
        parent.kill()
        parent.wait()
    # The trampoline reads end-of-file and exits: wait for it to be gone.
    deadline = time.monotonic() + 60
    while True:
        try:
            with open(f"/proc/{child}/stat") as stat:
                # A zombie is gone where owners are known by more than their pid;
                # elsewhere its pid answers kill(pid, 0) until it is reaped.
                if stat.read().rsplit(") ", 1)[1].startswith("Z") and _native.PROCESS_IDENTITY:
                    break
        except FileNotFoundError:
            break
        assert time.monotonic() < deadline, "the trampoline never ended"
        time.sleep(0.01)
    assert not marker.exists(), "the command ran"
    allocator = portlease.Allocator(str(registry))
    allocator.allocate(ranges=[(port, port)], ttl=60).release()


def _has(module):
    try:
        __import__(module)
    except ImportError:
        if os.environ.get("PORTLEASE_REQUIRE_PEERS") == "1":
            raise
        pytest.skip(f"{module} is not installed (pip install {module})")


def test_uvicorn_serves_on_the_passed_socket(tmp_path):
    _has("uvicorn")
    (tmp_path / "asgi_app.py").write_text(
        "async def app(scope, receive, send):\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': b'hello from uvicorn'})\n"
    )
    allocator = portlease.Allocator(str(tmp_path / "registry"))
    with allocator.allocate(ranges=[(13840, 13849)]) as lease:
        server = lease.popen(
            [sys.executable, "-m", "uvicorn", "--fd", "3", "--app-dir", str(tmp_path),
             "--lifespan", "off", "asgi_app:app"],
            listen=True,
        )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{lease.port}/", timeout=120) as answer:
                assert answer.read() == b"hello from uvicorn"
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait()
