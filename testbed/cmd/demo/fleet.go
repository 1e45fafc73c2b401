package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
)

// fleetctl runs bin/fleetctl in the workspace, showing the command and
// what it prints: its output, and its own notes on stderr (not the ONNX
// Runtime library's logging, which goes to logs/demo.log with the rest).
func (d *demo) fleetctl(ctx context.Context, args ...string) (result, error) {
	d.n.Cmd(append([]string{"fleetctl"}, args...))
	res, err := d.sup.Run(ctx, d.work, d.childEnv(), append([]string{filepath.Join(d.cfg.Bin, "fleetctl")}, args...)...)
	d.show(res, "fleetctl:")
	return res, err
}

// fleetctlSecret is fleetctl for a command whose output holds a secret:
// only its notes on stderr are shown.
func (d *demo) fleetctlSecret(ctx context.Context, args ...string) (result, error) {
	d.n.Cmd(append([]string{"fleetctl"}, args...))
	res, err := d.sup.Run(ctx, d.work, d.childEnv(), append([]string{filepath.Join(d.cfg.Bin, "fleetctl")}, args...)...)
	d.show(result{Stderr: res.Stderr}, "fleetctl:")
	return res, err
}

// show prints a command's stdout, and the stderr lines that start with
// prefix.
func (d *demo) show(res result, prefix string) {
	for line := range lines(res.Stdout) {
		d.n.Out(line)
	}
	if prefix == "" {
		return
	}
	for line := range lines(res.Stderr) {
		if strings.HasPrefix(line, prefix) {
			d.n.Out(line)
		}
	}
}

// fleetJSON runs fleetctl ARGS -o json without showing it and decodes
// what it prints into v: how the demo follows what fleetd says (the same
// objects as the API's, controlplane/api).
func (d *demo) fleetJSON(ctx context.Context, v any, args ...string) error {
	argv := append([]string{filepath.Join(d.cfg.Bin, "fleetctl")}, args...)
	argv = append(argv, "-o", "json")
	res, err := d.sup.Run(ctx, d.work, d.childEnv(), argv...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(res.Stdout, v); err != nil {
		return fmt.Errorf("fleetctl %s -o json: decoding its output: %w", strings.Join(args, " "), err)
	}
	return nil
}

// lines yields the lines of b without their newlines.
func lines(b []byte) func(func(string) bool) {
	return func(yield func(string) bool) {
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if !yield(strings.TrimRight(sc.Text(), "\r")) {
				return
			}
		}
	}
}

// splitLines yields the trimmed lines of b.
func splitLines(b []byte) func(func(string) bool) {
	return func(yield func(string) bool) {
		for l := range lines(b) {
			if !yield(strings.TrimSpace(l)) {
				return
			}
		}
	}
}
