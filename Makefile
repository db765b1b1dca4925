# Kedge — run `make help` for the targets.
SHELL := /bin/bash
GO ?= go
BIN := _bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/kedge-io/kedge/host/daemon.Version=$(VERSION)
# Packages benchmarked by `make bench` (each hot path an issue names).
BENCH_PKGS ?= ./host/message/ ./host/router/ ./host/store/ ./host/hub/ ./host/modules/ ./host/process/ ./sdk/sdktest/ ./wasm/runtime/ ./test/hublink/ ./test/kubebench/ ./test/edgedbench/ ./plugins/builtin/devicetwin/ ./plugins/builtin/dmi/ ./test/mapperbench/ ./test/streambench/ ./plugins/builtin/metamanager/
FUZZTIME ?= 20s

.PHONY: bench-scale containerd-up containerd-down image controlplane controlplane-up controlplane-down help generate build wasm test test-short test-under-load lint bench fuzz demo demo-stop clean classes edgecore-full edgecore-gateway edgecore-minimal edgecore-%

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

# Device classes: the builtin modules each edgecore build carries; anything else runs as a process or
# WASM plugin. `make classes` builds them and records size and idle memory in BENCHMARKS.md.
CLASS_full    := all builtin modules
CLASS_gateway := metamanager,nodestatus,edgehub,eventbus,devicetwin,dmi,noruntime,process,wasm
CLASS_minimal := metamanager,edgehub,process,wasm

edgecore-full: ## edgecore with every builtin module (same as make build)
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/edgecore-full ./cmd/edgecore

edgecore-gateway edgecore-minimal: edgecore-%: ## edgecore for a device class (gateway: no edged; minimal: hub + meta only)
	@mkdir -p $(BIN)
	$(GO) build -trimpath -tags "kedge_custom $(foreach m,$(subst $(comma), ,$(CLASS_$*)),kedge_$(m))" -ldflags "$(LDFLAGS)" -o $(BIN)/edgecore-$* ./cmd/edgecore

classes: ## build every device class and record binary size and idle RSS in BENCHMARKS.md
	./hack/classes.sh

edgecore-%: ## trimmed edgecore with only the named builtin modules, e.g. make edgecore-metamanager,nodestatus
	@mkdir -p $(BIN)
	$(GO) build -trimpath -tags "kedge_custom $(foreach m,$(subst $(comma), ,$*),kedge_$(m))" -ldflags "$(LDFLAGS)" -o $(BIN)/edgecore-$* ./cmd/edgecore
comma := ,

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
bench-scale: ## hollow-node ladder (SCALE_SIZES, default 1k/5k/10k) on one cloudcore with a real kube-apiserver + etcd; table in BENCHMARKS.md
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
