package main

import "syscall"

// childAttr puts a child in a process group of its own and has the
// kernel send it SIGTERM if the demo dies first (the parent-death signal
// follows the thread that started the child; Go keeps its threads alive
// unless a goroutine locked to one exits, which the demo never does).
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
