#!/usr/bin/env bash
# Set-up shared by the README's two commands: create .venv, install the project with the extras the
# local stack and the tests need, install espeak-ng (test speech) when missing, and fill MODEL_DIR
# (default .models/) with the dev models. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi

stamp=".venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "==> installing serverless-embeddings[cpu,gpu,dev] (torch is large: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip setuptools wheel
  .venv/bin/python -m pip install -q -e ".[cpu,gpu,dev]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi

if ! command -v espeak-ng >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing espeak-ng (speech for test media)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null
  else
    echo "!! espeak-ng is missing: install it (e.g. 'sudo apt-get install espeak-ng') for the speech tests" >&2
  fi
fi

echo "==> filling ${MODEL_DIR:-.models} with the dev models"
.venv/bin/se setup-models
