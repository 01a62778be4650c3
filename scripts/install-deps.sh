#!/usr/bin/env bash
# Installs the system packages kiln's tests and examples use, on Debian 12 (run as root).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
# busybox-static: the base image of tests and examples; skopeo, umoci: interop checks of the
# OCI store; docker.io, podman: "docker load / podman load accept what kiln saved" checks;
# passt: outbound network for `kiln run --network pasta`; docker-registry, apache2-utils
# (htpasswd), openssl: the registries (plain, basic auth, TLS with a test CA) the push/pull
# tests run on 127.0.0.1; openssh-client: ssh-agent for RUN --mount=type=ssh; git: ADD of git
# repositories (and `git daemon` in its test); procps: the `ps` that `kiln top NAME -o …`
# runs, as `docker top` does; uidmap: newuidmap/newgidmap for rootless builds (and their test);
# debootstrap: the Debian minbase base of tests that apt-get install (scripts/debian-rootfs.sh);
# python3-yaml: parsing the README's Kubernetes and CI YAML examples (tests/it/in_docker.rs).
$SUDO apt-get install -y -qq --no-install-recommends \
    busybox-static skopeo umoci docker.io podman passt ca-certificates \
    docker-registry apache2-utils openssl openssh-client git procps uidmap debootstrap \
    python3-yaml >/dev/null
# qemu-user-static: RUN steps of foreign platforms (`kiln build --platform linux/arm64`,
# tests/it/platforms.rs) run under its emulators, registered in binfmt_misc with the F flag
# (scripts/binfmt-setup.sh; registrations do not survive a reboot, so this runs every time).
# The arm64/armhf busybox bases come from Debian's mirror (scripts/busybox-foreign-rootfs.sh),
# with no foreign architecture added to dpkg.
$SUDO apt-get install -y -qq --no-install-recommends qemu-user-static >/dev/null
$SUDO bash "$(dirname "$0")/binfmt-setup.sh"
