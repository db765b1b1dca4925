#!/usr/bin/env bash
# The kedge-edgecore .deb, made with dpkg-deb alone: /usr/bin/edgecore, the hardened systemd unit
# (rendered by `edgecore systemd-unit`, the same one `edgecore join --install` writes) in
# /lib/systemd/system, /etc/default/edgecore (a conffile, kept across upgrades) and maintainer scripts
# from deploy/deb/ (upgrade restarts a running edgecore and keeps /var/lib/kedge; purge removes it).
#
#   hack/deb.sh [--binary PATH] [--version V] [--arch ARCH] [--out DIR]
#
# Without --binary, edgecore is built for ARCH (CGO, for SQLite; arm64/armhf need the Debian cross
# compilers). Prints the path of the .deb. DEB_COMPRESS=gzip builds faster than the default xz.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BINARY="" VERSION="" ARCH="$(dpkg --print-architecture)" OUT="$ROOT/_out"
while (($#)); do
	case "$1" in
	--binary) BINARY="$2"; shift 2 ;;
	--version) VERSION="$2"; shift 2 ;;
	--arch) ARCH="$2"; shift 2 ;;
	--out) OUT="$2"; shift 2 ;;
	*) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
	esac
done
say() { printf '[deb] %s\n' "$*" >&2; }
[[ -n $VERSION ]] || VERSION="$(cd "$ROOT" && git describe --tags --always --dirty 2>/dev/null || echo 0.0.0)"
# Debian versions start with a digit: v0.3.1-4-gabc -> 0.3.1+4.gabc; a bare commit -> 0.0.0+git<sha>.
DEBVER="${VERSION#v}"
[[ $DEBVER =~ ^[0-9] ]] || DEBVER="0.0.0+git$DEBVER"
DEBVER="${DEBVER/-/+}"
DEBVER="$(printf '%s' "$DEBVER" | tr -c 'A-Za-z0-9.+~\n' '.')"
mkdir -p "$OUT"
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
if [[ -z $BINARY ]]; then
	declare -A goarch=([amd64]=amd64 [arm64]=arm64 [armhf]=arm) cc=([arm64]=aarch64-linux-gnu-gcc [armhf]=arm-linux-gnueabihf-gcc)
	[[ -n ${goarch[$ARCH]:-} ]] || { say "unknown --arch $ARCH (amd64, arm64, armhf)"; exit 2; }
	say "building edgecore $VERSION for $ARCH"
	(cd "$ROOT" && CGO_ENABLED=1 GOARCH="${goarch[$ARCH]}" ${cc[$ARCH]:+CC=${cc[$ARCH]}} ${goarch[$ARCH]/arm/GOARM=7} \
		go build -trimpath -ldflags "-s -w -X github.com/kedge-io/kedge/host/daemon.Version=$VERSION" -o "$STAGE/edgecore" ./cmd/edgecore)
	BINARY="$STAGE/edgecore"
fi
P="$STAGE/pkg"
install -D -m 0755 "$BINARY" "$P/usr/bin/edgecore"
# The unit names /usr/bin/edgecore; rendered by the host's edgecore build (the template is the same).
mkdir -p "$P/lib/systemd/system"
if ! "$BINARY" systemd-unit >"$P/lib/systemd/system/edgecore.service" 2>/dev/null; then
	(cd "$ROOT" && go run ./cmd/edgecore systemd-unit) >"$P/lib/systemd/system/edgecore.service"
fi
chmod 0644 "$P/lib/systemd/system/edgecore.service"
install -D -m 0644 "$ROOT/deploy/deb/default-edgecore" "$P/etc/default/edgecore"
install -d -m 0755 "$P/DEBIAN"
for s in postinst prerm postrm; do install -m 0755 "$ROOT/deploy/deb/$s" "$P/DEBIAN/$s"; done
echo /etc/default/edgecore >"$P/DEBIAN/conffiles"
SIZE="$(du -sk --exclude=DEBIAN "$P" | cut -f1)"
cat >"$P/DEBIAN/control" <<CONTROL
Package: kedge-edgecore
Version: $DEBVER
Architecture: $ARCH
Maintainer: Kedge <kedge@example.invalid>
Installed-Size: $SIZE
Section: admin
Priority: optional
Homepage: https://github.com/kedge-io/kedge
Recommends: containerd
Description: Kedge edge agent (KubeEdge-compatible edgecore)
 edgecore keeps an edge node's pods, devices and state working with or
 without its cloudcore. Join the box with 'edgecore join', then
 'systemctl enable --now edgecore'.
CONTROL
DEB="$OUT/kedge-edgecore_${DEBVER}_${ARCH}.deb"
dpkg-deb --root-owner-group "-Z${DEB_COMPRESS:-xz}" --build "$P" "$DEB" >/dev/null
say "built $DEB"
echo "$DEB"
