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
step "a real container runtime: containerd + runc + CNI (installed from Debian when missing), local images"
./hack/containerd.sh up
trap './hack/containerd.sh down' EXIT
step "libmodbus (the Modbus TCP server the mapper tests talk to): Debian's libmodbus-dev"
if [[ ! -f /usr/include/modbus/modbus.h ]]; then
	sudo=()
	[[ $(id -u) -ne 0 ]] && sudo=(sudo)
	"${sudo[@]}" apt-get update -qq
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends gcc libmodbus-dev >/dev/null
fi
step "MQTT: Debian's mosquitto and its clients (the external broker and a client nobody here wrote)"
if ! command -v mosquitto >/dev/null || ! command -v mosquitto_pub >/dev/null; then
	sudo=()
	[[ $(id -u) -ne 0 ]] && sudo=(sudo)
	"${sudo[@]}" apt-get update -qq
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends mosquitto mosquitto-clients >/dev/null
fi
echo "mosquitto $(mosquitto -h 2>/dev/null | head -1 | awk '{print $3}') (started by the tests themselves, on loopback ports)"
step "ARM: Debian's qemu-user-static and cross compilers (the arm64 edgecore under qemu, cgo SQLite for make release)"
if ! command -v qemu-aarch64-static >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v arm-linux-gnueabihf-gcc >/dev/null; then
	sudo=()
	[[ $(id -u) -ne 0 ]] && sudo=(sudo)
	"${sudo[@]}" apt-get update -qq
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends qemu-user-static gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross >/dev/null
fi
step "unit, integration and end-to-end tests (-race)"
go test -race -count=1 -timeout 45m ./...
step "all tests passed"
