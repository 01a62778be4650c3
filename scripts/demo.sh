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
echo "--- running the image: kiln run --rm hello:latest cat /www/index.html"
$kiln run --rm hello:latest cat /www/index.html
echo "--- serving it: kiln run -d --name hello-web -p 127.0.0.1:18080:8080 hello:latest"
$kiln rm -f hello-web >/dev/null 2>&1 || true
$kiln run -d --name hello-web -p 127.0.0.1:18080:8080 hello:latest
trap '$kiln rm -f hello-web >/dev/null 2>&1 || true' EXIT
$kiln ps
for _ in $(seq 50); do
    if page=$(exec 3<>/dev/tcp/127.0.0.1/18080 && printf 'GET / HTTP/1.0\r\n\r\n' >&3 && cat <&3); then
        break
    fi
    sleep 0.1
done
printf '%s\n' "$page" | tail -n 3
$kiln exec hello-web ps
$kiln stop -t 1 hello-web
$kiln ps -a --filter name=hello-web
