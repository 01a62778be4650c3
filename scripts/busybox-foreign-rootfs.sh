#!/usr/bin/env bash
# Writes a minimal busybox root filesystem tarball of a foreign architecture to $2, from
# Debian's busybox-static package for that architecture ($1: a Debian architecture, arm64 or
# armhf): the bases of the multi-platform tests (`kiln image import --platform linux/arm64
# rootfs.tar busybox-arm64:local`). The package is fetched once per machine from Debian's
# mirror (over HTTP; KILN_DEBIAN_MIRROR overrides it) and kept in /var/tmp.
set -euo pipefail
arch=${1:?usage: busybox-foreign-rootfs.sh DEBIAN-ARCH OUT.tar}
out=${2:?usage: busybox-foreign-rootfs.sh DEBIAN-ARCH OUT.tar}
cache=${KILN_FOREIGN_CACHE:-/var/tmp}/kiln-busybox-static-$arch.deb
mirror=${KILN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
exec 9>"$cache.lock"
flock 9
if [ ! -s "$cache" ]; then
    # A private apt state (its own sources and lists) for that one download: the host's dpkg
    # gets no foreign architecture, and its own `apt-get update` stays as it was.
    apt=$(mktemp -d)
    trap 'rm -rf "$apt"' EXIT
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/dl"
    echo "deb $mirror bookworm main" >"$apt/sources.list"
    opts=(-o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
          -o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
          -o "APT::Architectures::=$arch" -o "Acquire::Languages=none"
          -o "APT::Sandbox::User=root")
    { apt-get "${opts[@]}" update -qq &&
      (cd "$apt/dl" && apt-get "${opts[@]}" download -q "busybox-static:$arch"); } >/dev/null || {
        echo "busybox-foreign-rootfs: cannot download busybox-static:$arch from $mirror" >&2
        exit 1
    }
    mv "$apt"/dl/busybox-static_*.deb "$cache.tmp"
    mv "$cache.tmp" "$cache"
    rm -rf "$apt"
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
dpkg-deb -x "$cache" "$dir/pkg"
mkdir -p "$dir/root"/{bin,etc,tmp,root,home/app,proc,sys,dev}
chmod 755 "$dir/root"
chmod 1777 "$dir/root/tmp"
cp "$dir/pkg/bin/busybox" "$dir/root/bin/busybox"
# The applet list of the host's busybox (the same Debian version), so listing needs no
# emulation; the foreign one's own list when the host has none.
lister=/bin/busybox
[ -x "$lister" ] || lister="$dir/root/bin/busybox"
for applet in $("$lister" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$dir/root/bin/$applet"
done
cat >"$dir/root/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat >"$dir/root/etc/group" <<'G'
root:x:0:
app:x:1000:
nogroup:x:65534:
G
chown 1000:1000 "$dir/root/home/app"
tar --numeric-owner --sort=name --mtime=@1700000000 -C "$dir/root" -cf "$out" .
