"""Ctrl-C while a call waits: the handler's exception (KeyboardInterrupt) arrives while
another process still holds the registry lock, and nothing is left leased; the same
while the call's request waits on the request board, taken by a server.

Ports 13000-13099.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time
from typing import Optional

import pytest

import portlease
from portlease import _native
from conftest import needs_board

R = (13000, 13009)

# What the child does once the lock is held by another process; each waits for the lock
# (lock timeouts longer than the 20 s the test waits) in a different native call.
CALLS = {
    "allocate": "portlease.Allocator(DIR, lock_timeout=600).allocate(ranges=R)",
    "lease": "portlease.lease(ranges=R, dir=DIR)",
    "pick_unused_port": "portlease.pick_unused_port(ranges=R, dir=DIR)",
    "aidb_allocate": "aidb.LOCK_TIMEOUT_S = 600; aidb.CrossProcessPortAllocator(DIR).allocate(range_start=R[0], range_size=10)",
    "leases": "portlease.Allocator(DIR, lock_timeout=600).leases()",
    "renew": "HELD.renew(60)",
    "allocator_release": "portlease.Allocator(DIR, lock_timeout=600).release(HELD.port)",
}

CHILD = textwrap.dedent(
    """
    import os, sys
    import portlease
    from portlease import aidb
    DIR, R = sys.argv[1], (13000, 13009)
    HELD = portlease.Allocator(DIR, lock_timeout=600).allocate(ranges=(13050, 13059)) if "HELD" in sys.argv[2] else None
    print("ready", flush=True)
    sys.stdin.readline()  # the lock is held now
    try:
        exec(sys.argv[2])
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
    except BaseException as e:
        print(type(e).__name__, e, flush=True)
    else:
        print("returned", flush=True)
    os._exit(0)  # leaves HELD to end with this process, without waiting for the lock
    """
)

HOLDER = textwrap.dedent(
    """
    import fcntl, sys
    with open(sys.argv[1], "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        print("locked", flush=True)
        sys.stdin.readline()
    """
)


def _threads(pid: int) -> list[str]:
    names = []
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except OSError:
            pass
    return names


@pytest.mark.parametrize("call", sorted(CALLS))
def test_sigint_while_waiting_for_the_lock_raises_keyboard_interrupt_at_once(registry: pathlib.Path, call: str) -> None:
    portlease.Allocator(registry).leases()  # makes the directory and its lock file
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(registry), CALLS[call]],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin and child.stdout
    holder: Optional[subprocess.Popen[str]] = None
    try:
        assert child.stdout.readline() == "ready\n"
        # Locked only now: the child's own lease (HELD) was taken without waiting.
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(registry / "port_registry.lock")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        child.stdin.write("go\n")
        child.stdin.flush()
        # The child waits inside the native call once its lock-waiting thread runs.
        for _ in range(600):
            if "portlease-lock" in _threads(child.pid):
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"{call}: the child never waited for the lock")
        time.sleep(1)
        child.send_signal(signal.SIGINT)
        # The holder keeps the lock until this test lets go: the child must end first.
        try:
            out, _ = child.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{call}: SIGINT did not interrupt the wait for the lock")
        assert holder.poll() is None, "the holder let go of the lock before the child ended"
        assert out.strip() == "KeyboardInterrupt", out
    finally:
        child.kill()
        child.wait()
        if holder is not None:
            holder.kill()
            holder.wait()
    # Nothing leased behind: only the child's own held lease, which ended with it.
    assert [i.port for i in portlease.leases(registry) if not i.stale] == []



POSTER = textwrap.dedent(
    """
    import os, sys
    import portlease
    allocator = portlease.Allocator(sys.argv[1], lock_timeout=600)
    print("posting", flush=True)
    try:
        held = allocator.allocate(ranges=(13010, 13019))
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
    else:
        print(held.port, flush=True)
        sys.stdin.readline()
    os._exit(0)
    """
)


def _state(pid: int) -> str:
    return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.mark.skipif(not _native.TEST_HOOKS, reason="this wheel has no test stop points (a release build): python/test.sh builds one that has")
@needs_board
def test_sigint_while_the_request_waits_with_a_stopped_server_leases_nothing(registry: pathlib.Path) -> None:
    """The server (the first poster, which gets the lock) stops itself once it has taken
    both requests (PORTLEASE_TEST_STOP_AT=taken) and holds the lock; the second poster,
    waiting on the board, gets SIGINT, withdraws, and the server leaves its request out."""
    portlease.Allocator(registry).leases()
    started: list[subprocess.Popen[str]] = []

    def start(script: str, *args: str, env: Optional[dict[str, str]] = None) -> subprocess.Popen[str]:
        started.append(subprocess.Popen([sys.executable, "-c", script, *args], env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        return started[-1]

    try:
        holder = start(HOLDER, str(registry / "port_registry.lock"))
        assert holder.stdout and holder.stdout.readline() == "locked\n"
        server = start(POSTER, str(registry), env={**os.environ, "PORTLEASE_TEST_STOP_AT": "taken"})
        assert server.stdout and server.stdout.readline() == "posting\n"
        for _ in range(600):  # it waits for the lock for every poster
            if "portlease-lock" in _threads(server.pid):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the first poster never waited for the lock")
        poster = start(POSTER, str(registry))
        assert poster.stdout and poster.stdout.readline() == "posting\n"
        time.sleep(1)  # its request is posted
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait()
        for _ in range(600):
            if _state(server.pid) == "T":
                break
            time.sleep(0.05)
        else:
            pytest.fail("the server never stopped with both requests taken")
        poster.send_signal(signal.SIGINT)
        try:
            out, _ = poster.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail("SIGINT did not interrupt the wait on the request board")
        assert _state(server.pid) == "T", "the server went on before the poster ended"
        assert out.strip() == "KeyboardInterrupt", out
        server.send_signal(signal.SIGCONT)
        served = int(server.stdout.readline())
        assert [i.port for i in portlease.leases(registry)] == [served], "the withdrawn request was left leased"
    finally:
        for process in started:
            process.kill()
            process.wait()
