#!/usr/bin/env bash
# Starts dockerd in the background when no Docker daemon answers (interop tests need one).
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
if ! command -v dockerd >/dev/null; then
    echo "dockerd not installed; Docker interop tests will say they were skipped" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO sh -c 'nohup dockerd >/var/log/kiln-test-dockerd.log 2>&1 &'
for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then exit 0; fi
    sleep 0.5
done
echo "dockerd did not come up; see /var/log/kiln-test-dockerd.log" >&2
exit 1
