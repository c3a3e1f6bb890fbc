#!/usr/bin/env bash
# Offline checks of the shipped systemd files (no systemd running needed, no root needed):
#   1. `systemd-analyze verify` of wsus-edge.service. verify insists that ExecStart='s program
#      exists, so the unit is checked inside a scratch root (--root) that holds a byte-identical
#      copy of the unit, a stand-in /usr/bin/wsus-edge and this machine's own units (the targets
#      the unit refers to). verify exits 0 on unknown keys and bad values (it only logs them), so
#      any output at all is a failure; a deliberately broken copy proves the check sees them.
#   2. `systemd-analyze security --offline=yes`: the exposure level must stay at or below
#      $MAX_EXPOSURE (2.0 of 10; the unit is at 1.1 with systemd 252).
#   3. wsus-edge.sysusers: systemd-sysusers applied to a scratch root creates the expected user.
# Needs systemd-analyze and systemd-sysusers from systemd >= 250 (Debian 12: apt-get install systemd).
set -euo pipefail

MAX_EXPOSURE=${MAX_EXPOSURE:-20} # tenths, as --threshold counts

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
unit=$here/wsus-edge.service
sysusers=$here/wsus-edge.sysusers
units_dir=/lib/systemd/system

die() { echo "verify.sh: FAIL: $*" >&2; exit 1; }
for tool in systemd-analyze systemd-sysusers; do
	command -v "$tool" >/dev/null || die "$tool not found (apt-get install systemd)"
done
[ -d "$units_dir" ] || die "$units_dir missing (apt-get install systemd)"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# verify_in_root ROOT: verify ROOT/lib/systemd/system/wsus-edge.service; prints what verify said.
verify_in_root() {
	local out rc=0
	out=$(systemd-analyze verify --man=no --generators=no --root="$1" wsus-edge.service 2>&1) || rc=$?
	printf '%s' "$out"
	[ "$rc" -eq 0 ] && [ -z "$out" ]
}

root=$scratch/root
mkdir -p "$root/lib/systemd" "$root/usr/bin" "$root/etc"
cp -a "$units_dir" "$root/lib/systemd/"
printf '#!/bin/sh\nexit 0\n' >"$root/usr/bin/wsus-edge"
chmod 0755 "$root/usr/bin/wsus-edge"
install -m 0644 "$unit" "$root/lib/systemd/system/wsus-edge.service"
cmp "$unit" "$root/lib/systemd/system/wsus-edge.service"

echo "== systemd-analyze verify $unit"
if ! out=$(verify_in_root "$root"); then
	echo "$out" >&2
	die "systemd-analyze verify reported problems in $unit"
fi
echo "ok: no findings"

# The check must be able to fail: an unknown key in a copy has to be reported.
sed 's/^NoNewPrivileges=yes$/NoNewPrivilegez=yes/' "$unit" >"$root/lib/systemd/system/wsus-edge.service"
if out=$(verify_in_root "$root"); then
	die "systemd-analyze verify did not report an unknown key (the check is blind)"
fi
grep -q "Unknown key 'NoNewPrivilegez'" <<<"$out" || die "unexpected output for the broken copy: $out"
install -m 0644 "$unit" "$root/lib/systemd/system/wsus-edge.service"

echo "== systemd-analyze security --offline=yes $unit"
if ! out=$(systemd-analyze security --offline=yes --threshold="$MAX_EXPOSURE" "$unit" 2>&1); then
	echo "$out" >&2
	die "exposure above $MAX_EXPOSURE/100 (see the ✗ lines above)"
fi
grep 'Overall exposure level' <<<"$out"

echo "== systemd-sysusers $sysusers"
sysroot=$scratch/sysusers
mkdir -p "$sysroot/etc"
out=$(systemd-sysusers --root="$sysroot" "$sysusers" 2>&1) || die "systemd-sysusers: $out"
grep -q '^wsus-edge:x:[0-9]*:[0-9]*:wsus-edge update server:/var/lib/wsus-edge:/usr/sbin/nologin$' \
	"$sysroot/etc/passwd" || die "systemd-sysusers made: $(cat "$sysroot/etc/passwd")"
grep -q '^wsus-edge:x:[0-9]*:' "$sysroot/etc/group" || die "no group wsus-edge"
echo "ok: system user and group wsus-edge, home /var/lib/wsus-edge, no login shell"
echo "verify.sh: all checks passed"
