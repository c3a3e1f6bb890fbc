#!/usr/bin/env bash
# Check the monitoring assets: the example Prometheus configuration, the alerting rules and
# their unit tests (promtool), and the Grafana dashboard (valid JSON, valid PromQL, and every
# metric name one that the node exports).
#
# Usage: deploy/check-monitoring.sh [METRICS.txt]
#   METRICS.txt: what a running node's /metrics returned (e.g.
#   `curl -s http://127.0.0.1:8540/metrics > metrics.txt`). Without it, the sample exposition
#   deploy/grafana/testdata/metrics.txt is used.
#
# Needs promtool (Debian/Ubuntu: `apt-get install prometheus`; 2.42 or later) and python3
# (standard library only).
set -euo pipefail

export PYTHONDONTWRITEBYTECODE=1
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
prom="$here/prometheus"
grafana="$here/grafana"
metrics="${1:-$grafana/testdata/metrics.txt}"

if ! command -v promtool >/dev/null 2>&1; then
  echo "check-monitoring: promtool not found (apt-get install prometheus)" >&2
  exit 2
fi
if [ ! -r "$metrics" ]; then
  echo "check-monitoring: cannot read $metrics" >&2
  exit 2
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "== promtool $(promtool --version 2>&1 | head -n1 | awk '{print $3}')"

echo "== promtool check config prometheus.yml"
promtool check config "$prom/prometheus.yml"

echo "== promtool check rules alerts.yml"
promtool check rules "$prom/alerts.yml"

echo "== promtool test rules alerts_test.yml"
(cd "$prom" && promtool test rules alerts_test.yml)

echo "== every alert has a unit test"
missing=0
while read -r alert; do
  if ! grep -Eq "alertname: *$alert\$" "$prom/alerts_test.yml"; then
    echo "alerts_test.yml: no test of $alert" >&2
    missing=1
  fi
done < <(sed -n 's/^ *- alert: *\([A-Za-z0-9_]*\).*/\1/p' "$prom/alerts.yml" | sort -u)
[ "$missing" -eq 0 ]

echo "== check_dashboard.py self-tests"
if ! python3 "$grafana/test_check_dashboard.py" >"$tmp/selftest.log" 2>&1; then
  cat "$tmp/selftest.log" >&2
  exit 1
fi
tail -n 3 "$tmp/selftest.log"

echo "== check_dashboard.py wsus-edge.json $(basename "$metrics") alerts.yml alerts_test.yml"
python3 "$grafana/check_dashboard.py" "$grafana/wsus-edge.json" "$metrics" \
  "$prom/alerts.yml" "$prom/alerts_test.yml" --promql-out "$tmp/dashboard-expressions.yml"

echo "== promtool check rules (the dashboard's expressions)"
promtool check rules "$tmp/dashboard-expressions.yml"

echo "check-monitoring: all checks passed"
