// Package cross holds the edge agent's cross builds and Debian packages:
// `make cross` builds edge-agent for linux/arm64 (cgo through Debian's
// aarch64-linux-gnu-gcc) and linux/amd64 and packages each with
// cross/deb; `make cross-check` runs this package's tests against those
// packages: the arm64 agent under qemu-user must answer the signed Silero
// VAD bundle like the amd64 one. See README.md.
package cross
