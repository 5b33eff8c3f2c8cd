#!/usr/bin/env bash
# The README's test command: set up (idempotent), lint, then the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
echo "==> ruff"
.venv/bin/ruff check .
echo "==> pytest"
exec .venv/bin/python -m pytest "$@"
