#!/usr/bin/env bash
# Writes a Debian 12 (bookworm) minbase root filesystem tarball to $1, made by
# `debootstrap --variant=minbase` from Debian's mirror over HTTP: the base of the tests and
# benchmarks that need a distribution (apt-get install in a RUN step). The tarball is built
# once per machine and kept in ${KILN_DEBIAN_CACHE:-/var/tmp/kiln-debian-bookworm-2.tar}
# (under a lock, so concurrent tests share one debootstrap); $1 is a copy of it.
set -euo pipefail
out=${1:?usage: debian-rootfs.sh OUT.tar}
cache=${KILN_DEBIAN_CACHE:-/var/tmp/kiln-debian-bookworm-2.tar}
mirror=${KILN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
command -v debootstrap >/dev/null || {
    echo "debian-rootfs: debootstrap not found (apt-get install debootstrap)" >&2
    exit 1
}
exec 9>"$cache.lock"
flock 9
if [ ! -s "$cache" ]; then
    dir=$(mktemp -d /var/tmp/kiln-debootstrap.XXXXXX)
    trap 'rm -rf "$dir"' EXIT
    debootstrap --variant=minbase bookworm "$dir/root" "$mirror" >"$dir/log" 2>&1 || {
        tail -20 "$dir/log" >&2
        exit 1
    }
    # Steps reach the mirror over plain HTTP (the host's HTTPS egress uses a private CA).
    echo "deb $mirror bookworm main" >"$dir/root/etc/apt/sources.list"
    rm -rf "$dir/root/var/cache/apt/archives/"*.deb "$dir/root/var/lib/apt/lists/"*_Packages
    rm -rf "$dir/root/dev/"*  # device nodes: an image carries none (the runtime makes /dev)
    tar --numeric-owner --xattrs --sort=name -C "$dir/root" -cf "$cache.tmp" .
    mv "$cache.tmp" "$cache"
fi
cp "$cache" "$out"
