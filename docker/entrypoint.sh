#!/bin/sh
# Entry point of the guard's container image.
#
# - A configuration file mounted at /etc/guard/guard.toml is used when GUARD_CONFIG is not set.
# - `guard serve` needs a writable data folder (node.data_dir, /data in the image): say so
#   clearly, with the fix, instead of failing later inside Python.
# - exec: the guard becomes PID 1 and receives SIGTERM itself (clean stop, exit 0).
set -eu

# ENTRYPOINT_DEFAULT_CONFIG moves it (the tests of this script do).
DEFAULT_CONFIG=${ENTRYPOINT_DEFAULT_CONFIG:-/etc/guard/guard.toml}

if [ -z "${GUARD_CONFIG:-}" ] && [ -f "$DEFAULT_CONFIG" ]; then
    GUARD_CONFIG=$DEFAULT_CONFIG
    export GUARD_CONFIG
fi

# GUARD_NODE__DATA_DIR (set to /data by the image) takes precedence over the file's data_dir.
if [ "${1:-serve}" = "serve" ] && [ -n "${GUARD_NODE__DATA_DIR:-}" ]; then
    data_dir=$GUARD_NODE__DATA_DIR
    if ! mkdir -p "$data_dir" 2>/dev/null || [ ! -w "$data_dir" ]; then
        echo "guard-entrypoint: the data folder $data_dir is not writable by uid $(id -u);" \
            "mount a volume there that this user owns (for a host folder: chown $(id -u) FOLDER)" >&2
        exit 2
    fi
fi

if [ "$#" -eq 0 ]; then
    set -- serve
fi
exec guard "$@"
