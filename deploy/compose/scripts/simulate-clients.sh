#!/bin/sh
# clients-a / clients-b (deploy/compose/compose.yaml): simulated Windows Update clients that
# scan, download what they are told to install and report, every SIMULATE_EVERY seconds.
#
#   SIMULATE_SERVER   the branch, e.g. http://branch-a:8530 (required)
#   SIMULATE_CLIENTS  clients per round (default 20)
#   SIMULATE_EVERY    seconds between rounds (default 300)
set -eu

: "${SIMULATE_SERVER:?SIMULATE_SERVER must name the branch, e.g. http://branch-a:8530}"
clients="${SIMULATE_CLIENTS:-20}"
every="${SIMULATE_EVERY:-300}"

# Stop between rounds at once on SIGTERM (docker compose stop).
trap 'echo "clients: stopping"; exit 0' TERM INT

round=0
while :; do
    round=$((round + 1))
    echo "clients: round $round: $clients clients against $SIMULATE_SERVER"
    # A failed round (exit 1) is reported and the loop goes on.
    if ! wsus-edge simulate --server "$SIMULATE_SERVER" --clients "$clients" --download --report; then
        echo "clients: round $round failed" >&2
    fi
    sleep "$every" &
    wait $!
done
