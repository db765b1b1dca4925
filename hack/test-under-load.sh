#!/usr/bin/env bash
# The timing-sensitive tests on a busy machine (`make test-under-load`): one CPU-bound process per core
# runs the whole time, and the packages whose tests wait on real time run -race, COUNT times each, with
# the same flags as `make test`. A suite that holds here holds on a shared CI box or an edge device.
# The packages and why they are timing-sensitive are listed in README.md ("Tests under load").
#
#   COUNT=3                     runs of each test (default 3)
#   BURNERS=<cores>             CPU-bound processes beside the tests (default: one per core)
#   KEDGE_TEST_TIMEOUT_SCALE=1  how much longer tests may wait (test/slow); unset keeps make test's deadlines
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT="${COUNT:-3}"
BURNERS="${BURNERS:-$(nproc)}"
PKGS=(./plugins/builtin/edged/ ./plugins/builtin/edged/probe/ ./plugins/mappers/codecs/thermo/ ./wasm/runtime/ ./host/modules/ ./test/hublink/)
E2E_RUN='Swap' # test/e2e: the hot-swap tests (real edgecore binaries, WASM compiled while the old codec serves)

step() { printf '\n==> %s\n' "$*"; }

step "a real control plane and containerd, as make test provisions them"
if [[ -z ${KUBEBUILDER_ASSETS:-} ]]; then # else control plane binaries someone else built
	./hack/controlplane.sh build
	KUBEBUILDER_ASSETS="$(./hack/controlplane.sh bindir)"
	export KUBEBUILDER_ASSETS
fi
burners=()
cleanup() {
	((${#burners[@]})) && kill "${burners[@]}" 2>/dev/null || true
	[[ -n ${own_containerd:-} ]] && ./hack/containerd.sh down || true
}
trap cleanup EXIT
if [[ -z ${CONTAINERD_DIR:-} ]]; then # else a containerd someone else runs (a shared machine): leave it be
	./hack/containerd.sh up
	own_containerd=1
fi

step "building the test binaries first (not under load)"
go test -race -count=1 -run '^$' "${PKGS[@]}" ./test/e2e/ >/dev/null

step "$BURNERS CPU burners (one per core by default), KEDGE_TEST_TIMEOUT_SCALE=${KEDGE_TEST_TIMEOUT_SCALE:-1}"
for ((i = 0; i < BURNERS; i++)); do
	(while :; do :; done) &
	burners+=($!)
done
uptime

began=$SECONDS
step "timing-sensitive packages, -race -count=$COUNT: ${PKGS[*]}"
go test -race -count="$COUNT" -timeout 40m "${PKGS[@]}"
step "test/e2e -run '$E2E_RUN', -race -count=$COUNT"
go test -race -count="$COUNT" -timeout 40m -run "$E2E_RUN" ./test/e2e/
uptime
step "all passed under load in $((SECONDS - began)) s"
