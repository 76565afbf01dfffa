#!/usr/bin/env bash
# The whole test suite: the workspace's unit and end-to-end tests (real SQLite, Postgres,
# sockets and TLS); the Admin API against its OpenAPI document (schemathesis, see
# scripts/test-openapi.sh); every fuzz target for a short time (scripts/test-fuzz.sh); then the
# deployment tests (Helm chart rendered and validated, Dockerfile linted, the rendered pods'
# binaries run; see scripts/test-deploy.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --bins
cargo nextest run --workspace
scripts/test-openapi.sh
scripts/test-fuzz.sh
scripts/test-deploy.sh
