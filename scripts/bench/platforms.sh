#!/usr/bin/env bash
# Benchmark of multi-platform builds (a script, never a timed test), medians in seconds:
#   * S1 (make-scenarios.sh) built for the host alone and for linux/amd64,linux/arm64;
#   * the cross-compile pattern (a native `FROM --platform=$BUILDPLATFORM` stage doing the
#     work once, per-target stages copying from it) for the host alone and for two targets;
#   * what kiln adds to an emulated RUN step beyond QEMU's own slowdown: 20 `RUN true` steps
#     for arm64 against the host, less the difference QEMU makes to starting the same
#     `sh -c true` outside kiln.
# Every build is cold, into a fresh store. Needs root, qemu-user-static registered in
# binfmt_misc (scripts/binfmt-setup.sh) and Debian's mirror for the arm64 busybox.
# Usage: bash scripts/bench/platforms.sh [RUNS]   (default 3; KILN=path uses that binary)
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-3}
work=$(mktemp -d /var/tmp/kiln-bench-platforms.XXXXXX)
trap 'rm -rf "$work"' EXIT
if [ -z "${KILN:-}" ]; then
    cargo build --release --quiet
    KILN=$PWD/target/release/kiln
fi
host=linux/$(dpkg --print-architecture)
bash scripts/busybox-rootfs.sh "$work/native.tar"
bash scripts/busybox-foreign-rootfs.sh arm64 "$work/arm64.tar"
bash scripts/bench/make-scenarios.sh "$work/ctx" >/dev/null

# S1 on a base named after the target's architecture (platform ARGs work in FROM lines).
mkdir -p "$work/s1"
cp -a "$work/ctx/s1/." "$work/s1/"
sed -i 's|^FROM \${BASE}$|FROM busybox-${TARGETARCH}:local|' "$work/s1/Dockerfile"
mkdir -p "$work/cross"
cat >"$work/cross/Dockerfile" <<'EOF'
FROM --platform=$BUILDPLATFORM busybox-amd64:local AS build
RUN i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; mkdir /out && \
    for a in amd64 arm64; do echo "app for $a" > /out/app-$a; done
FROM busybox-${TARGETARCH}:local
ARG TARGETARCH
COPY --from=build /out/app-${TARGETARCH} /app
CMD ["cat", "/app"]
EOF
mkdir -p "$work/steps"
{
    echo 'FROM busybox-${TARGETARCH}:local'
    for i in $(seq 20); do echo "RUN true # $i"; done
} >"$work/steps/Dockerfile"

now() { date +%s.%N; }
elapsed() { awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.3f\n", e - s }'; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# cold DIR PLATFORMS: seconds of one build into a fresh store.
cold() {
    local store=$work/store s
    rm -rf "$store"
    "$KILN" --root "$store" image import "$work/native.tar" busybox-amd64:local >/dev/null
    "$KILN" --root "$store" image import --platform linux/arm64 "$work/arm64.tar" \
        busybox-arm64:local >/dev/null
    s=$(now)
    "$KILN" --root "$store" build -q --platform "$2" -t bench "$work/$1" >/dev/null ||
        { echo "platforms.sh: building $1 for $2 failed" >&2; exit 1; }
    elapsed "$s"
}
# starts N BUSYBOX: seconds of N `sh -c true` started directly (through qemu for arm64).
starts() {
    local s
    s=$(now)
    for _ in $(seq "$1"); do "${@:2}" sh -c true; done
    elapsed "$s"
}
row() {
    local a=() b=()
    for _ in $(seq "$runs"); do
        a+=("$(cold "$1" "$host")")
        b+=("$(cold "$1" "$host,linux/arm64")")
    done
    echo "| $2 | $(median "${a[@]}") | $(median "${b[@]}") |"
}

echo "| build, cold | $host alone | $host + linux/arm64 |"
echo "|---|---|---|"
row s1 "S1"
row cross "cross-compile pattern"

mkdir -p "$work/bb-arm64" "$work/bb-native"
tar -xf "$work/arm64.tar" -C "$work/bb-arm64"
tar -xf "$work/native.tar" -C "$work/bb-native"
nat=() emu=() qn=() qe=()
for _ in $(seq "$runs"); do
    nat+=("$(cold steps "$host")")
    emu+=("$(cold steps linux/arm64)")
    qn+=("$(starts 20 "$work/bb-native/bin/busybox")")
    qe+=("$(starts 20 qemu-aarch64-static "$work/bb-arm64/bin/busybox")")
done
awk -v n="$(median "${nat[@]}")" -v e="$(median "${emu[@]}")" \
    -v qn="$(median "${qn[@]}")" -v qe="$(median "${qe[@]}")" 'BEGIN {
    printf "\n20 RUN steps: %.3f s native, %.3f s emulated (arm64); 20 `sh -c true` outside kiln: %.3f s native, %.3f s under qemu-aarch64\n", n, e, qn, qe
    printf "kiln'"'"'s own overhead per emulated RUN step beyond QEMU'"'"'s: %.1f ms\n", ((e - n) - (qe - qn)) / 20 * 1000
}'
