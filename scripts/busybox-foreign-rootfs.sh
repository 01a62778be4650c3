#!/usr/bin/env bash
# Writes a minimal busybox root filesystem tarball of a foreign architecture to $2, from
# Debian's busybox-static package for that architecture ($1: a Debian architecture, arm64 or
# armhf): the bases of the multi-platform tests (`kiln image import --platform linux/arm64
# rootfs.tar busybox-arm64:local`). The package is fetched once per machine with `apt-get
# download` (scripts/install-deps.sh adds the architectures) and kept in /var/tmp.
set -euo pipefail
arch=${1:?usage: busybox-foreign-rootfs.sh DEBIAN-ARCH OUT.tar}
out=${2:?usage: busybox-foreign-rootfs.sh DEBIAN-ARCH OUT.tar}
cache=${KILN_FOREIGN_CACHE:-/var/tmp}/kiln-busybox-static-$arch.deb
exec 9>"$cache.lock"
flock 9
if [ ! -s "$cache" ]; then
    dl=$(mktemp -d)
    trap 'rm -rf "$dl"' EXIT
    # As root into a private directory: apt's _apt user could not write there.
    (cd "$dl" && apt-get download -q -o APT::Sandbox::User=root "busybox-static:$arch" \
        >/dev/null) || {
        echo "busybox-foreign-rootfs: cannot download busybox-static:$arch" \
             "(dpkg --add-architecture $arch && apt-get update)" >&2
        exit 1
    }
    mv "$dl"/busybox-static_*.deb "$cache"
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
