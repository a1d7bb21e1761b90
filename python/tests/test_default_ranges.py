"""The ranges in force: a preferred port outside them is tried, with a warning, as in
every front end; `$PORTLEASE_RANGE` sets the default ranges of the Python API too.

Ports 13600-13609.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import warnings

import pytest

import portlease


def test_a_preferred_port_outside_the_ranges_warns_and_is_tried(registry: pathlib.Path) -> None:
    allocator = portlease.Allocator(registry)
    with pytest.warns(UserWarning, match="preferred port 13600 is outside the ranges searched"):
        with allocator.allocate(ranges=(13605, 13609), preferred=13600) as held:
            assert held.port == 13600
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none inside the ranges
        with allocator.allocate(ranges=(13600, 13609), preferred=13601) as held:
            assert held.port == 13601


def test_portlease_range_sets_the_python_default(registry: pathlib.Path) -> None:
    script = "import portlease, sys\nwith portlease.lease(dir=sys.argv[1]) as held: print(held.port)"
    env = {**os.environ, "PORTLEASE_RANGE": "13602-13603"}
    printed = subprocess.run([sys.executable, "-c", script, str(registry)], env=env,
                             capture_output=True, text=True, check=True).stdout
    assert int(printed) in (13602, 13603)
    env["PORTLEASE_RANGE"] = "13603-"
    refused = subprocess.run([sys.executable, "-c", script, str(registry)], env=env,
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "PORTLEASE_RANGE" in refused.stderr
    assert "InvalidRequest" in refused.stderr
