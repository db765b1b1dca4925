# Kedge — run `make help` for the targets.
SHELL := /bin/bash
GO ?= go
BIN := _bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/kedge-io/kedge/host/daemon.Version=$(VERSION)
# Packages benchmarked by `make bench` (each hot path an issue names).
BENCH_PKGS ?= ./sdk/message/ ./host/router/ ./host/store/ ./host/hub/ ./host/modules/ ./host/process/ ./host/sdktest/ ./wasm/runtime/ ./test/hublink/ ./test/kubebench/ ./test/edgedbench/ ./plugins/builtin/devicetwin/ ./plugins/builtin/dmi/ ./test/mapperbench/ ./test/streambench/ ./plugins/builtin/metamanager/
FUZZTIME ?= 20s

.PHONY: bench-scale containerd-up containerd-down image controlplane controlplane-up controlplane-down help generate build wasm test test-short test-under-load lint bench fuzz demo demo-stop clean classes edgecore-full

help: ## list the targets
	@grep -hE '^[a-z%-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 18

build: wasm ## build cloudcore and edgecore (and the example WASM modules) into _bin/
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/cloudcore ./cmd/edgecore

WASM_EXAMPLES := $(notdir $(wildcard wasm/examples/*))

wasm: ## build the example WASM modules into _bin/wasm/, packed with their manifests (prints each sha256)
	@mkdir -p $(BIN)/wasm
	$(GO) build -trimpath -o $(BIN)/wasmpack ./wasm/cmd/wasmpack
	@set -e; for m in $(WASM_EXAMPLES); do \
	  GOOS=wasip1 GOARCH=wasm $(GO) build -buildmode=c-shared -trimpath -o $(BIN)/wasm/$$m.raw.wasm ./wasm/examples/$$m; \
	  $(BIN)/wasmpack -manifest wasm/examples/$$m/manifest.yaml -in $(BIN)/wasm/$$m.raw.wasm -out $(BIN)/wasm/$$m.wasm; \
	  rm $(BIN)/wasm/$$m.raw.wasm; \
	done
	@# thermocodec firmware 2 (Kelvin): what make demo hot-swaps v1 to while the device is polled
	GOOS=wasip1 GOARCH=wasm $(GO) build -buildmode=c-shared -trimpath -tags thermocodec_v2 -o $(BIN)/wasm/thermocodec-v2.raw.wasm ./wasm/examples/thermocodec
	$(BIN)/wasmpack -manifest wasm/examples/thermocodec/manifest-v2.yaml -in $(BIN)/wasm/thermocodec-v2.raw.wasm -out $(BIN)/wasm/thermocodec-v2.wasm
	@rm $(BIN)/wasm/thermocodec-v2.raw.wasm

# Device classes and module names come from the one module list, cmd/modules.yaml, through the generated
# hack/classes.mk (CLASSES, EDGE_MODULES, PROCESS_MODULES, CLASS_TAGS_<class>); go generate ./cmd/edgecore
# rewrites it. Class targets: edgecore-<class or modules>, classes, release (hack/release.mk).
include hack/classes.mk
include hack/release.mk
comma := ,
# edgecore_tags: the build tags for a class name or a comma-separated list of modules and runtimes.
edgecore_tags = $(or $(CLASS_TAGS_$(1)),kedge_custom grpcnotrace nethttpomithttp2 $(foreach m,$(subst $(comma), ,$(1)),kedge_$(m)))
# class_ldflags: stamps a class name into the binary (the node's inventory reports it); a module list
# is reported as "custom" (host/modules BuildClass).
class_ldflags = $(if $(CLASS_TAGS_$(1)),-X github.com/kedge-io/kedge/host/modules.Class=$(1))
# edgecore_unknown: the names in $(1) that are neither a class nor an edge module nor a runtime.
edgecore_unknown = $(if $(CLASS_TAGS_$(1)),,$(filter-out $(EDGE_MODULES) $(HOST_RUNTIMES),$(subst $(comma), ,$(1))))

edgecore-full: ## edgecore with every builtin module (same as make build)
	@mkdir -p $(BIN)
	$(GO) build -trimpath -tags "grpcnotrace nethttpomithttp2" -ldflags "$(LDFLAGS)" -o $(BIN)/edgecore-full ./cmd/edgecore

classes: ## build every device class, record size, cold start, RSS, working set, idle CPU and wake-ups, and the full class beside upstream KubeEdge with 20 pods (FOOTPRINT=0 skips), in BENCHMARKS.md
	./hack/classes.sh

edgecore-%: ## edgecore for a device class (make edgecore-gateway) or a set of builtin modules (make edgecore-metamanager,nodestatus)
	@if [ -n "$(call edgecore_unknown,$*)" ]; then \
	  echo "edgecore-$*: no class or module named $(call edgecore_unknown,$*)" >&2; \
	  echo "  classes:  $(CLASSES)" >&2; echo "  modules:  $(EDGE_MODULES)" >&2; echo "  runtimes: $(HOST_RUNTIMES)" >&2; exit 2; fi
	@mkdir -p $(BIN)
	$(GO) build -trimpath -tags "$(call edgecore_tags,$*)" -ldflags "$(LDFLAGS) $(call class_ldflags,$*)" -o $(BIN)/edgecore-$* ./cmd/edgecore

generate-modules: ## rewrite cmd/*/modules_*.go, hack/classes.mk and README's class table from cmd/modules.yaml
	$(GO) generate ./cmd/edgecore

test: lint ## the whole suite, as CI runs it: provisioning, unit, integration and end-to-end tests, -race
	./hack/test.sh

test-under-load: ## the timing-sensitive packages, -race -count=3, with a CPU burner on every core (hack/test-under-load.sh)
	./hack/test-under-load.sh

test-short: ## unit tests only (-short skips integration and end-to-end tests)
	$(GO) test -race -short -count=1 ./...

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

bench: ## run the benchmarks, print a table and update BENCHMARKS.md
	$(GO) test -run='^$$' -bench=. -benchmem -count=1 $(BENCH_PKGS) | tee /dev/stderr | $(GO) run ./hack/benchtable -update BENCHMARKS.md -command "make bench"

SCALE_SIZES ?= 1000,5000,10000
# The settings issue 20's goals are measured with (≤ 1 heartbeat write/s per 100 nodes needs renewals
# of 100 s or more; see edgecontroller's README); add -twin-period 5m for a twin report per node.
SCALE_FLAGS ?= -lease-renew 120s -status-refresh 10m -twin-period 0 -rate 200 -pod-rate 50
bench-scale: ## hollow-node ladder (SCALE_SIZES, default 1k/5k/10k; SCALE_FLAGS) on one cloudcore with a real kube-apiserver + etcd; table in BENCHMARKS.md
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/cloudcore ./cmd/kedge-edgemark
	$(GO) run ./hack/benchscale -sizes $(SCALE_SIZES) -update BENCHMARKS.md $(SCALE_FLAGS)

fuzz: ## run every fuzz target for FUZZTIME each (seed corpora under testdata/fuzz run in make test)
	@set -e; for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for f in $$(grep -hoE '^func (Fuzz[A-Za-z0-9_]+)' $$dir/*_test.go 2>/dev/null | awk '{print $$2}'); do \
	    echo "== $$pkg $$f"; $(GO) test -run='^$$' -fuzz="^$$f$$" -fuzztime=$(FUZZTIME) $$pkg; \
	  done; done

generate: ## regenerate the gRPC code from sdk/proto/module.proto (needs protoc: apt-get install protobuf-compiler)
	./hack/generate.sh

module-%: ## a builtin module as a plugin executable, e.g. make module-nodestatus -> _bin/modules/nodestatus
	@if [ -z "$(filter $*,$(PROCESS_MODULES))" ]; then \
	  echo "module-$*: no module named $* with runtime process; modules: $(PROCESS_MODULES)" >&2; exit 2; fi
	@mkdir -p $(BIN)/modules
	$(GO) build -trimpath -tags "kedge_custom kedge_$*" -ldflags "-s -w $(LDFLAGS) -X main.moduleName=$* -X main.version=$(VERSION)" -o $(BIN)/modules/$* ./cmd/kedge-module
	@sha256sum $(BIN)/modules/$*

controlplane: ## build etcd, kube-apiserver and kubectl (v1.36.3) from the Go module proxy into _bin/controlplane/ (4-6 min cold, cached)
	./hack/controlplane.sh build

controlplane-up: ## start etcd + kube-apiserver on loopback; prints the KUBECONFIG to use
	./hack/controlplane.sh up

controlplane-down: ## stop the local control plane
	./hack/controlplane.sh down

containerd-up: ## install (Debian) and start containerd with CRI under _run/containerd/, import localhost/busybox:local and localhost/pause:local
	./hack/containerd.sh up

containerd-down: ## remove leftover pods and stop that containerd
	./hack/containerd.sh down

image: ## a static binary as a local image: make image BIN=_bin/edgecore TAG=localhost/edgecore:local
	@test -n "$(BIN)" -a -n "$(TAG)" || { echo "usage: make image BIN=<static binary> TAG=localhost/<name>:<tag>"; exit 2; }
	./hack/containerd.sh image $(BIN) $(TAG)

demo: build ## start cloudcore and edgecore locally and show them working
	./hack/demo.sh

demo-stop: ## stop what make demo started
	./hack/demo.sh stop

clean: ## remove build output and run state
	rm -rf $(BIN) _out _run

.PHONY: images deb helm
images: ## release images: static cloudcore and edgecore as OCI archives in _out/images, tagged with VERSION (hack/images.sh)
	./hack/images.sh --version $(VERSION)

deb: ## the kedge-edgecore .deb in _out/ (dpkg-deb; hack/deb.sh)
	./hack/deb.sh --version $(VERSION)

helm: ## the Helm CLI from the Go module proxy (hack/helm.sh); e.g. hack/helm.sh lint deploy/helm/kedge
	./hack/helm.sh build
