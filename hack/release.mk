# Release builds (included by the Makefile): stripped (-s -w), -trimpath, version-stamped, static
# binaries of cloudcore and of edgecore per device class (hack/classes.mk, generated from
# cmd/modules.yaml), for linux/amd64, linux/arm64 and linux/arm (v7). SQLite is cgo: the arm builds
# use Debian's cross compilers (apt-get install gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf).
#   make release                       everything into _bin/release/ (+ SHA256SUMS)
#   make release-edgecore-gateway-arm64  one binary
RELEASE_DIR ?= $(BIN)/release
RELEASE_ARCHES ?= amd64 arm64 arm
# Static and self-contained: the pure-Go resolver and user lookup, SQLite without dlopen; gRPC without
# golang.org/x/net/trace (its template rendering turns off the linker's dead-method elimination).
RELEASE_TAGS := netgo osusergo sqlite_omit_load_extension grpcnotrace
RELEASE_LDFLAGS = -s -w $(LDFLAGS) -linkmode external -extldflags "-static"
CC_amd64 ?= gcc
CC_arm64 ?= aarch64-linux-gnu-gcc
CC_arm ?= arm-linux-gnueabihf-gcc
# C (the SQLite amalgamation) optimised for size: -Os instead of cgo's default -O2 -g (0.35 MiB less).
RELEASE_CGO_CFLAGS ?= -Os
release_env = CGO_ENABLED=1 GOOS=linux GOARCH=$(1) $(if $(filter arm,$(1)),GOARM=7) CC=$(CC_$(1)) CGO_CFLAGS="$(RELEASE_CGO_CFLAGS)"

RELEASE_BINARIES := $(foreach a,$(RELEASE_ARCHES),cloudcore-$(a) $(foreach c,$(CLASSES),edgecore-$(c)-$(a)))

.PHONY: release release-check-cc $(addprefix release-,$(RELEASE_BINARIES))

release: $(addprefix release-,$(RELEASE_BINARIES)) ## stripped, static, version-stamped cloudcore + edgecore per class for linux amd64/arm64/arm (v7) into _bin/release/
	@cd $(RELEASE_DIR) && sha256sum $(RELEASE_BINARIES) > SHA256SUMS && ls -l $(RELEASE_BINARIES)

release-check-cc-%:
	@command -v $(CC_$*) >/dev/null || { echo "release: $(CC_$*) not found (linux/$* cgo SQLite): apt-get install -y gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf" >&2; exit 2; }

$(foreach a,$(RELEASE_ARCHES),$(eval release-cloudcore-$(a): release-check-cc-$(a) ; @mkdir -p $(RELEASE_DIR) && $(call release_env,$(a)) $(GO) build -trimpath -tags "$(RELEASE_TAGS)" -ldflags '$(RELEASE_LDFLAGS)' -o $(RELEASE_DIR)/cloudcore-$(a) ./cmd/cloudcore && echo "release: $(RELEASE_DIR)/cloudcore-$(a)"))
$(foreach a,$(RELEASE_ARCHES),$(foreach c,$(CLASSES),$(eval release-edgecore-$(c)-$(a): release-check-cc-$(a) ; @mkdir -p $(RELEASE_DIR) && $(call release_env,$(a)) $(GO) build -trimpath -tags "$(CLASS_TAGS_$(c)) $(RELEASE_TAGS)" -ldflags '$(RELEASE_LDFLAGS) -X github.com/kedge-io/kedge/host/modules.Class=$(c)' -o $(RELEASE_DIR)/edgecore-$(c)-$(a) ./cmd/edgecore && echo "release: $(RELEASE_DIR)/edgecore-$(c)-$(a)")))
