#!/usr/bin/env bash
# The README's main command: set up (idempotent), then run the main job on the local machine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/se demo "$@"
