#!/usr/bin/env bash
# The main job: builds kiln, makes a busybox base image, builds the example project with
# kiln and runs the image it built. Needs root (namespaces, overlayfs); uses a store under
# target/ unless KILN_ROOT is set.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --quiet
kiln=./target/release/kiln
export KILN_ROOT=${KILN_ROOT:-$PWD/target/demo-root}
bash scripts/busybox-rootfs.sh target/busybox-rootfs.tar
$kiln image import target/busybox-rootfs.tar busybox:local
$kiln build --check examples/hello
$kiln build --progress=plain -t hello:latest examples/hello
$kiln images
echo "--- running the image: cat /www/index.html"
$kiln debug run-step --image hello:latest -- cat /www/index.html
