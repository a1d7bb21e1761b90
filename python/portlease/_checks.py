"""Checks of the arguments of the public functions, before anything reaches native code.

Each returns the value as native code takes it, or raises InvalidRequest (a ValueError)
saying what was wrong: a boolean where a number is meant, anything but a boolean where a
flag is, a number out of range or text that does not parse. So no OverflowError or bare
ValueError comes out of the conversion to Rust's integer types.
"""

from __future__ import annotations

import math
import os
from typing import Optional

from portlease._errors import InvalidRequest

#: The largest pid Linux can give (pid_t is a signed 32-bit number).
MAX_PID = 2**31 - 1
#: The longest duration accepted, in seconds (about 31 billion years).
MAX_SECONDS = 1e18


def port(value: object, what: str) -> int:
    """A port number, 1-65535."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise InvalidRequest(f"{what} must be a port number from 1 to 65535, not {value!r}")
    return value


def pid(value: object, what: str) -> int:
    """A process id: a positive int that a pid can be."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PID:
        raise InvalidRequest(f"{what} must be a process id (an int from 1 to {MAX_PID}), not {value!r}")
    return value


def seconds(value: object, what: str) -> float:
    """A finite number of seconds, 0 or more."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(f"{what} must be a number of seconds, not {value!r}")
    if not (math.isfinite(value) and 0 <= value <= MAX_SECONDS):
        raise InvalidRequest(f"{what} must be a finite number of seconds from 0 to {MAX_SECONDS:g}, not {value!r}")
    return float(value)


def count(value: object, what: str, most: int) -> int:
    """A whole number from 1 to `most`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{what} must be an int, not {value!r}")
    if not 1 <= value <= most:
        raise InvalidRequest(f"{what} must be from 1 to {most}, not {value!r}")
    return value


def flag(value: object, what: str) -> bool:
    """True or False, nothing else."""
    if not isinstance(value, bool):
        raise InvalidRequest(f"{what} must be True or False, not {value!r}")
    return value


def text(value: object, what: str) -> Optional[str]:
    """A str, or None."""
    if value is not None and not isinstance(value, str):
        raise InvalidRequest(f"{what} must be a str or None, not {value!r}")
    return value


def directory(value: object, what: str = "dir") -> Optional[str]:
    """A path (str or os.PathLike of str), or None."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        if isinstance(path, str) and path and "\0" not in path:
            return path
    raise InvalidRequest(f"{what} must be a directory's path (a str or os.PathLike) or None, not {value!r}")
