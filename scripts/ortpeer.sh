#!/usr/bin/env bash
# ortpeer.sh installs the peer `make bench` compares the agent with:
# onnxruntime-node 1.24.1 from npm, as a JavaScript app on the device would
# run Silero VAD in process (testbed/bench/ortpeer). npm ci installs exactly
# what testbed/bench/ortpeer/package-lock.json pins (versions and sha512
# integrity), without install scripts (onnxruntime-node's would fetch CUDA
# libraries from outside the npm registry), into .cache/ortpeer.
#
# Usage: scripts/ortpeer.sh           install, unless installed from this lockfile
#        scripts/ortpeer.sh --check   exit 1 unless installed from this lockfile
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
src=$root/testbed/bench/ortpeer
dest=${EDGEFLEET_ORTPEER:-$root/.cache/ortpeer}

die() { echo "ortpeer: $*" >&2; exit 1; }

installed() {
  [ -f "$dest/node_modules/onnxruntime-node/package.json" ] &&
    cmp -s "$src/package-lock.json" "$dest/package-lock.json"
}

if [ "${1:-}" = "--check" ]; then
  installed
  exit
fi
[ $# -eq 0 ] || die "usage: scripts/ortpeer.sh [--check]"

installed && exit 0
command -v npm >/dev/null || die "npm is required (scripts/setup.sh installs it)"
mkdir -p "$dest"
cp "$src/package.json" "$src/package-lock.json" "$dest/"
echo "ortpeer: npm ci onnxruntime-node into $dest" >&2
(cd "$dest" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null) ||
  die "npm ci in $dest failed"
