#!/usr/bin/env bash
# proto.sh generates the Go code of the agent's gRPC API (agent/api/oipgrpc)
# from KServe's grpc_predict_v2.proto with Debian's protoc and the pinned
# protoc-gen-go and protoc-gen-go-grpc (scripts/tools.sh). make proto runs
# it; a test in agent/api/oipgrpc runs it into a temporary directory and
# checks that the committed files are what it gives.
#
# Usage: scripts/proto.sh [OUTDIR]   (default: agent/api/oipgrpc)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${EDGEFLEET_TOOLS:-$root/.cache/tools/bin}
src=$root/agent/api/oipgrpc
out=${1:-$src}
pkg=github.com/edgefleet/edgefleet/agent/api/oipgrpc

die() { echo "proto: $*" >&2; exit 1; }
command -v protoc >/dev/null || die "protoc not found: sudo scripts/setup.sh test (Debian package protobuf-compiler)"
for p in protoc-gen-go protoc-gen-go-grpc; do
  [ -x "$bin/$p" ] || die "$bin/$p not found: scripts/tools.sh"
done
mkdir -p "$out"
# The Go package is given here (M option), so the .proto stays KServe's.
protoc -I "$src" \
  --plugin=protoc-gen-go="$bin/protoc-gen-go" \
  --plugin=protoc-gen-go-grpc="$bin/protoc-gen-go-grpc" \
  --go_out="$out" --go_opt=paths=source_relative --go_opt=Mgrpc_predict_v2.proto=$pkg \
  --go-grpc_out="$out" --go-grpc_opt=paths=source_relative --go-grpc_opt=Mgrpc_predict_v2.proto=$pkg \
  grpc_predict_v2.proto
