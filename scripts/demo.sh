#!/usr/bin/env bash
# Sets up a venv in .venv, installs oxiquant (built by maturin) and runs `oxiquant demo`: the
# bundled digits CNN quantized to 8 and 4 bits, accuracy table and per-layer report. onnxruntime
# is installed too, so that the demo can run the QDQ export it writes.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${OXIQUANT_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet . "onnxruntime>=1.17"
oxiquant demo "$@"
