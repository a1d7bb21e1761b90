#!/usr/bin/env bash
# The Python package's tests: a fresh virtual environment under target/, the tools from
# the Python package index (maturin, pytest, pytest-xdist, pytest-asyncio, mypy,
# portpicker; uvicorn and gunicorn for the servers Lease.popen is tried with), the wheel
# built by maturin and installed there, then pytest on python/tests. Extra arguments go
# to pytest; $PYTHON names the interpreter (default python3). $PORTLEASE_WHEEL names a
# wheel built already (python/build-wheels.sh): it is installed instead, and nothing is
# built.
#
# The tests run in a private network namespace when this user can make one (root), so
# that other test runs on the machine cannot collide with them on ports.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
venv="$root/target/python-venv"
wheels="$root/target/python-wheels"

rm -rf "$venv" "$wheels"
"${PYTHON:-python3}" -m venv "$venv" || {
    echo "python/test.sh: cannot make a virtual environment with ${PYTHON:-python3}; install its venv module (Debian: apt-get install python3-venv)" >&2
    exit 1
}
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
if [ -n "${PORTLEASE_WHEEL:-}" ]; then
    [ -f "$PORTLEASE_WHEEL" ] || {
        echo "python/test.sh: PORTLEASE_WHEEL=$PORTLEASE_WHEEL is no file; build one with python/build-wheels.sh DIR, or unset it to build here" >&2
        exit 1
    }
    wheel="$(cd "$(dirname "$PORTLEASE_WHEEL")" && pwd)/$(basename "$PORTLEASE_WHEEL")"
    "${pip[@]}" pytest pytest-xdist pytest-asyncio mypy portpicker uvicorn gunicorn
else
    "${pip[@]}" maturin pytest pytest-xdist pytest-asyncio mypy portpicker uvicorn gunicorn
    # With the library's test stop points, which the release wheel lacks.
    "$venv/bin/maturin" build --quiet --release --features test-hooks \
        --manifest-path "$here/Cargo.toml" --out "$wheels"
    wheel="$(echo "$wheels"/portlease-*.whl)"
fi
"${pip[@]}" "$wheel"

# Nothing a test does may touch the user's real registry.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export PORTLEASE_DIR="$scratch/default-registry"
export PATH="$venv/bin:$PATH"

# From elsewhere than python/, so that the installed package is tested, not the sources.
cd "$scratch"
# The native module's stubs say what the built module has.
"$venv/bin/python" -m mypy.stubtest portlease._native
run=(pytest -p no:cacheprovider --rootdir "$here" "$here/tests" "$@")
if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
    unshare -n -- sh -c 'ip link set lo up && exec "$@"' sh "${run[@]}"
else
    "${run[@]}"
fi
