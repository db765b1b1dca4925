#!/usr/bin/env bash
# Regenerates the Go code for sdk/proto/module.proto and the DMI (sdk/dmi/v1beta1/api.proto)
# (called by `make generate`). The generated files
# are committed, so a build never needs protoc. Needs protoc (Debian: apt-get install protobuf-compiler);
# the Go plugins are pinned below and installed once into .cache/protoc-gen/<versions>/.
set -euo pipefail
cd "$(dirname "$0")/.."

PROTOC_GEN_GO=v1.36.10     # google.golang.org/protobuf/cmd/protoc-gen-go
PROTOC_GEN_GO_GRPC=v1.6.2  # google.golang.org/grpc/cmd/protoc-gen-go-grpc

if ! command -v protoc >/dev/null; then
  echo "generate: protoc not found: apt-get install -y protobuf-compiler" >&2
  exit 1
fi
bin="$PWD/.cache/protoc-gen/go-$PROTOC_GEN_GO-grpc-$PROTOC_GEN_GO_GRPC"
if [[ ! -x $bin/protoc-gen-go || ! -x $bin/protoc-gen-go-grpc ]]; then
  mkdir -p "$bin"
  GOBIN="$bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO"
  GOBIN="$bin" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC"
fi

PATH="$bin:$PATH" protoc -I sdk/proto \
  --go_out=sdk/proto --go_opt=paths=source_relative \
  --go-grpc_out=sdk/proto --go-grpc_opt=paths=source_relative \
  sdk/proto/module.proto
# The DMI between edgecore and device mappers (KubeEdge-compatible v1beta1).
PATH="$bin:$PATH" protoc -I sdk/dmi \
  --go_out=sdk/dmi --go_opt=paths=source_relative \
  --go-grpc_out=sdk/dmi --go-grpc_opt=paths=source_relative \
  sdk/dmi/v1beta1/api.proto
echo "generate: sdk/dmi/v1beta1/api.pb.go, sdk/dmi/v1beta1/api_grpc.pb.go"
echo "generate: sdk/proto/module.pb.go, sdk/proto/module_grpc.pb.go ($(protoc --version), protoc-gen-go $PROTOC_GEN_GO, protoc-gen-go-grpc $PROTOC_GEN_GO_GRPC)"
