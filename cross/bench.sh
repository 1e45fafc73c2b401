#!/usr/bin/env bash
# bench.sh: inference latency of the edge agent's model path for arm64
# under qemu-user beside amd64 native, from the project's own benchmarks:
# shared/model's BenchmarkSilero (bare onnxruntime_go, model.Infer on
# tensors and on raw PCM through the WASM pre-processor) and agent/api's
# BenchmarkInfer (in process and over the unix socket). Each package's test
# binary is built for both architectures (arm64 with cgo through
# aarch64-linux-gnu-gcc) and run with the same flags; the arm64 one finds
# the arm64 ONNX Runtime in .cache/deps by its own GOARCH.
#
# Usage: cross/bench.sh [OUTDIR]   (default dist/bench; run from the repository root)
# Environment: BENCHTIME (default 2s), COUNT (default 1).
#
# qemu-user translates every arm64 instruction: the arm64 figures say how
# much slower emulation is (useful to size test timeouts), not how fast a
# real Cortex-A72/A76 or Jetson is.
set -euo pipefail

out=${1:-dist/bench}
benchtime=${BENCHTIME:-2s}
count=${COUNT:-1}
root=$(pwd)
[ -f go.mod ] || { echo "bench.sh: run from the repository root" >&2; exit 1; }
command -v qemu-aarch64-static >/dev/null || { echo "bench.sh: qemu-aarch64-static missing (apt-get install qemu-user-static)" >&2; exit 1; }
command -v aarch64-linux-gnu-gcc >/dev/null || { echo "bench.sh: aarch64-linux-gnu-gcc missing (apt-get install gcc-aarch64-linux-gnu)" >&2; exit 1; }
mkdir -p "$out"

# package:benchmark-regexp
benches=(
  "shared/model:^BenchmarkSilero$"
  "agent/api:^BenchmarkInfer$"
)

for b in "${benches[@]}"; do
  pkg=${b%%:*} re=${b#*:} name=${pkg//\//-}
  echo "bench: building $pkg test binaries (amd64, arm64)" >&2
  CGO_ENABLED=1 GOARCH=amd64 CC=x86_64-linux-gnu-gcc go test -c -o "$out/$name.amd64.test" "./$pkg"
  CGO_ENABLED=1 GOARCH=arm64 CC=aarch64-linux-gnu-gcc go test -c -o "$out/$name.arm64.test" "./$pkg"
  for arch in amd64 arm64; do
    bin=$root/$out/$name.$arch.test
    run=("$bin")
    [ "$arch" = amd64 ] || run=(qemu-aarch64-static -L /usr/aarch64-linux-gnu "$bin")
    echo "== $pkg $re, linux/$arch $([ "$arch" = amd64 ] && echo native || echo 'under qemu-aarch64-static')"
    # Tests look for testdata relative to their package directory.
    log=$root/$out/$name.$arch.txt
    if ! (cd "$pkg" && "${run[@]}" -test.run '^$' -test.bench "$re" -test.benchtime "$benchtime" -test.count "$count" -test.benchmem) >"$log" 2>&1; then
      cat "$log" >&2
      echo "bench.sh: $pkg benchmarks failed on $arch (log: $log)" >&2
      exit 1
    fi
    grep -E '^(Benchmark|goarch|cpu)' "$log"
  done
done
