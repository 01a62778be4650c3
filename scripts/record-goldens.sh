#!/usr/bin/env bash
# Records testdata/buildkit/<case>/golden.json with BuildKit (a maintainer tool, not run in CI).
#
# Needs a running buildkitd and a loopback registry holding the base image, as
# /work/notes/buildkit-howto.md (and docs REFERENCE-BUILDKIT.md) describe:
#   BUILDCTL     buildctl binary              (default /tmp/buildkit-bin/buildctl)
#   BUILDKIT_ADDR buildkitd address           (default unix:///tmp/bk.sock)
#   REGISTRY     registry holding busybox:local (default 127.0.0.1:5055)
#   BASE_TAR     docker archive of busybox:local as pushed there (default /tmp/busybox.tar)
#   BUILDKIT_COMMIT  the commit buildkitd was built from (required; written to BUILDKIT_COMMIT)
#
# usage: scripts/record-goldens.sh [CASE...]   (default: every case folder)
#
# The case conventions (context/, args, modes, the busybox:local base) are in
# testdata/buildkit/README.md; tests/it/buildkit_goldens.rs builds the same way with kiln.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
corpus=$here/testdata/buildkit
buildctl=${BUILDCTL:-/tmp/buildkit-bin/buildctl}
addr=${BUILDKIT_ADDR:-unix:///tmp/bk.sock}
registry=${REGISTRY:-127.0.0.1:5055}
base_tar=${BASE_TAR:-/tmp/busybox.tar}
commit=${BUILDKIT_COMMIT:?set BUILDKIT_COMMIT to the commit buildkitd was built from}
[ -x "$buildctl" ] || { echo "record-goldens: no buildctl at $buildctl" >&2; exit 1; }
[ -f "$base_tar" ] || { echo "record-goldens: no base archive at $base_tar" >&2; exit 1; }
"$buildctl" --addr "$addr" debug workers >/dev/null || { echo "record-goldens: buildkitd not reachable at $addr" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Copies a case's context/ into $1 (an empty context when it has none) with the modes git
# cannot keep: directories 0755, files 0755 if executable else 0644, then the `modes` file.
prepare_context() {
    local case_dir=$1 ctx=$2
    mkdir -p "$ctx"
    if [ -d "$case_dir/context" ]; then
        cp -a "$case_dir/context/." "$ctx/"
    fi
    find "$ctx" -mindepth 1 -type d -exec chmod 0755 {} +
    find "$ctx" -type f -perm /111 -exec chmod 0755 {} +
    find "$ctx" -type f ! -perm /111 -exec chmod 0644 {} +
    chown -R -h 0:0 "$ctx"
    if [ -f "$case_dir/modes" ]; then
        while read -r mode path; do
            [ -n "$mode" ] && chmod "$mode" "$ctx/$path"
        done <"$case_dir/modes"
    fi
}

cases=("$@")
if [ ${#cases[@]} -eq 0 ]; then
    for d in "$corpus"/*/; do cases+=("$(basename "$d")"); done
fi

failed=0
for name in "${cases[@]}"; do
    case_dir=$corpus/$name
    [ -f "$case_dir/Dockerfile" ] || { echo "record-goldens: $name has no Dockerfile" >&2; failed=1; continue; }
    rm -rf "${work:?}"/*
    prepare_context "$case_dir" "$work/ctx"
    mkdir -p "$work/df"
    # The corpus names the base `busybox:local` (kiln's name); BuildKit pulls it from the registry.
    sed -E "s#(^|[^A-Za-z0-9./:_-])busybox:local#\1$registry/busybox:local#g" \
        "$case_dir/Dockerfile" >"$work/df/Dockerfile"
    opts=(--opt build-arg:SOURCE_DATE_EPOCH=1700000000)
    if [ -f "$case_dir/args" ]; then
        while IFS= read -r kv; do
            [ -n "$kv" ] && opts+=(--opt "build-arg:$kv")
        done <"$case_dir/args"
    fi
    if "$buildctl" --addr "$addr" build --frontend dockerfile.v0 \
        --local context="$work/ctx" --local dockerfile="$work/df" "${opts[@]}" \
        --output "type=docker,name=golden/$name:1,dest=$work/image.tar" >"$work/log" 2>&1; then
        python3 "$here/scripts/golden-summary.py" "$work/image.tar" "$base_tar" >"$case_dir/golden.json"
        echo "recorded $name"
    else
        # The last `error:` line is BuildKit's message; kiln must refuse the case too.
        msg=$(grep -E '^(error|ERROR):' "$work/log" | tail -n 1 | sed -E 's/^(error|ERROR): *//')
        [ -n "$msg" ] || msg=$(tail -n 1 "$work/log")
        # Snapshot ids and buildkitd's scratch mounts change every run.
        msg=$(printf '%s' "$msg" | sed -E -e 's/ref [a-z0-9]+::[a-z0-9]+/ref REF/g' \
            -e 's#[^ :]*/cachemounts/buildkit[0-9]+#MOUNT#g')
        python3 -c 'import json,sys; print(json.dumps({"error": sys.argv[1]}, indent=1))' "$msg" >"$case_dir/golden.json"
        echo "recorded $name (BuildKit refused it: $msg)"
    fi
done

echo "$commit" >"$corpus/BUILDKIT_COMMIT"
exit $failed
