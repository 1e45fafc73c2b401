#!/usr/bin/env bash
# npm-apps.sh installs the project's pinned Node.js apps from npm, each
# from its committed package-lock.json (exact versions and sha512
# integrity), with `npm ci --ignore-scripts` into .cache/NAME:
#
#   ortpeer  onnxruntime-node 1.24.1, the peer `make bench` compares the
#            agent with: a JavaScript app running Silero VAD in process
#            (testbed/bench/ortpeer). Install scripts stay off: its own
#            would fetch CUDA libraries from outside the npm registry.
#   duckdb   @duckdb/node-api with its prebuilt engine, the independent
#            Parquet reader the sample tests read fleetd's files back with
#            (testbed/duckdb).
#   playwright  playwright-core, which the browser tests (testbed/browser)
#            drive Debian's chromium with (scripts/setup.sh installs it).
#            It is the core package only: it downloads no browser, and
#            playwright-core has no install script to turn off.
#   console  htmx, its SSE extension and Chart.js, the browser libraries
#            the web console vendors (controlplane/console/static/vendor):
#            `make console-assets` copies them from here, and a test
#            checks the vendored copies against them.
#
# Usage: scripts/npm-apps.sh [NAME...]           install what is not installed from its lockfile
#        scripts/npm-apps.sh --check [NAME...]   exit 1 unless all are; print the missing
# No NAME means all of them. EDGEFLEET_ORTPEER, EDGEFLEET_DUCKDB and
# EDGEFLEET_PLAYWRIGHT move an install elsewhere.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)

# name|source dir with package.json and package-lock.json|package whose
# package.json shows it is installed|install dir
apps=(
  "ortpeer|testbed/bench/ortpeer|onnxruntime-node|${EDGEFLEET_ORTPEER:-$root/.cache/ortpeer}"
  "duckdb|testbed/duckdb|@duckdb/node-api|${EDGEFLEET_DUCKDB:-$root/.cache/duckdb}"
  "playwright|testbed/browser|playwright-core|${EDGEFLEET_PLAYWRIGHT:-$root/.cache/playwright}"
  "console|controlplane/console/web|chart.js|${EDGEFLEET_CONSOLE_WEB:-$root/.cache/console-web}"
)

die() { echo "npm-apps: $*" >&2; exit 1; }

check=
if [ "${1:-}" = "--check" ]; then check=1; shift; fi
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for a in "${apps[@]}"; do names+=("${a%%|*}"); done
fi

missing=0
for name in "${names[@]}"; do
  app=
  for a in "${apps[@]}"; do [ "${a%%|*}" = "$name" ] && app=$a; done
  [ -n "$app" ] || die "unknown app $name (usage: scripts/npm-apps.sh [--check] [ortpeer|duckdb|playwright|console ...])"
  IFS='|' read -r _ src pkg dest <<<"$app"
  src=$root/$src
  if [ -f "$dest/node_modules/$pkg/package.json" ] && cmp -s "$src/package-lock.json" "$dest/package-lock.json"; then
    continue
  fi
  if [ -n "$check" ]; then
    echo "$name"
    missing=1
    continue
  fi
  command -v npm >/dev/null || die "npm is required (scripts/setup.sh installs it)"
  mkdir -p "$dest"
  cp "$src/package.json" "$src/package-lock.json" "$dest/"
  echo "npm-apps: npm ci $pkg into $dest" >&2
  (cd "$dest" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null) ||
    die "npm ci in $dest failed"
done
exit $missing
