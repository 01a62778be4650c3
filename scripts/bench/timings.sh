#!/usr/bin/env bash
# The timing loop of scripts/bench/unprivileged.sh, run wherever kiln runs (on the host or
# inside `docker run`): builds the scenarios under DIR/ctx with `kiln` on PATH (or $KILN) into
# a fresh store per run and prints "label median-seconds" lines.
# Usage: timings.sh DIR RUNS [kiln global flags...]
set -euo pipefail
dir=${1:?usage: timings.sh DIR RUNS [FLAGS...]}
runs=${2:-3}
shift 2
kiln=${KILN:-kiln}
flags=("$@")
root=$(mktemp -d "${TMPDIR:-/var/tmp}/kiln-timings.XXXXXX")
trap 'rm -rf "$root"' EXIT

now() { date +%s.%N; }
timed() {
    local s e
    s=$(now)
    "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; "$@" >&2 || true; exit 1; }
    e=$(now)
    awk -v s="$s" -v e="$e" 'BEGIN { printf "%.3f\n", e - s }'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# A used store is moved aside, deleted only at the end: deleting thousands of files just
# before a cold build makes ext4 scan its recently deleted inodes on every create, which
# would measure the last run's clean-up rather than the build.
fresh() {
    if [ -d "$root/store" ]; then mv "$root/store" "$(mktemp -d "$root/old.XXXXXX")/"; fi
    "$kiln" "${flags[@]}" --root "$root/store" image import "$dir/busybox.tar" busybox:local >/dev/null
    if [ -f "$dir/debian.tar" ]; then
        "$kiln" "${flags[@]}" --root "$root/store" image import "$dir/debian.tar" debian:local >/dev/null
    fi
}
kb() { "$kiln" "${flags[@]}" --root "$root/store" build -q -t "bench-$1" "${@:2}" "$dir/ctx/$1"; }
# One file's first byte changed, same size: a different byte each time, so every run edits.
edit_one() {
    local f
    f=$(find "$dir/ctx/s2" -type f -name 'f00000*' | head -1)
    if [ "$(head -c1 "$f")" = X ]; then printf Y; else printf X; fi | dd of="$f" conv=notrunc status=none
}

report() { printf '%s\n' "${@:2}" | median | xargs printf '%s %s\n' "$1"; }
for s in s1 s2 s3 s4 s5; do
    cold=(); noop=(); edit=(); deb=()
    for _ in $(seq "$runs"); do
        fresh
        cold+=("$(timed kb "$s")")
        noop+=("$(timed kb "$s")")
        if [ "$s" = s2 ]; then
            edit_one
            edit+=("$(timed kb s2)")
        fi
        if [ "$s" = s3 ] && [ -f "$dir/debian.tar" ]; then
            deb+=("$(timed kb s3 --build-arg BASE=debian:local)")
        fi
    done
    report "$s-cold" "${cold[@]}"
    report "$s-no-change" "${noop[@]}"
    [ "$s" != s2 ] || report "s2-one-file-edited" "${edit[@]}"
    [ "$s" != s3 ] || [ ${#deb[@]} = 0 ] || report "s3-debian-cold" "${deb[@]}"
done
