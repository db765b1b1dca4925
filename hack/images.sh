#!/usr/bin/env bash
# Release images without docker: static cloudcore and edgecore (CGO SQLite linked statically) as
# single-layer OCI image archives, tagged with the version, importable with `ctr images import`.
#
#   hack/images.sh [--version V] [--out DIR] [--repo PREFIX] [--only cloudcore|edgecore]
#
# Writes DIR/kedge-cloudcore_<V>.oci.tar (PREFIX/cloudcore:<V>, entrypoint /cloudcore, user 65532)
# and DIR/kedge-edgecore_<V>.oci.tar (PREFIX/edgecore:<V>, entrypoint /edgecore, root: it runs pods).
# Defaults: V from git describe, DIR _out/images, PREFIX localhost/kedge (the chart's default).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VERSION="" OUT="$ROOT/_out/images" REPO=localhost/kedge ONLY="cloudcore edgecore"
while (($#)); do
	case "$1" in
	--version) VERSION="$2"; shift 2 ;;
	--out) OUT="$2"; shift 2 ;;
	--repo) REPO="$2"; shift 2 ;;
	--only) ONLY="$2"; shift 2 ;;
	*) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
	esac
done
[[ -n $VERSION ]] || VERSION="$(cd "$ROOT" && git describe --tags --always --dirty 2>/dev/null || echo dev)"
TAG="${VERSION//+/_}" # an image tag allows [A-Za-z0-9_.-]
say() { printf '[images] %s\n' "$*" >&2; }
mkdir -p "$OUT"
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
for b in $ONLY; do
	[[ $b == cloudcore || $b == edgecore ]] || { say "--only $b: want cloudcore or edgecore"; exit 2; }
	say "building static $b $VERSION"
	(cd "$ROOT" && CGO_ENABLED=1 go build -trimpath -tags 'osusergo netgo sqlite_omit_load_extension' \
		-ldflags "-s -w -linkmode external -extldflags -static -X github.com/kedge-io/kedge/host/daemon.Version=$VERSION" \
		-o "$STAGE/$b" "./cmd/$b")
	user=65532:65532
	[[ $b == edgecore ]] && user=0:0
	(cd "$ROOT" && go run ./hack/mkimage --binary "$STAGE/$b" --entrypoint "/$b" --user "$user" --format oci \
		--tag "$REPO/$b:$TAG" -o "$OUT/kedge-${b}_$TAG.oci.tar")
	say "$REPO/$b:$TAG -> $OUT/kedge-${b}_$TAG.oci.tar"
	echo "$OUT/kedge-${b}_$TAG.oci.tar"
done
