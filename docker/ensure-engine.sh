#!/usr/bin/env bash
# Makes sure a Docker engine answers: installs docker.io (and docker-compose, debootstrap for
# build-base.sh) when missing, starts dockerd when none runs, and waits for it.
# For hosts and CI runners without a system service manager. The engine runs without
# iptables and without the default bridge: containers use the host network (as the tests
# and DockerLauncher do by default) or user-defined networks.
# Needs root (or password-less sudo) to install or start the engine; nothing when one answers.
# On failure the last line on stderr says why (.ci/run passes it on to the tests' skip reason).
#   DOCKERD_LOG   where dockerd logs (default /var/log/dockerd.log)
#   ENGINE_WAIT   seconds to wait for a started dockerd to answer (default 60)
set -euo pipefail

fail() {
    echo "$*" >&2
    exit 1
}

sudo=()
if [[ $(id -u) != 0 ]]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    fi
fi
need_root() { # WHAT
    [[ $(id -u) == 0 || ${#sudo[@]} -gt 0 ]] \
        || fail "$1 needs root (run docker/ensure-engine.sh as root, or with password-less sudo)"
}

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 \
    || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [[ ${#missing[@]} -gt 0 ]]; then
    need_root "installing ${missing[*]}"
    command -v apt-get >/dev/null || fail "${missing[*]} missing and no apt-get to install them"
    echo "installing ${missing[*]}"
    apt_opts=(-o Acquire::Retries=2 -o Acquire::http::Timeout=30 -o Acquire::https::Timeout=30)
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update -q \
        || fail "apt-get update failed (no network or apt mirror?)"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y -q \
        "${missing[@]}" || fail "apt-get install ${missing[*]} failed"
fi

if docker info >/dev/null 2>&1; then
    exit 0
fi

log=${DOCKERD_LOG:-/var/log/dockerd.log}
[[ -w $(dirname "$log") ]] || log=${TMPDIR:-/tmp}/dockerd.log
pid=
if ! pgrep -x dockerd >/dev/null; then
    need_root "starting dockerd"
    echo "starting dockerd (log: $log)"
    "${sudo[@]}" nohup dockerd --iptables=false --ip6tables=false --bridge=none >"$log" 2>&1 &
    pid=$!
fi
deadline=$((SECONDS + ${ENGINE_WAIT:-60}))
while ((SECONDS < deadline)); do
    docker info >/dev/null 2>&1 && exit 0
    if [[ -n $pid ]] && ! ps -p "$pid" >/dev/null; then # it exited: say why, now
        tail -20 "$log" >&2 || true
        why=$(grep -iE 'failed|error' "$log" | tail -1 || true)
        fail "dockerd exited at start: $(cut -c1-300 <<<"${why:-$(tail -1 "$log")}"); see $log"
    fi
    sleep 0.5
done
why=$(docker info 2>&1 | grep -v '^[[:space:]]*$' | tail -1 | cut -c1-200 || true)
if [[ -z $pid ]]; then
    fail "a dockerd runs but does not answer here ($why)"
fi
tail -20 "$log" >&2 || true
fail "dockerd did not answer within ${ENGINE_WAIT:-60} s ($why); see $log"
