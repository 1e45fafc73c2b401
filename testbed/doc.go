// Package testbed holds the QEMU testbed's tests: emulated arm64 devices
// booting the device image (firmware/image) with systemd and the real
// edge agent, driven by an in-process fleetd on loopback. The library that
// boots and controls the devices is testbed/qemu; the smoke test
// (TestSmoke, part of make test) boots one device and gets one inference
// through a bundle fleetd assigned. See docs/device-image.md.
package testbed
