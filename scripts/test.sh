#!/usr/bin/env bash
# The whole test suite: lint, types, unit and end-to-end tests (real zstd/tar/openssl, real PostgreSQL).
set -euo pipefail
source "$(dirname "$0")/env.sh" test
cd "$ROOT"
ruff check kitbuilder tests bench
mypy
python -m pytest "$@"
