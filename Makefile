# edgefleet: ship ML models to fleets of edge devices.
# `make demo` sets up and runs the main job; `make test` runs every test.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/edgefleet/edgefleet/shared/version.Version=0.1.0+$(VERSION)
BIN := bin
TOOLS := $(CURDIR)/.cache/tools/bin
STATICCHECK := $(TOOLS)/staticcheck
SILERO_PRE := testbed/bundles/silero-vad/pre.wasm
SILERO_PRE_SRC := testbed/bundles/silero-vad/pre
# C processors: clang for wasm32-wasi (docs/wasm-abi.md, "Writing a processor
# in C"). The flags are testenv.WASMCFlags, which the tests build with (a
# test in shared/testenv checks that the two agree).
WASM_CC ?= clang
WASM_CFLAGS := --target=wasm32-wasi -O2 -msimd128 -std=c11 -Wall -Wextra -Werror -mexec-model=reactor -Wl,--stack-first -Wl,-z,stack-size=16384 -Wl,--strip-debug
WASM_PACKAGES := clang lld wasi-libc libclang-rt-dev-wasm32
TEST_TIMEOUT ?= 25m

export EDGEFLEET_CACHE ?= $(CURDIR)/.cache/deps

.PHONY: all setup setup-demo setup-test deps tools wasm build test lint fmt vet staticcheck tidy bench demo demo-test clean console-assets

all: build

# As root (every machine here), make demo and make test install what they
# need through scripts/setup.sh first; as anyone else they check and stop
# with the one command to run. Quiet when everything is present.
SETUP := $(if $(filter 0,$(shell id -u)),scripts/setup.sh,scripts/setup.sh --check)

## setup: install every Debian package and pinned tool make demo and make test need (root; idempotent)
setup:
	scripts/setup.sh test

setup-demo:
	@$(SETUP) demo

setup-test:
	@$(SETUP) test

## deps: fetch the pinned ONNX Runtime libraries and the Silero VAD model (.cache/deps)
deps:
	scripts/deps.sh

## tools: install pinned Go tools (cosign, staticcheck, minio) into .cache/tools/bin
tools:
	scripts/tools.sh

.PHONY: proto
## proto: regenerate the agent's gRPC API code (agent/api/oipgrpc) from KServe's grpc_predict_v2.proto (protoc, pinned plugins)
proto: tools
	scripts/proto.sh

## wasm: build the example WASM pre-processor (C with clang for wasm32-wasi; a Go one with GOOS=wasip1)
wasm: $(SILERO_PRE)

ifneq ($(wildcard $(SILERO_PRE_SRC)/*.c),)
$(SILERO_PRE): $(wildcard $(SILERO_PRE_SRC)/*.c $(SILERO_PRE_SRC)/*.h)
	@command -v $(WASM_CC) >/dev/null || { echo "make wasm: $(WASM_CC) not found: apt-get install $(WASM_PACKAGES)" >&2; exit 1; }
	$(WASM_CC) $(WASM_CFLAGS) -o $@.tmp $(filter %.c,$^) || { echo "make wasm: clang for wasm32-wasi needs the Debian packages $(WASM_PACKAGES)" >&2; exit 1; }
	mv $@.tmp $@
else
$(SILERO_PRE): $(wildcard $(SILERO_PRE_SRC)/*.go $(SILERO_PRE_SRC)/frame/*.go shared/processor/guest/*.go shared/tensor/*.go)
	GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0 $(GO) build -buildmode=c-shared -trimpath -o $@ ./$(SILERO_PRE_SRC)
endif

## build: the binaries, into bin/
build: deps wasm
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./agent/cmd/edge-agent ./controlplane/cmd/fleetd ./controlplane/cmd/fleetctl

## test: every test (unit, integration against real components)
test: setup-test
	@$(MAKE) --no-print-directory wasm lint
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

## lint: gofmt, go vet, staticcheck, go mod tidy leaves go.mod and go.sum as they are
lint: fmt vet staticcheck tidy

tidy:
	$(GO) mod tidy -diff

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck: tools
	$(STATICCHECK) ./...

## bench: every benchmark, then the side-by-side table of our paths against their peers (testbed/cmd/benchtable; docs/operations.md says what each line means)
bench: setup-test
	@$(MAKE) --no-print-directory wasm
	$(GO) test -run '^$$' -bench . -benchmem -count 1 -timeout 30m ./... | tee .cache/bench.txt
	$(GO) run ./testbed/cmd/benchtable --rounds 3 | tee .cache/bench-table.txt

## demo: the end-to-end product demo, about 2½ minutes after the build (testbed/cmd/demo; workspace in .cache/demo/TIME)
demo: setup-demo
	@$(MAKE) --no-print-directory build
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./testbed/cmd/demo
	$(BIN)/demo --repo $(CURDIR) --bin $(CURDIR)/$(BIN) $(DEMO_FLAGS)

## console-assets: copy the web console's vendored browser libraries (htmx, its SSE extension, Chart.js) from the npm packages pinned in controlplane/console/web/package-lock.json
console-assets:
	scripts/npm-apps.sh console
	cp $(CURDIR)/.cache/console-web/node_modules/htmx.org/dist/htmx.min.js \
	   $(CURDIR)/.cache/console-web/node_modules/htmx-ext-sse/dist/sse.min.js \
	   $(CURDIR)/.cache/console-web/node_modules/chart.js/dist/chart.umd.min.js controlplane/console/static/vendor/
	cp .cache/console-web/node_modules/htmx.org/LICENSE controlplane/console/static/vendor/licenses/htmx.org.LICENSE
	cp .cache/console-web/node_modules/htmx-ext-sse/LICENSE controlplane/console/static/vendor/licenses/htmx-ext-sse.LICENSE
	cp .cache/console-web/node_modules/chart.js/LICENSE.md controlplane/console/static/vendor/licenses/chart.js.LICENSE.md

## demo-test: run the demo end to end, and interrupted twice, checking its exit status and that nothing it started survives (about 4 minutes; not part of make test)
demo-test: build
	$(GO) test -count=1 -v -timeout 15m -tags demotest -run '^TestDemo' ./testbed/cmd/demo/ -args -demo.bin=$(CURDIR)/$(BIN)

clean:
	rm -rf $(BIN) $(SILERO_PRE)

# Cross builds and Debian packages of the edge agent (cross/README.md).
DIST := dist
CROSS_ARCHES := amd64 arm64
CROSS_CC_amd64 := x86_64-linux-gnu-gcc
CROSS_CC_arm64 := aarch64-linux-gnu-gcc
# The version LDFLAGS stamps into the binaries (what follows its last '='),
# so a package carries the version of the agent inside it.
AGENT_VERSION = $(lastword $(subst =, ,$(LDFLAGS)))
# File times inside the packages: the last commit's, so rebuilding a commit
# gives the same bytes.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || date +%s)

.PHONY: cross $(CROSS_ARCHES:%=cross-%) cross-check deb-install-check clean-cross

## cross: edge-agent for linux/arm64 (cgo through aarch64-linux-gnu-gcc) and linux/amd64, and a Debian package of each, into dist/
cross: $(CROSS_ARCHES:%=cross-%)

$(CROSS_ARCHES:%=cross-%): cross-%: deps
	@mkdir -p $(DIST)/linux-$*
	CGO_ENABLED=1 GOOS=linux GOARCH=$* CC=$(CROSS_CC_$*) $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(DIST)/linux-$*/edge-agent ./agent/cmd/edge-agent
	rm -f $(DIST)/edge-agent_*_$*.deb
	$(GO) run ./cross/cmd/mkdeb --arch $* --version '$(AGENT_VERSION)' --binary $(DIST)/linux-$*/edge-agent --mtime $(SOURCE_DATE_EPOCH) --out $(DIST)

## cross-check: the arm64 package's agent under qemu-aarch64-static answers the Silero bundle like the amd64 one (within 1e-4); latencies of both
CROSS_REPEAT ?= 10
cross-check: cross build
	$(GO) test -count=1 -v -timeout 20m -run '^TestCross' ./cross/ -args -cross.dist=$(CURDIR)/$(DIST) -cross.fleetctl=$(CURDIR)/$(BIN)/fleetctl -cross.repeat=$(CROSS_REPEAT)
	cross/bench.sh $(DIST)/bench

## deb-install-check: apt install the amd64 package on this machine, check it, purge it (root; it really installs)
deb-install-check: cross-amd64 build
	cross/install-check.sh $(DIST)/edge-agent_*_amd64.deb $(BIN)/fleetctl

clean: clean-cross
clean-cross:
	rm -rf $(DIST)

# The arm64 device image and the QEMU testbed (docs/device-image.md).
IMAGE_CACHE := .cache/image

.PHONY: image testbed-smoke

## image: the arm64 device image (Debian bookworm, systemd, cloud kernel, the agent's package) into .cache/image (root; minutes cold, seconds when cached)
image: cross-arm64
	firmware/image/build.sh --deb $(DIST)/edge-agent_*_arm64.deb --cache $(IMAGE_CACHE)

## testbed-smoke: boot one emulated arm64 device, let fleetd give it the Silero bundle, get one inference; then a network cut, a power cut and a reboot, and latency against a native agent (root)
testbed-smoke: deps wasm
	$(GO) test -count=1 -v -timeout 30m -run '^TestSmoke$$' ./testbed/ -args -testbed.compare -testbed.lifecycle

.PHONY: testbed
TESTBED_DEVICES ?= 3
TESTBED_CUT ?= 2m

## testbed: boot TESTBED_DEVICES emulated arm64 devices against one fleetd and run the scenarios: first deployment, staged rollout, bad version rolled back, network cut (TESTBED_CUT), power cut mid-install (root; ~15-25 minutes)
testbed: deps wasm
	$(GO) test -count=1 -v -tags testbed -timeout 60m -run '^TestScenarios$$' ./testbed/ -args -testbed.devices=$(TESTBED_DEVICES) -testbed.cut=$(TESTBED_CUT)
