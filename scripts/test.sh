#!/usr/bin/env bash
# Installs what the tests need, starts dockerd if needed, then runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/start-dockerd.sh
cargo test --all-targets
