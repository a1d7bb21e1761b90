"""Ctrl-C while a call waits: the handler's exception (KeyboardInterrupt) arrives while
another process still holds the registry lock, and nothing is left leased.

Ports 13000-13099.
"""

from __future__ import annotations

import pathlib
import signal
import subprocess
import sys
import textwrap
import time
from typing import Optional

import pytest

import portlease

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

