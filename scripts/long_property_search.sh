#!/usr/bin/env bash
# The property tests with fresh random draws: hypothesis profile "long" (300 examples per
# test, not derandomized; tests/conftest.py), against the wheel installed in the venv.
# CI runs the same tests on a fixed draw of 25 ("ci"); this is where new cases are hunted.
# Usage: scripts/long_property_search.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${OXIQUANT_VENV:-.venv}"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
mapfile -t FILES < <(grep -l "@given" -r tests --include="test_*.py" | sort)
HYPOTHESIS_PROFILE=long python -m pytest -q -p no:cacheprovider --hypothesis-show-statistics \
    -m "not slow" -k "not test_hostile_input" "${FILES[@]}" "$@"
