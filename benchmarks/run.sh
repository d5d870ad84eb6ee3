#!/usr/bin/env bash
# Run qdo's benchmarks: benchmarks/run.sh [--quick] [--runs N] [--json FILE] [NAME...]
# scripts/venv.sh makes sure .venv exists and holds qdo with the "bench" extra (huey,
# the peer installed from PyPI); run.py does the rest (see its --help).
set -euo pipefail
QDO_EXTRAS=bench
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/venv.sh"
cd "$ROOT"
exec "$VENV/bin/python" benchmarks/run.py "$@"
