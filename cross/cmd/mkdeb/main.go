// Command mkdeb builds the edge-agent Debian package for one architecture
// (see package cross/deb for what it holds):
//
//	go run ./cross/cmd/mkdeb --arch arm64 --version 0.1.0+87ce2c3 \
//	    --binary dist/linux-arm64/edge-agent \
//	    --ort .cache/deps/onnxruntime/linux-arm64/libonnxruntime.so.1 \
//	    --out dist
//
// It prints the path of the package it wrote. `make cross` runs it for
// amd64 and arm64. File times come from --mtime (Unix seconds), else
// $SOURCE_DATE_EPOCH, else now; the same inputs and time give the same
// bytes.
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/edgefleet/edgefleet/cross/deb"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mkdeb:", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("mkdeb", flag.ContinueOnError)
	var p deb.Package
	fs.StringVar(&p.Arch, "arch", "", "Go architecture of the package: amd64 or arm64 (required)")
	fs.StringVar(&p.Version, "version", "", "agent semantic version, as stamped with -ldflags, e.g. 0.1.0+87ce2c3 (required)")
	fs.StringVar(&p.Binary, "binary", "", "edge-agent executable built for --arch (required)")
	fs.StringVar(&p.ORTLibrary, "ort", "", "libonnxruntime.so.1 for --arch (default .cache/deps/onnxruntime/linux-ARCH/libonnxruntime.so.1)")
	fs.StringVar(&p.Unit, "unit", "firmware/edge-agent.service", "systemd unit file")
	fs.StringVar(&p.Config, "config", "firmware/edge-agent.yaml", "default configuration, installed as "+deb.ConfigPath)
	out := fs.String("out", "dist", "directory for the package")
	mtime := fs.String("mtime", os.Getenv("SOURCE_DATE_EPOCH"), "file times, Unix seconds (default $SOURCE_DATE_EPOCH, else now)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for name, v := range map[string]string{"--arch": p.Arch, "--version": p.Version, "--binary": p.Binary} {
		if v == "" {
			return fmt.Errorf("%s is required", name)
		}
	}
	if p.ORTLibrary == "" {
		cache := os.Getenv("EDGEFLEET_CACHE")
		if cache == "" {
			cache = ".cache/deps"
		}
		p.ORTLibrary = cache + "/onnxruntime/linux-" + p.Arch + "/libonnxruntime.so.1"
	}
	if *mtime != "" {
		sec, err := strconv.ParseInt(*mtime, 10, 64)
		if err != nil || sec < 0 {
			return fmt.Errorf("--mtime %q: want Unix seconds", *mtime)
		}
		p.MTime = time.Unix(sec, 0)
	}
	path, err := deb.Build(log, p, *out)
	if err != nil {
		return err
	}
	fmt.Println(path)
	return nil
}
