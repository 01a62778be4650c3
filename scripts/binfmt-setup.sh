#!/usr/bin/env bash
# Registers Debian's qemu-user-static emulators in binfmt_misc, with the F (fix binary) flag
# their /usr/lib/binfmt.d/qemu-*.conf lines carry, so that RUN steps of a foreign platform
# (`kiln build --platform linux/arm64`) run under emulation, inside kiln's sandbox too: with F
# the kernel opens the interpreter at registration, not in the step's root. Run as root, once
# per boot (binfmt_misc registrations do not survive a reboot). Idempotent.
#
#   bash scripts/binfmt-setup.sh            # aarch64 and arm (arm64, arm/v7), what tests use
#   bash scripts/binfmt-setup.sh all        # every emulator qemu-user-static ships
set -euo pipefail
dir=/proc/sys/fs/binfmt_misc
if [ ! -e "$dir/register" ]; then
    mount -t binfmt_misc binfmt_misc "$dir"
fi
if [ "${1:-}" = all ]; then
    confs=(/usr/lib/binfmt.d/qemu-*.conf)
else
    confs=(/usr/lib/binfmt.d/qemu-aarch64.conf /usr/lib/binfmt.d/qemu-arm.conf)
fi
for conf in "${confs[@]}"; do
    [ -f "$conf" ] || { echo "binfmt-setup: $conf missing: apt-get install qemu-user-static" >&2; exit 1; }
    line=$(grep -v '^#' "$conf" | head -n1)
    name=$(printf '%s' "$line" | cut -d: -f2)
    if [ -e "$dir/$name" ]; then
        # Registered already (by binfmt-support or an earlier run); F is what kiln needs.
        if ! grep -q '^flags:.*F' "$dir/$name"; then
            echo -1 > "$dir/$name"
        else
            continue
        fi
    fi
    printf '%s' "$line" > "$dir/register"
done
