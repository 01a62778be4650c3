#!/usr/bin/env bash
# The build benchmark (a script, never a timed test): scenarios S1-S5 of make-scenarios.sh,
# built by kiln and, where installed, by Docker's classic builder in the same run.
# Prints a Markdown table of median wall times (seconds) and kiln's peak memory.
# Usage (as root): bash scripts/bench/scenarios.sh [RUNS]    (RUNS defaults to 3)
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-3}
work=$(mktemp -d /var/tmp/kiln-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
cargo build --release --quiet
kiln=$PWD/target/release/kiln
bash scripts/busybox-rootfs.sh "$work/busybox.tar"
bash scripts/bench/make-scenarios.sh "$work/ctx" >/dev/null
have_docker=0
if docker info >/dev/null 2>&1; then
    have_docker=1
    docker import "$work/busybox.tar" busybox:local >/dev/null
fi

# seconds elapsed by a command, 3 decimals
timed() {
    local s e
    s=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    e=$(date +%s.%N)
    echo "$e - $s" | bc -l | xargs printf '%.3f'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

fresh_root() {
    rm -rf "$work/root"
    KILN_ROOT=$work/root "$kiln" image import "$work/busybox.tar" busybox:local >/dev/null
}
kbuild() { KILN_ROOT=$work/root "$kiln" build -q -t "bench-$1" "$work/ctx/$1"; }
dbuild() { local s=$1; shift; DOCKER_BUILDKIT=0 docker build -q -t "kiln-bench-$s" "$@" >/dev/null; }

# Same size, new content (one byte overwritten), then an mtime-only change of another file.
edit_one()  { printf X | dd of="$(find "$work/ctx/s2" -type f -name 'f00000*' | head -1)" conv=notrunc status=none; }
touch_one() { touch "$(find "$work/ctx/s2" -type f -name 'f00001*' | head -1)"; }

row() { printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4"; }
echo "| scenario | kiln | docker classic | kiln / docker |"
echo "|---|---|---|---|"
ratio() { if [ "$2" = "-" ]; then echo "-"; else echo "$1 / $2" | bc -l | xargs printf '%.2f'; fi; }

for s in s1 s2 s3 s4 s5; do
    cold=(); noop=(); dcold=(); dnoop=(); edit=(); touchr=()
    for _ in $(seq "$runs"); do
        fresh_root
        cold+=("$(timed kbuild "$s")")
        noop+=("$(timed kbuild "$s")")
        if [ "$s" = s2 ]; then
            edit_one; edit+=("$(timed kbuild "$s")")
            touch_one; touchr+=("$(timed kbuild "$s")")
        fi
        if [ $have_docker = 1 ]; then
            dcold+=("$(timed dbuild "$s" --no-cache "$work/ctx/$s")")
            dnoop+=("$(timed dbuild "$s" "$work/ctx/$s")")
        fi
    done
    kc=$(printf '%s\n' "${cold[@]}" | median); kn=$(printf '%s\n' "${noop[@]}" | median)
    dc=-; dn=-
    if [ $have_docker = 1 ]; then
        dc=$(printf '%s\n' "${dcold[@]}" | median); dn=$(printf '%s\n' "${dnoop[@]}" | median)
    fi
    row "$s cold" "$kc" "$dc" "$(ratio "$kc" "$dc")"
    row "$s no-change" "$kn" "$dn" "$(ratio "$kn" "$dn")"
    if [ "$s" = s2 ]; then
        row "s2 one file edited" "$(printf '%s\n' "${edit[@]}" | median)" "-" "-"
        row "s2 mtime touched" "$(printf '%s\n' "${touchr[@]}" | median)" "-" "-"
    fi
done

# Peak memory of kiln on the largest context (S2 cold), from GNU time if installed.
if [ -x /usr/bin/time ]; then
    fresh_root
    peak=$( { /usr/bin/time -v env KILN_ROOT="$work/root" "$kiln" build -q -t bench-mem "$work/ctx/s2" >/dev/null; } 2>&1 | awk -F: '/Maximum resident/ {gsub(/ /,"",$2); print $2}')
    echo
    echo "kiln peak memory, s2 cold: $((peak / 1024)) MiB"
fi
if [ $have_docker = 1 ]; then
    docker rmi -f busybox:local $(docker images -q 'kiln-bench-*') >/dev/null 2>&1 || true
fi
