#!/usr/bin/env bash
# Installs what the tests need, then runs the whole test suite (conformance corpora included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo test --all-targets
