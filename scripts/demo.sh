#!/usr/bin/env bash
# The main job: builds kiln and runs it on the example project.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --quiet
./target/release/kiln build --check examples/hello
./target/release/kiln debug dump-ast examples/hello/Dockerfile
