#!/usr/bin/env bash
# Run qdo's benchmarks: benchmarks/run.sh [--quick] [--runs N] [--json FILE] [NAME...]
# scripts/venv.sh makes sure .venv exists and holds qdo with the "bench" extra (huey, dask,
# distributed, numpy and procrastinate: the peers, from PyPI; psycopg for the pg-* ones); run.py does the rest (see its --help).
set -euo pipefail
QDO_EXTRAS=bench
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/venv.sh"
cd "$ROOT"

# GNU parallel is a peer of the "do" benchmark: when it is missing and that benchmark will
# run, install it if we can (root with apt-get); otherwise bench_do skips its row and says so.
runs_do() {
    local skip="" named=""
    for a in "$@"; do
        if [ -n "$skip" ]; then skip=""; continue; fi
        case $a in
            --runs|--json|--scratch) skip=1 ;;
            -*) ;;
            do) return 0 ;;
            *) named=1 ;;
        esac
    done
    [ -z "$named" ]
}
if runs_do "$@" && ! command -v parallel >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "[setup] installing GNU parallel (a peer of the do benchmark) with apt-get" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q parallel >/dev/null \
            || echo "[setup] could not install GNU parallel: the do benchmark skips it" >&2
    else
        echo "[setup] GNU parallel is not installed (apt-get install parallel):" \
            "the do benchmark skips it" >&2
    fi
fi
exec "$VENV/bin/python" benchmarks/run.py "$@"
