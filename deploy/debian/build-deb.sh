#!/usr/bin/env bash
# Builds the Debian package of wsus-edge from an already built binary.
#
#   deploy/debian/build-deb.sh BINARY OUTDIR
#
# BINARY: e.g. target/release/wsus-edge (a debug build works too; the copy packaged is stripped).
# OUTDIR: where wsus-edge_<version>_<arch>.deb is written; its path is the one line printed on
# stdout (everything else goes to stderr).
#
# The version is Cargo.toml's [package] version (a "-" of a pre-release becomes "~", so that
# 0.2.0-rc.1 sorts before 0.2.0), the architecture `dpkg --print-architecture`, and the library
# dependencies from dpkg-shlibdeps. The manual pages and shell completions
# are made by running the packaged binary (`wsus-edge generate man|completions`), so it has to
# run on this machine. Needs: dpkg-deb, dpkg-shlibdeps (dpkg-dev), strip (binutils), gzip.
# SOURCE_DATE_EPOCH, when set, fixes every timestamp (default: the last commit's time).
# DEB_MAINTAINER sets the Maintainer field (default "wsus-edge maintainers <wsus-edge@localhost>").
set -euo pipefail

die() { echo "build-deb.sh: $*" >&2; exit 1; }

[ $# -eq 2 ] || die "usage: $0 BINARY OUTDIR"
binary=$1
outdir=$2

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

for tool in dpkg dpkg-deb dpkg-shlibdeps strip gzip md5sum; do
	command -v "$tool" >/dev/null || die "$tool not found (apt-get install dpkg-dev binutils gzip)"
done
[ -f "$binary" ] && [ -x "$binary" ] || die "$binary is not an executable file"
[ "$(head -c 4 "$binary" | od -An -c | tr -d ' ')" = '177ELF' ] || die "$binary is not an ELF executable"
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)

# [package] version of Cargo.toml.
version=$(awk '
	/^\[/ { section = $0 }
	section == "[package]" && $1 == "version" && $2 == "=" { gsub(/"/, "", $3); print $3; exit }
' "$repo/Cargo.toml")
[ -n "$version" ] || die "no [package] version in $repo/Cargo.toml"
deb_version=${version/-/\~}
arch=$(dpkg --print-architecture)
maintainer=${DEB_MAINTAINER:-wsus-edge maintainers <wsus-edge@localhost>}

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || true)
	[ -n "$SOURCE_DATE_EPOCH" ] || SOURCE_DATE_EPOCH=$(date +%s)
fi
export SOURCE_DATE_EPOCH

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# dpkg-shlibdeps wants a source tree layout: debian/control (empty will do) and the package's
# files under debian/<package>.
mkdir -p "$work/debian"
: >"$work/debian/control"
root=$work/debian/wsus-edge
doc=$root/usr/share/doc/wsus-edge

echo "build-deb.sh: wsus-edge $deb_version ($arch) from $binary" >&2

# The program, stripped the way dh_strip does it.
install -d -m 0755 "$root/usr/bin"
strip --remove-section=.comment --remove-section=.note --strip-unneeded \
	-o "$root/usr/bin/wsus-edge" "$binary"
chmod 0755 "$root/usr/bin/wsus-edge"
installed=$root/usr/bin/wsus-edge

# systemd unit and system user.
install -D -m 0644 "$repo/deploy/systemd/wsus-edge.service" "$root/lib/systemd/system/wsus-edge.service"
install -D -m 0644 "$repo/deploy/systemd/wsus-edge.sysusers" "$root/usr/lib/sysusers.d/wsus-edge.conf"

# Configuration (a conffile) and documentation.
install -D -m 0644 "$here/wsus-edge.toml" "$root/etc/wsus-edge/wsus-edge.toml"
install -D -m 0644 "$here/copyright" "$doc/copyright"
for example in wsus-edge.example.toml central.toml branch.toml; do
	install -D -m 0644 "$repo/config/$example" "$doc/examples/$example"
done
# A native package (no Debian revision): its changelog is changelog.gz.
printf '%s\n' \
	"wsus-edge ($deb_version) unstable; urgency=medium" \
	"" \
	"  * wsus-edge $version." \
	"" \
	" -- $maintainer  $(date -u -R -d "@$SOURCE_DATE_EPOCH")" \
	| gzip -9n >"$doc/changelog.gz"

# Manual pages, from the packaged binary.
mkdir "$work/man"
"$installed" generate man "$work/man" >&2 || die "$binary generate man failed"
[ -s "$work/man/wsus-edge.1" ] || die "$binary generate man wrote no wsus-edge.1"
install -d -m 0755 "$root/usr/share/man/man1"
for page in "$work"/man/*.1; do
	name=${page##*/}
	gzip -9n <"$page" >"$root/usr/share/man/man1/$name.gz"
done

# Shell completions, from the packaged binary.
completion() { # SHELL DEST
	install -d -m 0755 "$(dirname "$2")"
	"$installed" generate completions "$1" >"$2" || die "$binary generate completions $1 failed"
	[ -s "$2" ] || die "$binary generate completions $1 printed nothing"
	chmod 0644 "$2"
}
completion bash "$root/usr/share/bash-completion/completions/wsus-edge"
completion zsh "$root/usr/share/zsh/vendor-completions/_wsus-edge"
completion fish "$root/usr/share/fish/vendor_completions.d/wsus-edge.fish"

# Control area.
shlibs=$(cd "$work" && dpkg-shlibdeps -O -e "debian/wsus-edge/usr/bin/wsus-edge" 2>/dev/null \
	| sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || die "dpkg-shlibdeps found no library dependencies in $binary"
# systemd-sysusers creates the user in postinst (as dh_installsysusers makes it depend).
depends="$shlibs, systemd | systemd-standalone-sysusers | systemd-sysusers"
installed_size=$(du -sk --apparent-size "$root" | cut -f1)

install -d -m 0755 "$root/DEBIAN"
sed -e "s/@VERSION@/$deb_version/" -e "s/@ARCH@/$arch/" \
	-e "s/@INSTALLED_SIZE@/$installed_size/" -e "s/@DEPENDS@/$depends/" \
	-e "s|@MAINTAINER@|$maintainer|" \
	"$here/control.in" >"$root/DEBIAN/control"
grep -q '@[A-Z_]*@' "$root/DEBIAN/control" && die "control.in has a placeholder left"
install -m 0644 "$here/conffiles" "$root/DEBIAN/conffiles"
for script in postinst prerm postrm; do
	install -m 0755 "$here/$script" "$root/DEBIAN/$script"
done
# md5sums of every file but the conffiles, as dh_md5sums writes it.
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | LC_ALL=C sort \
	| grep -vxF -f <(sed 's|^/||' DEBIAN/conffiles) | xargs -d '\n' md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"

find "$root" -type d -exec chmod 0755 {} +
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

deb=$outdir/wsus-edge_${deb_version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
echo "$deb"
