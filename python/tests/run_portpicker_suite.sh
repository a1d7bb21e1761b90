#!/usr/bin/env bash
# portpicker's own test file (src/tests/portpicker_test.py of its sdist) run with
# portlease in portpicker's place: a conftest sets sys.modules["portpicker"] = portlease
# before the file imports it. Runs against the portlease installed in the virtual
# environment python/test.sh makes (target/python-venv; $PORTLEASE_VENV to choose
# another). Downloads nothing: .ci/run fetches the sdist and passes the file.
#
#   bash python/tests/run_portpicker_suite.sh path/to/portpicker_test.py [pytest args]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$(dirname "$here")")"
venv="${PORTLEASE_VENV:-$root/target/python-venv}"
test_file="${1:?usage: run_portpicker_suite.sh PATH/TO/portpicker_test.py [pytest args]}"
shift
if [ ! -f "$test_file" ]; then
    echo "run_portpicker_suite.sh: no file $test_file; get it with: pip download --no-deps --no-binary :all: portpicker==1.6.0 (src/tests/portpicker_test.py in the sdist)" >&2
    exit 1
fi
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import portlease' 2>/dev/null; then
    echo "run_portpicker_suite.sh: no portlease installed in $venv; run bash python/test.sh first" >&2
    exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$test_file" "$work/portpicker_test.py"
cat > "$work/conftest.py" <<'PY'
import sys

import portlease

# The one line a user changes, done for the test file: portlease is portpicker.
sys.modules["portpicker"] = portlease
PY

# portpicker's tests that cannot apply to portlease, by name:
deselect=(
    # They patch portpicker's private _pick_unused_port_without_server (or call it),
    # which portlease does not have: its registry lease takes that helper's place.
    PickUnusedPortTestWithAPortServer::testPickUnusedCanSuccessfullyUsePortServer
    PickUnusedPortTestWithAPortServer::testPickUnusedCanSuccessfullyUsePortServerAddressKwarg
    PickUnusedPortTest::testReturnsReservedPorts
    PickUnusedPortTest::testRandomlyChosenPorts
    PickUnusedPortTest::testOSAssignedPorts
    PickUnusedPortTest::testPickPortsWithoutServer
    # They run `python portpicker.py` (portpicker's command line); portlease's command
    # is `portlease`, a different one.
    PortpickerCommandLineTests
)
args=()
for name in "${deselect[@]}"; do
    args+=(--deselect "portpicker_test.py::$name")
done

# Leases go to a registry of this run's own, and the portserver the tests start
# (portserver.py, installed with portpicker in the venv) is found on PATH.
export PORTLEASE_DIR="$work/registry"
export PATH="$venv/bin:$PATH"
unset PORTSERVER_ADDRESS
cd "$work"
run=("$venv/bin/python" -m pytest -p no:cacheprovider -q -rs "${args[@]}" portpicker_test.py "$@")
# In a private network namespace when this user can make one (as python/test.sh).
if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
    run=(unshare -n -- sh -c 'ip link set lo up && exec "$@"' sh "${run[@]}")
fi
"${run[@]}" | tee "$work/out"
# A skipped test is a test not run: the portserver tests need portserver.py.
if grep -q "skipped" "$work/out"; then
    echo "run_portpicker_suite.sh: tests were skipped (see above); each must run" >&2
    exit 1
fi
