#!/usr/bin/env bash
# The Helm CLI (helm.sh/helm/v4 v4.3.2), built from the Go module proxy in the nested module
# hack/helm (its go.mod has a `tool` line for helm.sh/helm/v4/cmd/helm), so tests lint and template
# deploy/helm/kedge with the real tool and nobody needs a helm binary on the machine.
#
#   hack/helm.sh build    build _bin/helm/<key>/helm (skipped when present)
#   hack/helm.sh bin      print the binary's path (builds first when missing)
#   hack/helm.sh ARGS...  run helm with ARGS (anything else), e.g. hack/helm.sh lint deploy/helm/kedge
#
# The binary is keyed by hack/helm/go.{mod,sum} and this script's build recipe, so a machine builds
# once (about 2-4 minutes cold on 2 cores) and reuses it until those change. Builds are serialized
# with flock: a second caller waits for the first instead of compiling beside it.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
HELM_VERSION=v4.3.2
RECIPE=1 # bump when the build flags below change

key() {
	{ cat "$ROOT/hack/helm/go.mod" "$ROOT/hack/helm/go.sum"; echo "$RECIPE"; } | sha256sum | cut -c1-16
}
BINDIR="${KEDGE_BIN_DIR:-$ROOT/_bin}/helm/$(key)"
say() { printf '[helm] %s\n' "$*" >&2; }

build() {
	[[ -x "$BINDIR/helm" ]] && return 0
	mkdir -p "$BINDIR"
	exec 9>"$BINDIR/.build.lock"
	if ! flock -n 9; then
		say "another build of $BINDIR is running; waiting for it"
		flock 9
	fi
	[[ -x "$BINDIR/helm" ]] && return 0
	local t0=$SECONDS
	say "building helm $HELM_VERSION from the Go module proxy (cold: a few minutes; cached in $BINDIR)"
	(cd "$ROOT/hack/helm" && CGO_ENABLED=0 go build -trimpath \
		-ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION -X helm.sh/helm/v4/internal/version.gitTreeState=clean" \
		-o "$BINDIR/helm.tmp" helm.sh/helm/v4/cmd/helm)
	mv "$BINDIR/helm.tmp" "$BINDIR/helm" # only a complete binary gets the name
	say "built in $((SECONDS - t0)) s"
}

case "${1:-}" in
build) build ;;
bin) build && echo "$BINDIR/helm" ;;
"" | -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
*) build && exec "$BINDIR/helm" "$@" ;;
esac
