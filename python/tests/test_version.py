"""One version everywhere: the workspace's Cargo.toml, the installed package's metadata,
``portlease.__version__`` and the ``portlease`` command's ``--version``.

No ports.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys

from packaging.version import Version

import portlease
from conftest import REPO


def workspace_version() -> str:
    """``version`` of ``[workspace.package]`` in the repository's top Cargo.toml."""
    text = (REPO / "Cargo.toml").read_text()
    section = re.search(r"^\[workspace\.package\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S)
    assert section, "Cargo.toml has no [workspace.package]"
    found = re.search(r'^version\s*=\s*"([^"]+)"', section.group(1), re.M)
    assert found, "[workspace.package] in Cargo.toml has no version"
    return found.group(1)


def test_version_is_the_workspaces() -> None:
    assert portlease.__version__ == workspace_version()


def test_the_package_metadata_has_the_same_version() -> None:
    # Cargo spells a pre-release 1.0.0-rc.1, the package metadata 1.0.0rc1: both one version.
    assert Version(importlib.metadata.version("portlease")) == Version(portlease.__version__)


def test_the_command_prints_the_same_version() -> None:
    for command in (["portlease", "--version"], [sys.executable, "-m", "portlease", "--version"]):
        printed = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        assert printed == f"portlease {portlease.__version__}\n", command
