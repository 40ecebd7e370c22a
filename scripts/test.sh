#!/usr/bin/env bash
# Sets up everything from scratch (a venv in .venv, the Python test dependencies, the
# package built by maturin) and runs every check: rustfmt, clippy, cargo test, ruff, pytest,
# and mypy's stubtest of the hand-written stub python/oxiquant/_native.pyi.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${OXIQUANT_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "maturin>=1.7,<2" "ruff>=0.5"
echo "== build and install (maturin, release)"
python -m pip install --quiet ".[test]"
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --workspace --quiet
echo "== ruff"
ruff check python tests benches
echo "== pytest"
# Run from tests/ against the installed wheel, not the source tree.
python -m pytest -q
echo "== stubtest"
# The installed stub against the compiled module (names, signatures, defaults); run from
# outside the source tree so that mypy reads the installed package.
(cd "${TMPDIR:-/tmp}" && python -m mypy.stubtest oxiquant._native)
