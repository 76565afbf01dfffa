#!/usr/bin/env bash
# The whole test suite: the workspace's unit and end-to-end tests (real SQLite, Postgres,
# sockets and TLS), then the deployment tests (Helm chart rendered and validated, Dockerfile
# linted, the rendered pods' binaries run; see scripts/test-deploy.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --bins
cargo nextest run --workspace
scripts/test-deploy.sh
