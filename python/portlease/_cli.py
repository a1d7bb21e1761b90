"""The ``portlease`` console script: runs the Rust command line of this package."""

from __future__ import annotations

import signal
import sys

from portlease import _native


def main() -> None:
    """Run ``portlease`` with this process's arguments and exit with its exit code."""
    # The command handles signals as the native binary does: Python's own handlers
    # would only run once the command returns (``portlease serve`` never does).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.exit(_native.run_cli(["portlease", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
