#!/usr/bin/env bash
# Makes sure a Docker engine answers: installs docker.io (and docker-compose, debootstrap for
# build-base.sh) when missing, starts dockerd when none runs, and waits for it.
# For hosts and CI runners without a system service manager. The engine runs without
# iptables and without the default bridge: containers use the host network (as the tests
# and DockerLauncher do by default) or user-defined networks.
#   DOCKERD_LOG  where dockerd logs (default /var/log/dockerd.log)
set -euo pipefail

if ! command -v dockerd >/dev/null || ! command -v docker-compose >/dev/null \
    || ! command -v debootstrap >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y docker.io docker-compose debootstrap
fi

if docker info >/dev/null 2>&1; then
    exit 0
fi

log=${DOCKERD_LOG:-/var/log/dockerd.log}
if ! pgrep -x dockerd >/dev/null; then
    nohup dockerd --iptables=false --ip6tables=false --bridge=none >"$log" 2>&1 &
fi
for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && exit 0
    sleep 0.5
done
echo "dockerd did not come up; see $log" >&2
tail -20 "$log" >&2
exit 1
