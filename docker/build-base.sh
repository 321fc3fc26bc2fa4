#!/usr/bin/env bash
# Builds the local base image `shoal-base:bookworm` (Debian bookworm + python3.11) without a
# registry: debootstrap a minimal root filesystem and `docker import` it. Idempotent: does
# nothing when the image already exists (FORCE=1 rebuilds).
#   MIRROR   Debian mirror (default: the first URI in /etc/apt/sources.list.d/debian.sources,
#            else http://deb.debian.org/debian)
#   BASE_TAG image tag (default shoal-base:bookworm)
set -euo pipefail

BASE_TAG=${BASE_TAG:-shoal-base:bookworm}
if [[ -z "${FORCE:-}" ]] && docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
    echo "$BASE_TAG exists"
    exit 0
fi

if [[ -z "${MIRROR:-}" ]]; then
    if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
        MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi

command -v debootstrap >/dev/null || { echo "debootstrap is needed (apt-get install debootstrap)" >&2; exit 1; }

t0=$SECONDS
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
echo "debootstrap bookworm from $MIRROR"
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$root" "$MIRROR"
# Keep the image small: no apt lists, caches, docs or man pages.
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
echo "deb $MIRROR bookworm main" > "$root/etc/apt/sources.list"

tar -C "$root" -c . | docker import \
    -c 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["/bin/bash"]' - "$BASE_TAG"
docker image ls "$BASE_TAG"
echo "== $BASE_TAG built in $((SECONDS - t0)) s"
