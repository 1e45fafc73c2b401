#!/usr/bin/env bash
# tools.sh installs the pinned Go developer tools the project's tests and
# checks run against into .cache/tools/bin (GOBIN). A tool that is already
# there at the pinned version is left alone; any other version is rebuilt.
#
#   cosign       sigstore's signing CLI: the bundle interop tests verify our
#                signatures with it and verify its signatures with ours.
#   staticcheck  the linter every package must be clean against.
#   minio        S3-compatible object store: the controlplane/registry S3
#                tests start a real server from it (the build takes minutes).
#   protoc-gen-go, protoc-gen-go-grpc
#                protoc's Go and gRPC plugins: make proto, and the test that
#                the generated code of agent/api/oipgrpc is current.
#   grpcurl      a gRPC client from the command line: the agent's gRPC API
#                tests call it as an operator would.
#
# Usage: scripts/tools.sh            install what is missing
#        scripts/tools.sh --print    print the pinned tools, install nothing
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${EDGEFLEET_TOOLS:-$root/.cache/tools/bin}

# name|module path of the main package|version
tools=(
  "cosign|github.com/sigstore/cosign/v2/cmd/cosign|v2.6.5"
  "staticcheck|honnef.co/go/tools/cmd/staticcheck|v0.8.2"
  "minio|github.com/minio/minio|v0.0.0-20260212201848-7aac2a2c5b7c"
  "protoc-gen-go|google.golang.org/protobuf/cmd/protoc-gen-go|v1.36.12"
  "protoc-gen-go-grpc|google.golang.org/grpc/cmd/protoc-gen-go-grpc|v1.6.2"
  "grpcurl|github.com/fullstorydev/grpcurl/cmd/grpcurl|v1.9.4"
)

die() { echo "tools: $*" >&2; exit 1; }

if [ "${1:-}" = "--print" ]; then
  printf '%s\n' "${tools[@]}"
  exit 0
fi

command -v go >/dev/null || die "go is required"
mkdir -p "$bin"

# installed_version BIN: the main module version recorded in a Go binary.
installed_version() {
  go version -m "$1" 2>/dev/null | awk '$1 == "mod" { print $3; exit }'
}

# current NAME VERSION: whether the installed tool is at the pinned version.
current() {
  [ -x "$bin/$1" ] && [ "$(installed_version "$bin/$1")" = "$2" ]
}

if [ "${1:-}" = "--missing" ]; then
  for t in "${tools[@]}"; do
    IFS='|' read -r name _ version <<<"$t"
    current "$name" "$version" || echo "$name"
  done
  exit 0
fi

for t in "${tools[@]}"; do
  IFS='|' read -r name pkg version <<<"$t"
  if current "$name" "$version"; then
    continue
  fi
  echo "tools: installing $pkg@$version into $bin" >&2
  # GOFLAGS is cleared so that a workspace-wide -mod= setting does not leak
  # into the tool's own module; GOTOOLCHAIN=local refuses a silent toolchain
  # download when a version needs a newer Go than the one installed.
  GOBIN=$bin GOFLAGS= GOTOOLCHAIN=local go install "$pkg@$version" ||
    die "installing $pkg@$version failed"
done

