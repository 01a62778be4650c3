#!/usr/bin/env bash
# Benchmark of the unprivileged-container mode (a script, never a timed test): scenarios
# S1-S5 of make-scenarios.sh (and S3 on a Debian minbase) built by kiln
#   * on the host as root (namespaces + overlay),
#   * inside `docker run` with Docker's default settings (no --privileged, no --security-opt),
#     where kiln detects the unprivileged mode,
# in the same run, beside Kaniko's figures measured on this kind of machine
# (../shared/bench/README.md). Prints a Markdown table of medians in seconds.
# Usage (as root, dockerd running): bash scripts/bench/unprivileged.sh [RUNS]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-3}
work=$(mktemp -d /var/tmp/kiln-bench-unpriv.XXXXXX)
cleanup() {
    docker rm -f kiln-bench-unpriv >/dev/null 2>&1 || true
    docker rmi -f kiln-bench-debian:local >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
docker info >/dev/null 2>&1 || { echo "unprivileged.sh: dockerd is not running (bash scripts/start-dockerd.sh)" >&2; exit 1; }
cargo build --release --quiet
cp target/release/kiln "$work/kiln"
bash scripts/busybox-rootfs.sh "$work/busybox.tar"
bash scripts/debian-rootfs.sh "$work/debian.tar"
bash scripts/bench/make-scenarios.sh "$work/ctx" >/dev/null
cp scripts/bench/timings.sh "$work/timings.sh"

# The container kiln runs in: the same Debian minbase (glibc for kiln's binary).
docker import "$work/debian.tar" kiln-bench-debian:local >/dev/null

KILN=$work/kiln bash "$work/timings.sh" "$work" "$runs" >"$work/root.txt"
# The store lives on the bind mount: whiteouts cannot be made on the container's own overlay root.
mkdir -p "$work/tmp"
docker run --rm --name kiln-bench-unpriv -v "$work:/bench" -e KILN=/bench/kiln \
    -e TMPDIR=/bench/tmp kiln-bench-debian:local \
    bash /bench/timings.sh /bench "$runs" >"$work/unpriv.txt"
docker run --rm -v "$work:/bench" kiln-bench-debian:local /bench/kiln info \
    | grep -i isolation >&2

# Kaniko in an unprivileged container, from ../shared/bench/README.md; and the issue's targets.
declare -A kaniko=([s1-cold]=0.55 [s2-cold]=16.5 [s2-no-change]=19.6 [s3-cold]=0.61
    [s3-debian-cold]=17.1 [s4-cold]=13.1 [s5-cold]=4.63)
declare -A target=([s2-no-change]="≤ 0.2" [s2-one-file-edited]="≤ 2" [s3-debian-cold]="≤ 3"
    [s5-cold]="≤ 2.3")
echo "| scenario | kiln, root on the host | kiln, inside docker run (unprivileged) | Kaniko, inside docker run | target |"
echo "|---|---|---|---|---|"
while read -r label secs; do
    u=$(awk -v l="$label" '$1 == l { print $2 }' "$work/unpriv.txt")
    echo "| $label | $secs | ${u:--} | ${kaniko[$label]:--} | ${target[$label]:--} |"
done <"$work/root.txt"
