#!/usr/bin/env bash
# Builds the Debian package from BINARY and checks it end to end on this machine:
#
#   sudo deploy/check-package.sh target/release/wsus-edge
#
#  1. deploy/systemd/verify.sh: the unit and sysusers file, offline.
#  2. deploy/debian/build-deb.sh into a scratch directory; dpkg-deb --info/--contents: fields,
#     files, owners, conffiles, the packaged unit and configuration identical to the sources.
#  3. lintian when installed: its findings are shown; only errors fail, except the accepted
#     ones listed in LINTIAN_ACCEPTED below.
#  4. dpkg -i: user and group wsus-edge, /var/lib/wsus-edge, `wsus-edge --version`,
#     `wsus-edge check-config` of the packaged configuration as the wsus-edge user, `systemd-analyze
#     verify` of the installed unit, the unit enabled. Then dpkg -i again (the upgrade path),
#     which must keep a changed conffile.
#  5. dpkg -r keeps the configuration and the data; dpkg -P leaves nothing of the package behind
#     (every path dpkg -L listed is gone unless it existed before the install).
#
# It must run as root (dpkg), on a machine where wsus-edge is not installed: it refuses to touch
# an existing installation or data. Whatever happens, it purges the package it installed and
# deletes the wsus-edge user and group if it created them (the package itself keeps them on
# purge, as Debian does with system users).
# Needs: dpkg-dev, binutils, systemd (systemd-analyze, systemd-sysusers; it need not be
# running), util-linux (runuser); lintian is optional.
set -euo pipefail

# Lintian errors accepted: the placeholder maintainer address (set DEB_MAINTAINER for a real one).
LINTIAN_ACCEPTED=(bogus-mail-host bogus-mail-host-in-debian-changelog)

die() { echo "check-package.sh: FAIL: $*" >&2; exit 1; }
step() { echo; echo "== $*"; }
ok() { echo "ok: $*"; }

[ $# -eq 1 ] || { echo "usage: $0 BINARY" >&2; exit 2; }
if [ "$(id -u)" -ne 0 ]; then
	echo "check-package.sh: must run as root: it installs and purges the package with dpkg." >&2
	echo "  sudo $0 $1" >&2
	exit 2
fi
[ -x "$1" ] || die "$1 is not an executable"
binary=$(realpath "$1")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

for tool in dpkg dpkg-deb dpkg-query runuser systemd-analyze getent; do
	command -v "$tool" >/dev/null || die "$tool not found"
done

# Refuse to touch an existing installation or its data.
if dpkg-query -W -f='${db:Status-Abbrev}' wsus-edge >/dev/null 2>&1; then
	die "dpkg knows wsus-edge already ($(dpkg-query -W -f='${db:Status-Abbrev}' wsus-edge)); this check installs and purges it: run it on a machine without it"
fi
for path in /var/lib/wsus-edge /etc/wsus-edge; do
	[ ! -e "$path" ] || die "$path exists; purging the package would delete it: run this check on a machine without it"
done

version=$(awk '
	/^\[/ { section = $0 }
	section == "[package]" && $1 == "version" && $2 == "=" { gsub(/"/, "", $3); print $3; exit }
' "$repo/Cargo.toml")
deb_version=${version/-/\~}
arch=$(dpkg --print-architecture)

work=$(mktemp -d)
installed_by_us=no
user_existed=no
getent passwd wsus-edge >/dev/null && user_existed=yes
group_existed=no
getent group wsus-edge >/dev/null && group_existed=yes

cleanup() {
	local rc=$?
	if [ "$installed_by_us" = yes ] && dpkg-query -W wsus-edge >/dev/null 2>&1; then
		echo "check-package.sh: purging the wsus-edge package this check installed" >&2
		dpkg -P wsus-edge >/dev/null || rc=1
	fi
	if [ "$user_existed" = no ] && getent passwd wsus-edge >/dev/null; then
		userdel wsus-edge || rc=1
	fi
	if [ "$group_existed" = no ] && getent group wsus-edge >/dev/null; then
		groupdel wsus-edge || rc=1
	fi
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT

step "offline checks of the systemd files"
"$here/systemd/verify.sh"

step "build"
deb=$("$here/debian/build-deb.sh" "$binary" "$work/out")
[ "$(basename "$deb")" = "wsus-edge_${deb_version}_${arch}.deb" ] || die "unexpected package name $deb"
ok "$deb"

step "dpkg-deb --info"
dpkg-deb --info "$deb"
field() { dpkg-deb --field "$deb" "$1"; }
[ "$(field Package)" = wsus-edge ] || die "Package: $(field Package)"
[ "$(field Version)" = "$deb_version" ] || die "Version: $(field Version), Cargo.toml says $version"
[ "$(field Architecture)" = "$arch" ] || die "Architecture: $(field Architecture)"
[ "$(field Section)" = net ] || die "Section: $(field Section)"
depends=$(field Depends)
grep -q 'libc6 (>= ' <<<"$depends" || die "Depends lacks libc6: $depends"
grep -q 'systemd | systemd-standalone-sysusers | systemd-sysusers' <<<"$depends" \
	|| die "Depends lacks systemd-sysusers: $depends"
mkdir "$work/control"
dpkg-deb --control "$deb" "$work/control"
[ "$(cat "$work/control/conffiles")" = /etc/wsus-edge/wsus-edge.toml ] \
	|| die "conffiles: $(cat "$work/control/conffiles")"
for script in postinst prerm postrm; do
	[ -x "$work/control/$script" ] || die "$script missing or not executable"
	sh -n "$work/control/$script" || die "$script: syntax error"
done
ok "control fields, conffiles, maintainer scripts"

step "dpkg-deb --contents"
dpkg-deb --contents "$deb" | tee "$work/contents"
expected=(
	./usr/bin/wsus-edge
	./lib/systemd/system/wsus-edge.service
	./usr/lib/sysusers.d/wsus-edge.conf
	./etc/wsus-edge/wsus-edge.toml
	./usr/share/doc/wsus-edge/copyright
	./usr/share/doc/wsus-edge/changelog.gz
	./usr/share/doc/wsus-edge/examples/wsus-edge.example.toml
	./usr/share/doc/wsus-edge/examples/central.toml
	./usr/share/doc/wsus-edge/examples/branch.toml
	./usr/share/man/man1/wsus-edge.1.gz
	./usr/share/bash-completion/completions/wsus-edge
	./usr/share/zsh/vendor-completions/_wsus-edge
	./usr/share/fish/vendor_completions.d/wsus-edge.fish
)
for path in "${expected[@]}"; do
	awk '{ print $6 }' "$work/contents" | grep -qxF "$path" || die "$path is not in the package"
done
if awk '$2 != "root/root"' "$work/contents" | grep -q .; then
	die "entries not owned by root/root: $(awk '$2 != "root/root"' "$work/contents")"
fi
dpkg-deb -x "$deb" "$work/tree"
cmp "$repo/deploy/systemd/wsus-edge.service" "$work/tree/lib/systemd/system/wsus-edge.service"
cmp "$repo/deploy/systemd/wsus-edge.sysusers" "$work/tree/usr/lib/sysusers.d/wsus-edge.conf"
cmp "$repo/deploy/debian/wsus-edge.toml" "$work/tree/etc/wsus-edge/wsus-edge.toml"
file_type=$(od -An -c -N4 "$work/tree/usr/bin/wsus-edge" | tr -d ' ')
[ "$file_type" = '177ELF' ] || die "/usr/bin/wsus-edge is not an ELF file"
if command -v readelf >/dev/null && readelf -S "$work/tree/usr/bin/wsus-edge" | grep -Eq '\.(debug_info|debug_line|symtab) '; then
	die "/usr/bin/wsus-edge is not stripped"
fi
ok "${#expected[@]} expected files, all root/root, unit/sysusers/config identical to deploy/, binary stripped"

step "lintian"
if command -v lintian >/dev/null; then
	lintian_out=$(lintian --display-info --pedantic "$deb" 2>&1) || true
	echo "$lintian_out"
	accepted_re=$(IFS='|'; echo "${LINTIAN_ACCEPTED[*]}")
	unaccepted=$(grep '^E: ' <<<"$lintian_out" | grep -Ev "^E: wsus-edge: ($accepted_re) " || true)
	[ -z "$unaccepted" ] || die "lintian errors: $unaccepted"
	ok "no lintian errors besides the accepted ${LINTIAN_ACCEPTED[*]} (warnings and notes are reported only)"
else
	echo "skipped: lintian is not installed (apt-get install lintian)"
fi

step "dpkg -i"
# Which of the package's paths exist already (shared directories such as /usr/share/man/man1):
# those may stay after the purge, nothing else may.
awk '{ print $6 }' "$work/contents" | sed 's|^\./|/|; s|/$||; s|^$|/|' >"$work/paths"
while read -r path; do
	if [ -e "$path" ] || [ -L "$path" ]; then echo "$path"; fi
done <"$work/paths" >"$work/preexisting"
installed_by_us=yes
dpkg -i "$deb"
[ "$(dpkg-query -W -f='${db:Status-Abbrev}' wsus-edge)" = 'ii ' ] || die "not installed: $(dpkg-query -W -f='${db:Status-Abbrev}' wsus-edge)"
dpkg -L wsus-edge | sed 's|^/\.$|/|' >"$work/listed"
diff <(sort -u "$work/paths") <(sort -u "$work/listed") || die "dpkg -L differs from the package's contents"

user=$(getent passwd wsus-edge) || die "no user wsus-edge"
IFS=: read -r _ _ uid gid _ home shell <<<"$user"
[ "$home" = /var/lib/wsus-edge ] || die "home of wsus-edge is $home"
case "$shell" in */nologin|/bin/false) ;; *) die "wsus-edge has the login shell $shell" ;; esac
[ "$uid" -lt 1000 ] || die "wsus-edge is not a system user (uid $uid)"
[ "$(getent group wsus-edge | cut -d: -f3)" = "$gid" ] || die "wsus-edge's primary group is not wsus-edge"
ok "user wsus-edge ($user)"

[ "$(stat -c '%U:%G %a' /var/lib/wsus-edge)" = "wsus-edge:wsus-edge 750" ] \
	|| die "/var/lib/wsus-edge is $(stat -c '%U:%G %a' /var/lib/wsus-edge)"
ok "/var/lib/wsus-edge wsus-edge:wsus-edge 0750"

version_line=$(/usr/bin/wsus-edge --version)
case "$version_line" in "wsus-edge $version"|"wsus-edge $version "*) ;; *) die "--version printed: $version_line" ;; esac
ok "$version_line"

runuser -u wsus-edge -- /usr/bin/wsus-edge check-config /etc/wsus-edge/wsus-edge.toml \
	|| die "check-config of the packaged configuration failed as the wsus-edge user"
ok "check-config as wsus-edge"

man_check=--man=no
if command -v man >/dev/null && [ -e /usr/share/man/man1/wsus-edge.1.gz ]; then
	man_check=--man=yes
	man -w wsus-edge >/dev/null || die "man wsus-edge finds no page"
fi
verify_out=$(systemd-analyze verify "$man_check" /lib/systemd/system/wsus-edge.service 2>&1) \
	|| die "systemd-analyze verify of the installed unit: $verify_out"
[ -z "$verify_out" ] || die "systemd-analyze verify of the installed unit: $verify_out"
ok "systemd-analyze verify $man_check /lib/systemd/system/wsus-edge.service"

wants=/etc/systemd/system/multi-user.target.wants/wsus-edge.service
[ "$(readlink "$wants")" = /lib/systemd/system/wsus-edge.service ] || die "the unit is not enabled ($wants)"
ok "enabled ($wants)"
if [ -d /run/systemd/system ]; then
	systemctl is-active --quiet wsus-edge.service || die "systemd runs here, but wsus-edge.service is not active"
	ok "wsus-edge.service active"
else
	echo "systemd is not running here: the service was enabled, not started (as intended)"
fi

step "dpkg -i again (upgrade path): a changed conffile is kept"
echo '# changed by check-package.sh' >>/etc/wsus-edge/wsus-edge.toml
runuser -u wsus-edge -- sh -c 'echo state >/var/lib/wsus-edge/check-package.state'
dpkg -i "$deb"
[ "$(dpkg-query -W -f='${db:Status-Abbrev}' wsus-edge)" = 'ii ' ] || die "not installed after the second dpkg -i"
tail -n 1 /etc/wsus-edge/wsus-edge.toml | grep -qx '# changed by check-package.sh' || die "the changed conffile was replaced"
[ -f /var/lib/wsus-edge/check-package.state ] || die "data was lost by the upgrade"
ok "configuration and data kept"

step "dpkg -r: configuration and data stay"
dpkg -r wsus-edge
[ "$(dpkg-query -W -f='${db:Status-Abbrev}' wsus-edge)" = 'rc ' ] || die "state after dpkg -r: $(dpkg-query -W -f='${db:Status-Abbrev}' wsus-edge)"
[ ! -e /usr/bin/wsus-edge ] || die "/usr/bin/wsus-edge is still there"
[ ! -e /lib/systemd/system/wsus-edge.service ] || die "the unit is still there"
[ -f /etc/wsus-edge/wsus-edge.toml ] || die "dpkg -r removed the configuration"
[ -f /var/lib/wsus-edge/check-package.state ] || die "dpkg -r removed the data"
ok "removed; /etc/wsus-edge/wsus-edge.toml and /var/lib/wsus-edge kept"

step "dpkg -P: nothing left"
dpkg -P wsus-edge
! dpkg-query -W wsus-edge >/dev/null 2>&1 || die "dpkg still knows wsus-edge after the purge"
left=$(while read -r path; do
	if { [ -e "$path" ] || [ -L "$path" ]; } && ! grep -qxF "$path" "$work/preexisting"; then echo "$path"; fi
done <"$work/listed")
[ -z "$left" ] || die "left behind after the purge: $left"
for path in /var/lib/wsus-edge /etc/wsus-edge "$wants"; do
	if [ -e "$path" ] || [ -L "$path" ]; then die "$path left behind after the purge"; fi
done
if grep -rqs wsus-edge /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked; then
	die "deb-systemd-helper still records wsus-edge: $(grep -rls wsus-edge /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked)"
fi
getent passwd wsus-edge >/dev/null || die "the purge deleted the user wsus-edge (Debian keeps system users)"
ok "no file of the package left; the user wsus-edge kept, as intended"

echo
echo "check-package.sh: all checks passed ($(basename "$deb"))"
