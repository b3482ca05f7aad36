#!/usr/bin/env bash
# README command 2: run the whole test suite (unit + integration against a real Docker Engine,
# real Unix users, a real ds01d under a temporary root). Needs root.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DS01_VENV:-/opt/ds01/venv}"
bash "$REPO/scripts/host-prepare.sh"

# Test users (never in the docker group) and an admin.
getent group ds01-admin >/dev/null || groupadd ds01-admin
for u in ds01-alice ds01-bob ds01-carol; do id "$u" >/dev/null 2>&1 || useradd -m -s /bin/bash "$u"; done
id ds01-adm >/dev/null 2>&1 || useradd -m -s /bin/bash -G ds01-admin ds01-adm

cd "$REPO"
# Layering contracts ([tool.importlinter] in pyproject.toml); a broken one stops the run here.
"$VENV/bin/lint-imports" --no-cache --no-logo
export DS01_BIN="$VENV/bin"
exec "$VENV/bin/python" -m pytest tests -q -p no:cacheprovider "$@"
