#!/bin/sh
# The stand-in SeaweedFS image's entrypoint, with the upstream image's interface: started as
# root, it gives /data to the `seaweed` user (when not already its) and runs as that user;
# the first argument picks a weed command, with the upstream defaults put before the
# caller's arguments (a flag given twice: the caller's, which comes last, wins).
set -e
export GODEBUG="${GODEBUG:+$GODEBUG,}fips140=on"

if [ "$(id -u)" = 0 ]; then
    if [ "$(stat -c %u:%g /data)" != "$(id -u seaweed):$(id -g seaweed)" ]; then
        chown -R seaweed:seaweed /data || echo "warning: cannot chown /data" >&2
    fi
    exec setpriv --reuid=seaweed --regid=seaweed --init-groups "$0" "$@"
fi

has() { # FLAG ARGS...: is -FLAG or --FLAG (with or without =value) among ARGS?
    flag=$1
    shift
    for arg; do
        case $arg in -"$flag" | --"$flag" | -"$flag"=* | --"$flag"=*) return 0 ;; esac
    done
    return 1
}

command=${1:-}
[ $# -gt 0 ] && shift
case $command in
    master) exec /usr/bin/weed -logtostderr=true master -mdir=/data -volumeSizeLimitMB=1024 "$@" ;;
    volume)
        if has max "$@"; then set -- -dir=/data "$@"; else set -- -dir=/data -max=0 "$@"; fi
        exec /usr/bin/weed -logtostderr=true volume "$@"
        ;;
    server)
        if has volume.max "$@"; then
            set -- -dir=/data -master.volumeSizeLimitMB=1024 "$@"
        else
            set -- -dir=/data -volume.max=0 -master.volumeSizeLimitMB=1024 "$@"
        fi
        exec /usr/bin/weed -logtostderr=true server "$@"
        ;;
    mini)
        has dir "$@" || set -- -dir=/data "$@"
        exec /usr/bin/weed -logtostderr=true mini "$@"
        ;;
    filer) exec /usr/bin/weed -logtostderr=true filer "$@" ;;
    s3) exec /usr/bin/weed -logtostderr=true s3 "$@" ;;
    volume-rust | worker-rust | shell)
        echo "the stand-in image has no '$command' (only the upstream image does)" >&2
        exit 2
        ;;
    *) exec /usr/bin/weed ${command:+"$command"} "$@" ;;
esac
