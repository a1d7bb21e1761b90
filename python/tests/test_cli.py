"""The `portlease` console script runs the Rust command line.

Ports 12900-12999.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import portlease


def test_the_console_script_is_the_rust_command(registry: pathlib.Path) -> None:
    assert shutil.which("portlease")
    version = subprocess.run(["portlease", "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("portlease ")
    alloc = subprocess.run(["portlease", "--dir", str(registry), "alloc", "--range", "12900-12909",
                            "--label", "cli", "--json"], capture_output=True, text=True, check=True)
    port = json.loads(alloc.stdout)["ports"][0]
    listed = json.loads(subprocess.run(["portlease", "--dir", str(registry), "list", "--json"],
                                       capture_output=True, text=True, check=True).stdout)
    ours = portlease.leases(registry)
    assert [item["port"] for item in listed] == [info.port for info in ours] == [port]
    assert ours[0].label == listed[0]["label"] == "cli" and ours[0].source == "cli"


def test_errors_and_exit_codes_are_the_commands(registry: pathlib.Path) -> None:
    bad = subprocess.run(["portlease", "--dir", str(registry), "alloc", "--range", "12999-12900"],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.startswith("portlease: error: ") and len(bad.stderr.strip().splitlines()) == 1


def test_a_usage_error_points_at_the_help_of_the_subcommand_it_was_given() -> None:
    """run_cli's own arguments are judged, not the Python process's (here `python -c`)."""
    code = "import sys; from portlease import _native; sys.exit(_native.run_cli(['portlease', 'alloc', '--bogus']))"
    bad = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "(see `portlease alloc --help`)" in bad.stderr, bad.stderr
