"""Type stubs and annotations cover the API: `mypy --strict` accepts an example that uses
all of it, and the package itself."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

import portlease

HERE = pathlib.Path(__file__).resolve().parent


def mypy(*targets: str) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("mypy")
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", *targets],
                          capture_output=True, text=True, cwd=HERE)


def test_mypy_strict_accepts_an_example_using_the_whole_api() -> None:
    run = mypy(str(HERE / "typing_example.py"))
    assert run.returncode == 0, run.stdout + run.stderr


def test_mypy_strict_catches_a_misuse(tmp_path: pathlib.Path) -> None:
    wrong = tmp_path / "wrong.py"
    wrong.write_text("import portlease\nport: str = portlease.lease(protocol='sctp').port\n")
    run = mypy(str(wrong))
    assert run.returncode == 1
    assert "protocol" in run.stdout and "incompatible types in assignment" in run.stdout.lower()


def test_every_public_name_has_a_docstring() -> None:
    from portlease import aidb

    for module in (portlease, aidb):
        for name in module.__all__:
            value = getattr(module, name)
            if callable(value):
                assert (value.__doc__ or "").strip(), f"{module.__name__}.{name}"
                for attribute, member in vars(value).items() if isinstance(value, type) else []:
                    if not attribute.startswith("_") and callable(member):
                        assert (member.__doc__ or "").strip(), f"{module.__name__}.{name}.{attribute}"


def test_mypy_strict_accepts_the_package_itself() -> None:
    run = mypy("-p", "portlease")
    assert run.returncode == 0, run.stdout + run.stderr
