"""Shared helpers of the Python tests.

Every test uses ports only from 12000-14999, each file its own block (named in the
file), and registries only in temporary directories.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import socket
import subprocess
import sys
import time
import types
from typing import Iterator

import pytest

from portlease import _native

#: A test of `portlease serve`, which is Linux's alone (a build of other Unix systems'
#: paths, `--cfg portlease_other_unix`, has none: the test is skipped, saying so).
needs_serve = pytest.mark.skipif(not _native.SERVE, reason="this build has no `serve` (it needs Linux's SO_PEERCRED)")
#: A test of the request board, which builds of other Unix systems' paths lack.
needs_board = pytest.mark.skipif(not _native.REQUEST_BOARD, reason="this build has no request board (the paths of other Unix systems)")

REPO = pathlib.Path(__file__).resolve().parents[2]
SEED = (
    pathlib.Path(os.environ["PORTLEASE_TEST_SEED_DIR"])
    if os.environ.get("PORTLEASE_TEST_SEED_DIR")
    else REPO.parent / "shared" / "seed"
) / "port_allocator.py"


def load_seed() -> types.ModuleType:
    """The seed module (AIDB's allocator), from ../shared/seed beside the repository.

    Missing: with PORTLEASE_REQUIRE_PEERS=1 (set by .ci/run) the test fails saying what
    is missing; elsewhere it is skipped. PORTLEASE_TEST_SEED_DIR names another copy's
    directory.
    """
    if not SEED.exists():
        message = (
            f"the seed module {SEED} is missing: the side-by-side tests need AIDB's "
            "port_allocator.py in ../shared/seed beside the repository"
        )
        if os.environ.get("PORTLEASE_REQUIRE_PEERS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    if sys.version_info < (3, 10):
        pytest.skip("the seed module's annotations need Python 3.10 or later")
    spec = importlib.util.spec_from_file_location("seed_port_allocator", SEED)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wait_listening(address: str, server: "subprocess.Popen[bytes]") -> None:
    """Returns once the portserver ``server`` listens on the abstract ``address``."""
    for _ in range(400):
        assert server.poll() is None, "the portserver exited"
        with socket.socket(socket.AF_UNIX) as probe:
            if probe.connect_ex("\0" + address[1:]) == 0:
                return
        time.sleep(0.05)
    pytest.fail(f"the portserver never listened on {address}")


@pytest.fixture
def seed() -> types.ModuleType:
    """The seed module, freshly loaded."""
    return load_seed()


@pytest.fixture
def registry(tmp_path: pathlib.Path) -> pathlib.Path:
    """A registry directory of this test's own (not made yet)."""
    return tmp_path / "registry"


@pytest.fixture
def fresh_aidb() -> Iterator[types.ModuleType]:
    """portlease.aidb with its shared allocator reset before and after the test."""
    from portlease import aidb

    aidb._allocator = None
    yield aidb
    aidb._allocator = None


sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
