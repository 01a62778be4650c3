#!/usr/bin/env bash
# Installs the system packages kiln's tests and examples use, on Debian 12 (run as root).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
# busybox-static: the base image of tests and examples; skopeo, umoci: interop checks of the
# OCI store; docker.io, podman: "docker load / podman load accept what kiln saved" checks;
# openssh-client: ssh-agent for RUN --mount=type=ssh.
$SUDO apt-get install -y -qq --no-install-recommends \
    busybox-static skopeo umoci docker.io podman ca-certificates openssh-client >/dev/null
