# Sourced by the other scripts: make sure .venv exists and holds qdo (editable) with the
# extras named in QDO_EXTRAS, reinstalling only when pyproject.toml changed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$ROOT/.venv
EXTRAS=${QDO_EXTRAS:-dev}
if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV" >&2
    python3 -m venv "$VENV"
fi
stamp="$VENV/.qdo-installed-$EXTRAS-$(sha1sum "$ROOT/pyproject.toml" | cut -c1-12)"
if [ ! -e "$stamp" ]; then
    echo "[setup] installing qdo[$EXTRAS] into $VENV" >&2
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[$EXTRAS]" \
        2> >(grep -v '^WARNING: Location' >&2)
    touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
