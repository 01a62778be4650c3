#!/usr/bin/env bash
# The metadata benchmark (a script, never a timed test): FROM busybox + N ENV lines
# (N defaults to 3000), built cold and rebuilt, then `builder prune -a`. Prints wall time,
# the store's growth and kiln's peak memory per phase. Time and store growth must stay
# linear in N (issue 15 item 6; the target for N=3000 is 3 s and 50 MiB).
# Usage (as root): bash scripts/bench/meta.sh [N]
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-3000}
work=$(mktemp -d /var/tmp/kiln-bench-meta.XXXXXX)
trap 'rm -rf "$work"' EXIT
cargo build --release --quiet
kiln=$PWD/target/release/kiln
bash scripts/busybox-rootfs.sh "$work/busybox.tar"
mkdir -p "$work/ctx"
{
    echo "FROM busybox:local"
    for i in $(seq "$n"); do echo "ENV V$i=value-$i"; done
    echo 'CMD ["sh"]'
} >"$work/ctx/Dockerfile"
export KILN_ROOT=$work/root
"$kiln" image import "$work/busybox.tar" busybox:local >/dev/null

bytes() { du -sb "$KILN_ROOT" | cut -f1; }
# One phase: wall seconds and peak RSS (KiB, from GNU time when installed).
phase() {
    local name=$1; shift
    local before s e peak=-
    before=$(bytes)
    s=$(date +%s.%N)
    if [ -x /usr/bin/time ]; then
        peak=$( { /usr/bin/time -v "$@" >/dev/null; } 2>&1 | awk -F: '/Maximum resident/ {gsub(/ /,"",$2); print $2}')
        peak="$((peak / 1024)) MiB"
    else
        "$@" >/dev/null 2>&1
    fi
    e=$(date +%s.%N)
    printf '| %s | %s | %s | %s |\n' "$name" "$(echo "$e - $s" | bc -l | xargs printf '%.3f')" \
        "$(echo "($(bytes) - $before) / 1048576" | bc -l | xargs printf '%+.2f')" "$peak"
}
echo "FROM busybox + $n ENV lines ($(wc -c <"$work/ctx/Dockerfile") bytes of Dockerfile)"
echo
echo "| phase | seconds | store growth (MiB) | peak memory |"
echo "|---|---|---|---|"
phase "cold build" "$kiln" build -q -t bench-meta "$work/ctx"
phase "no-change rebuild" "$kiln" build -q -t bench-meta "$work/ctx"
echo "ENV LAST=1" >>"$work/ctx/Dockerfile"
phase "one line added" "$kiln" build -q -t bench-meta "$work/ctx"
echo
echo "cache: $(find "$KILN_ROOT/cache" -maxdepth 2 -name "*.json" | wc -l) records, $(du -sb "$KILN_ROOT/cache" | cut -f1) bytes (records and build records)"
echo
echo "| phase | seconds | store growth (MiB) | peak memory |"
echo "|---|---|---|---|"
phase "builder prune -a" "$kiln" builder prune -a -f
