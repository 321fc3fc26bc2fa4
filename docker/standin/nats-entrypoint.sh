#!/bin/sh
# The stand-in nats image's entrypoint, with the upstream image's rule: no arguments, or a
# first argument that is a flag ("-c ...", "--jetstream"), means arguments for nats-server;
# anything else ("sh", "nats-server ...") is run as given.
set -e
case "${1:-}" in
    "" | -*) set -- nats-server "$@" ;;
esac
exec "$@"
