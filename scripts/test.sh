#!/usr/bin/env bash
# The README's test command (and all that CI runs): installs what the tests need, starts
# dockerd if needed, checks formatting and lints, then runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/start-dockerd.sh
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
