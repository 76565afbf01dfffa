#!/usr/bin/env bash
# Tests of deploy/ (the Helm chart) and the Dockerfile: renders, lints and validates the chart
# with no cluster and no helm binary, lints the Dockerfile, then runs the real binaries with
# the rendered pods' environment against the local Postgres. See deploy/test/test_deploy.py.
#
#   scripts/test-deploy.sh                  # binaries from target/debug (cargo build --bins)
#   GATEHOUSE_BIN_DIR=target/release scripts/test-deploy.sh
#   GATEHOUSE_DEPLOY_SKIP_BINARIES=1 scripts/test-deploy.sh   # chart and Dockerfile only
#
# DEPLOY_VENV picks the virtualenv (default /tmp/gatehouse-deploy-venv); it is made if missing
# and brought to deploy/test/requirements.txt from PyPI. GATEHOUSE_TEST_POSTGRES names the
# Postgres to make throwaway databases in (default postgres://postgres@127.0.0.1:5432/postgres).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${DEPLOY_VENV:-/tmp/gatehouse-deploy-venv}"
python="${PYTHON:-python3}"
requirements=deploy/test/requirements.txt

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
# Reinstall only when the requirements changed since the last install into this venv.
stamp="$venv/.gatehouse-requirements"
if ! cmp -s "$requirements" "$stamp" 2>/dev/null; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
fi

exec "$venv/bin/python" deploy/test/test_deploy.py "$@"
