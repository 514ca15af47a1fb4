#!/bin/sh
# Container entry point: on first start, writes the config with `gateway generate-config`
# (SERVER_NAME is required; PostgreSQL when POSTGRES_HOST is set, else SQLite in the data
# directory); then runs the server. Later starts reuse the config as it is.
set -eu
DATA_DIR=${DATA_DIR:-/data}
CONFIG=${GATEWAY_CONFIG:-$DATA_DIR/homeserver.yaml}
PORT=${PORT:-8008}
if [ ! -f "$CONFIG" ]; then
    : "${SERVER_NAME:?set SERVER_NAME (the domain in your users IDs, e.g. example.com) for the first start}"
    set -- --server-name "$SERVER_NAME" --config-path "$CONFIG" --data-dir "$DATA_DIR" \
        --port "$PORT" --bind-address 0.0.0.0 --public-baseurl "${PUBLIC_BASEURL:-https://$SERVER_NAME/}"
    if [ -n "${POSTGRES_HOST:-}" ]; then
        set -- "$@" --postgres-host "$POSTGRES_HOST" --postgres-port "${POSTGRES_PORT:-5432}" \
            --postgres-user "${POSTGRES_USER:-gateway}" --postgres-password "${POSTGRES_PASSWORD:-}" \
            --postgres-database "${POSTGRES_DB:-gateway}"
    fi
    gateway generate-config "$@"
fi
# The compose file's `workers` profile: main's listeners, Redis and the workers' places.
set --
case ",${GATEWAY_PROFILES:-}," in
    *,workers,*) set -- -c "${WORKERS_CONFIG:-/etc/gateway/workers/shared.yaml}" ;;
esac
exec gateway run -c "$CONFIG" "$@"
