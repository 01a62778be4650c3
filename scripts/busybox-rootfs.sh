#!/usr/bin/env bash
# Writes a minimal busybox root filesystem tarball (from Debian's busybox-static) to $1:
# the base image of kiln's examples and tests (`kiln image import rootfs.tar busybox:local`).
set -euo pipefail
out=${1:?usage: busybox-rootfs.sh OUT.tar}
bb=/bin/busybox
[ -x "$bb" ] || { echo "busybox-rootfs: $bb not found (apt-get install busybox-static)" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir"/{bin,etc,tmp,root,home/app,var/www,proc,sys,dev}
chmod 755 "$dir"
chmod 1777 "$dir/tmp"
cp "$bb" "$dir/bin/busybox"
for applet in $("$bb" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$dir/bin/$applet"
done
cat >"$dir/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat >"$dir/etc/group" <<'G'
root:x:0:
app:x:1000:
nogroup:x:65534:
G
chown 1000:1000 "$dir/home/app"
tar --numeric-owner --sort=name --mtime=@1700000000 -C "$dir" -cf "$out" .
