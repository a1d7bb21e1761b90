#!/usr/bin/env bash
# Builds the Python package for release into DIR (default: dist/ at the top of the
# repository): one abi3 wheel (CPython 3.9+) and the sdist. The wheel is for TARGET, a
# Rust Linux target (default: this machine's, glibc): tagged manylinux2014 (glibc 2.17)
# for a -gnu target, musllinux_1_2 for a -musl one.
#
# The wheel is built with the `dist` profile (LTO, stripped) and linked by maturin's zig
# linker against glibc 2.17's symbols (or musl), so it runs on any Linux of the last
# decade whatever this machine has. maturin and zig (the `ziglang` package) come from
# the Python package index, into a virtual environment under target/ (kept between
# runs); $PYTHON names the interpreter that makes it (default python3).
#
#   python/build-wheels.sh [DIR [TARGET]]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
out="${1:-$root/dist}"
tools="$root/target/wheel-tools"

if [ -n "${2:-}" ]; then
    target="$2"
else
    case "$(uname -s)/$(uname -m)" in
        Linux/x86_64) target=x86_64-unknown-linux-gnu ;;
        Linux/aarch64) target=aarch64-unknown-linux-gnu ;;
        *)
            echo "build-wheels.sh: builds on Linux x86_64 or aarch64, not $(uname -s)/$(uname -m); the release workflow (.github/workflows/release.yml) builds macOS's wheels" >&2
            exit 1
            ;;
    esac
fi
case "$target" in
    *-linux-gnu) compatibility=manylinux2014 ;;
    *-linux-musl) compatibility=musllinux_1_2 ;;
    *)
        echo "build-wheels.sh: TARGET must be a Linux target (x86_64-unknown-linux-gnu, aarch64-unknown-linux-musl, ...), not $target" >&2
        exit 1
        ;;
esac
command -v cargo >/dev/null || {
    echo "build-wheels.sh: cargo is not on PATH; install Rust (rustup)" >&2
    exit 1
}
if ! rustc -vV | grep -qx "host: $target" && ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    echo "build-wheels.sh: Rust's standard library for $target is not installed; install it with: rustup target add $target" >&2
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
    --target "$target" --compatibility "$compatibility" --out "$out"
maturin sdist --manifest-path "$here/Cargo.toml" --out "$out"
ls -l "$out"/portlease-*
