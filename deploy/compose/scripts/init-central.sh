#!/bin/sh
# init-central (deploy/compose/compose.yaml): a synthetic catalog for central, approved for
# "All Computers", written into central's data volume before central starts. Runs once: a
# marker in data_dir records that it is done.
#
#   CATALOG_UPDATES        how many software updates to generate (default 300)
#   CATALOG_PAYLOAD_BYTES  what their payload files add up to (default 2GiB)
set -eu

CONFIG=/etc/wsus-edge/wsus-edge.toml
MARKER=/var/lib/wsus-edge/compose-catalog.done

if [ -e "$MARKER" ]; then
    echo "init-central: catalog imported and approved on $(cat "$MARKER"); nothing to do"
    exit 0
fi

wsus-edge --config "$CONFIG" import \
    --generate "${CATALOG_UPDATES:-300}" --payload-bytes "${CATALOG_PAYLOAD_BYTES:-2GiB}"
wsus-edge --config "$CONFIG" approve --all --group "All Computers"
date -u +%Y-%m-%dT%H:%M:%SZ > "$MARKER"
echo "init-central: done"
