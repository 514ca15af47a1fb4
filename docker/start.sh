#!/bin/sh
# Container entry point: the same CLI commands as scripts/run.
set -eu
CONFIG=${GATEWAY_CONFIG:-/data/homeserver.yaml}
if [ ! -f "$CONFIG" ]; then
    : "${SERVER_NAME:?set SERVER_NAME to generate a config on first start}"
    gateway generate-config --server-name "$SERVER_NAME" --config-path "$CONFIG" --data-dir /data \
        --port 8008 --public-baseurl "${PUBLIC_BASEURL:-http://localhost:8008/}"
    # Listen on all interfaces inside the container.
    sed -i "s/bind_addresses: \['127.0.0.1'\]/bind_addresses: ['0.0.0.0']/" "$CONFIG"
fi
exec gateway run -c "$CONFIG"
