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
step "libmodbus (the Modbus TCP and RTU slaves the mapper tests talk to): Debian's libmodbus-dev; socat (serial lines as pty pairs)"
if [[ ! -f /usr/include/modbus/modbus.h ]] || ! command -v socat >/dev/null; then
	sudo=()
	[[ $(id -u) -ne 0 ]] && sudo=(sudo)
	"${sudo[@]}" apt-get update -qq
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends gcc libmodbus-dev socat >/dev/null
fi
step "MQTT: Debian's mosquitto and its clients (the external broker and a client nobody here wrote)"
if ! command -v mosquitto >/dev/null || ! command -v mosquitto_pub >/dev/null; then
	sudo=()
	[[ $(id -u) -ne 0 ]] && sudo=(sudo)
	"${sudo[@]}" apt-get update -qq
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends mosquitto mosquitto-clients >/dev/null
fi
echo "mosquitto $(mosquitto -h 2>/dev/null | head -1 | awk '{print $3}') (started by the tests themselves, on loopback ports)"
step "OPC-UA: Node.js + npm from Debian and node-opcua from npm (the OPC-UA server the opcua mapper tests talk to)"
if ! command -v npm >/dev/null; then
	sudo=()
	[[ $(id -u) -ne 0 ]] && sudo=(sudo)
	"${sudo[@]}" apt-get update -qq
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
if [[ ! -f _bin/npm/node_modules/node-opcua/package.json ]]; then
	npm install --no-audit --no-fund --loglevel=error --prefix _bin/npm node-opcua@2.186 >/dev/null
fi
echo "node $(node --version), node-opcua $(node -p 'require("./_bin/npm/node_modules/node-opcua/package.json").version')"
step "packaging tools: systemd-analyze (the edgecore unit is verified), dpkg, busybox-static (the .deb's scratch root)"
if ! command -v systemd-analyze >/dev/null || ! command -v busybox >/dev/null; then
	sudo=()
	[[ $(id -u) -ne 0 ]] && sudo=(sudo)
	"${sudo[@]}" apt-get update -qq
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends systemd busybox-static >/dev/null
fi
step "unit, integration and end-to-end tests (-race)"
go test -race -count=1 -timeout 45m ./...
step "all tests passed"
