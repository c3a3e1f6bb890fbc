#!/bin/sh
# init-pki (deploy/compose/compose.yaml): the certificate authority, the certificates and the
# bearer tokens of the compose deployment. Runs once per `docker compose up`; whatever already
# exists in the volumes is kept, so certificates and tokens survive restarts.
#
#   /pki/ca        CA certificate and key (this service only)
#   /pki/central   central.pem, central-key.pem (listen.https), ca.pem (tls.client_ca),
#                  downstream.tokens (one line per branch)
#   /pki/<branch>  <branch>.pem, <branch>-key.pem (mutual TLS client certificate), ca.pem
#                  (upstream.ca), upstream.token (its line of central's downstream.tokens)
#
# Runs as root because new named volumes mounted where the image has no directory belong to
# root; at the end each node's volume is handed to the node user (10001).
set -eu

PKI=/pki
BRANCHES="branch-a branch-b"
NODE_UID=10001
NODE_GID=10001

umask 077

new_token() {
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'
}

if [ ! -s "$PKI/ca/ca.pem" ] || [ ! -s "$PKI/ca/ca-key.pem" ]; then
    echo "init-pki: creating the CA in $PKI/ca"
    wsus-edge cert ca --out "$PKI/ca" --name "wsus-edge compose CA"
else
    echo "init-pki: keeping the CA in $PKI/ca"
fi

# central's server certificate: the name the branches use (https://central:8531) and the names
# of the published port on the Docker host.
if [ ! -s "$PKI/central/central.pem" ] || [ ! -s "$PKI/central/central-key.pem" ]; then
    echo "init-pki: creating central's server certificate"
    wsus-edge cert node --ca "$PKI/ca" --name central \
        --san localhost --san 127.0.0.1 --san ::1 --out "$PKI/central"
fi
cp "$PKI/ca/ca.pem" "$PKI/central/ca.pem"

tokens="$PKI/central/downstream.tokens.new"
: > "$tokens"
for branch in $BRANCHES; do
    dir="$PKI/$branch"
    if [ ! -s "$dir/$branch.pem" ] || [ ! -s "$dir/$branch-key.pem" ]; then
        echo "init-pki: creating the client certificate of $branch"
        wsus-edge cert client --ca "$PKI/ca" --name "$branch" --out "$dir"
    fi
    cp "$PKI/ca/ca.pem" "$dir/ca.pem"
    if [ ! -s "$dir/upstream.token" ]; then
        echo "init-pki: creating the upstream token of $branch"
        printf '%s\n' "$(new_token)" > "$dir/upstream.token"
    fi
    cat "$dir/upstream.token" >> "$tokens"
done
mv "$tokens" "$PKI/central/downstream.tokens"

for node in central $BRANCHES; do
    chown -R "$NODE_UID:$NODE_GID" "$PKI/$node"
    chmod 0700 "$PKI/$node"
    chmod 0600 "$PKI/$node"/*
done
echo "init-pki: done"
