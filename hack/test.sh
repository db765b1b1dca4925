#!/usr/bin/env bash
# The whole test suite, as CI runs it (`make test`). It provisions what the tests need by itself, so it
# passes on a fresh machine: every step prints what it does.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "go version: $(go version)"
step "a real control plane (etcd + kube-apiserver + kubectl), built once and cached"
./hack/controlplane.sh build
# envtest and the end-to-end tests find the binaries here.
KUBEBUILDER_ASSETS="$(./hack/controlplane.sh bindir)"
export KUBEBUILDER_ASSETS
step "the real Helm CLI (helm.sh/helm/v4 from the Go module proxy), built once and cached: test/chart lints and templates deploy/helm/kedge"
./hack/helm.sh build
step "a real container runtime: containerd + runc + CNI (installed from Debian when missing), local images"
./hack/containerd.sh up
trap './hack/containerd.sh down' EXIT
step "Debian packages the tests talk to or build with, installed when missing (one apt-get run)"
# libmodbus-dev + gcc: the Modbus TCP and RTU slaves the mapper tests talk to; socat: serial lines as
# pty pairs; mosquitto + clients: the external MQTT broker and a client nobody here wrote; nodejs +
# npm: the node-opcua server; systemd: systemd-analyze verifies the edgecore unit; busybox-static:
# the .deb's scratch root; haproxy: the load balancer in front of three cloudcores; qemu-user-static
# and the arm64/armhf cross compilers: the arm64 edgecore under qemu, cgo SQLite for make release; chromium:
# the headless browser the console's acceptance test drives.
need=()
have() { command -v "$1" >/dev/null || [[ -x /usr/sbin/$1 ]]; }
[[ -f /usr/include/modbus/modbus.h ]] && have gcc || need+=(gcc libmodbus-dev)
have socat || need+=(socat)
have mosquitto && have mosquitto_pub || need+=(mosquitto mosquitto-clients)
have npm || need+=(nodejs npm)
have systemd-analyze || need+=(systemd)
have busybox || need+=(busybox-static)
have haproxy || need+=(haproxy)
have qemu-aarch64-static || need+=(qemu-user-static)
have aarch64-linux-gnu-gcc || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
have arm-linux-gnueabihf-gcc || need+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
have chromium || need+=(chromium)
if ((${#need[@]})); then
	sudo=()
	[[ $(id -u) -ne 0 ]] && sudo=(sudo)
	echo "installing: ${need[*]}"
	"${sudo[@]}" apt-get update -qq
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "mosquitto $(mosquitto -h 2>/dev/null | head -1 | awk '{print $3}') (started by the tests themselves, on loopback ports)"
step "OPC-UA: node-opcua from npm (the OPC-UA server the opcua mapper tests talk to), installed once into _bin/npm"
if [[ ! -f _bin/npm/node_modules/node-opcua/package.json ]]; then
	npm install --no-audit --no-fund --loglevel=error --prefix _bin/npm node-opcua@2.186 >/dev/null
fi
echo "node $(node --version), node-opcua $(node -p 'require("./_bin/npm/node_modules/node-opcua/package.json").version')"
step "unit, integration and end-to-end tests (-race)"
go test -race -count=1 -timeout 55m ./...
step "all tests passed"
