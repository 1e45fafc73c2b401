// Package qemu boots emulated arm64 edge devices from the edgefleet device
// image (firmware/image) under qemu-system-aarch64 and controls them, for
// the testbed's tests: start, wait until the agent is active under systemd,
// run commands in the guest, cut the network link, cut the power, shut down
// cleanly.
//
// # One machine
//
// A Machine boots a qcow2 overlay of the image's shared root filesystem
// (so devices share one base image and each keeps its own writes, across
// reboots and power cuts) and a small per-device seed disk (ext4, label
// EFSEED) that the image's edgefleet-seed.service applies before the agent
// starts: the hostname and /etc/edge-agent (configuration, MQTT password,
// publisher keys). The rest of the seed stays readable in the guest at
// /run/edgefleet/seed (SeedDir).
//
//	qemu-system-aarch64 -M virt -cpu max,pauth-impdef=on -smp 1 -m 512
//	  -kernel vmlinuz -initrd initrd.img -append "root=/dev/vda ro console=ttyAMA0 ..."
//	  -drive dev.qcow2 (virtio, backing file: the image's rootfs.img)
//	  -drive seed.img (virtio, read-only)
//	  -netdev user,restrict=on,guestfwd=tcp:10.0.2.100:PORT-cmd:relay 127.0.0.1:HOSTPORT ...
//	  -device virtserialport,name=org.edgefleet.cmd (the command channel)
//	  -serial file (console.log) -qmp unix socket
//
// # Network
//
// The guest's only network is QEMU's user-mode stack with restrict=on: it
// reaches neither this machine nor anything beyond it, except the host
// loopback services listed in Config.Forwards, each at FleetIP and a port
// of the test's choice (for example fleetd's MQTT broker at
// 10.0.2.100:1883 and its HTTP API at 10.0.2.100:8080). Every connection to
// such an address is handed to a relay process (the relay command in this
// directory, see BuildRelay) that dials the loopback address and refuses
// any other. SetLink takes the device's link down and up (a network cut).
//
// # Commands
//
// The host runs commands in the guest through a virtio-serial port, not
// the console: the testbed image runs a root shell on it
// (edgefleet-shell.service), so the serial console stays a clean log
// (kernel, systemd and, forwarded by journald, every service's log
// lines). Exec frames each command's combined output and exit status with
// markers; the console is never parsed.
//
// # Cleanup
//
// QEMU runs in its own process group with SIGKILL as its parent-death
// signal, so a test binary that dies (a timeout, an interrupt) takes its
// machines with it. Close kills a running machine and removes its sockets;
// the machine's files are in Config.Dir, which the caller owns (a
// t.TempDir in tests).
package qemu
