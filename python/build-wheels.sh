#!/usr/bin/env bash
# Builds the Python package for release into DIR (default: dist/ at the top of the
# repository): one abi3 wheel (CPython 3.9+) for this machine's Linux architecture,
# tagged manylinux2014 (glibc 2.17), and the sdist.
#
# The wheel is built with the `dist` profile (LTO, stripped) and linked by maturin's zig
# linker against glibc 2.17's symbols, so it runs on any Linux of the last decade
# whatever glibc this machine has. maturin and zig (the `ziglang` package) come from the
# Python package index, into a virtual environment under target/ (kept between runs);
# $PYTHON names the interpreter that makes it (default python3).
#
#   python/build-wheels.sh [DIR]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
out="${1:-$root/dist}"
tools="$root/target/wheel-tools"

case "$(uname -s)/$(uname -m)" in
    Linux/x86_64) target=x86_64-unknown-linux-gnu ;;
    Linux/aarch64) target=aarch64-unknown-linux-gnu ;;
    *)
        echo "build-wheels.sh: builds on Linux x86_64 or aarch64 only, not $(uname -s)/$(uname -m); the release workflow (.github/workflows/release.yml) builds the others" >&2
        exit 1
        ;;
esac
if ! rustup target list --installed 2>/dev/null | grep -qx "$target" && ! rustc -vV | grep -qx "host: $target"; then
    echo "build-wheels.sh: Rust cannot build for $target here; install it with: rustup target add $target" >&2
    exit 1
fi

if [ ! -x "$tools/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$tools" || {
        echo "build-wheels.sh: cannot make a virtual environment with ${PYTHON:-python3}; install its venv module (Debian: apt-get install python3-venv)" >&2
        exit 1
    }
fi
"$tools/bin/python" -m pip install --quiet --disable-pip-version-check "maturin>=1.9,<2" ziglang || {
    echo "build-wheels.sh: cannot install maturin and ziglang into $tools; they come from the Python package index (pip install maturin ziglang)" >&2
    exit 1
}
# maturin finds zig as `python -m ziglang` of the first python on PATH.
export PATH="$tools/bin:$PATH"

mkdir -p "$out"
# Only this build's files in DIR, so that `DIR/portlease-*.whl` names one wheel.
rm -f "$out"/portlease-*.whl "$out"/portlease-*.tar.gz
maturin build --manifest-path "$here/Cargo.toml" --profile dist --zig \
    --target "$target" --compatibility manylinux2014 --out "$out"
maturin sdist --manifest-path "$here/Cargo.toml" --out "$out"
ls -l "$out"/portlease-*
