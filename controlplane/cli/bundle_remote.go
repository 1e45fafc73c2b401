package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/registry"
)

// progress is a progress bar of a transfer on stderr, drawn only when
// stderr is a terminal: into a pipe or a file nothing is written. A nil
// *progress is no bar.
type progress struct {
	bar *progressbar.ProgressBar
}

// newProgress starts a bar for size bytes, or returns nil when stderr is
// not a terminal.
func (a *app) newProgress(size int64, desc string) *progress {
	if size <= 0 || !isTerminal(a.stderr) {
		return nil
	}
	return &progress{bar: progressbar.NewOptions64(size,
		progressbar.OptionSetWriter(a.stderr),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionShowCount(),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetRenderBlankState(true),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(a.stderr) }),
	)}
}

// writer is what the transfer writes its bytes to (nil: none).
func (p *progress) writer() io.Writer {
	if p == nil {
		return nil
	}
	return barWriter{p.bar}
}

// done ends the bar: full on success; where it stopped on failure, with
// the line ended so that the error starts on a new one.
func (p *progress) done(err error) {
	switch {
	case p == nil:
	case err == nil:
		_ = p.bar.Finish()
	case !p.bar.IsFinished():
		_ = p.bar.Exit()
	}
}

// barWriter counts bytes on a bar and never fails: the bar's errors (more
// bytes than announced) must not fail the transfer.
type barWriter struct{ bar *progressbar.ProgressBar }

func (w barWriter) Write(b []byte) (int, error) {
	_ = w.bar.Add(len(b))
	return len(b), nil
}

func newBundlePushCmd(a *app) *cobra.Command {
	var rf remoteFlags
	var sigPath string
	out := &outputFlag{}
	cmd := &cobra.Command{
		Use:   "push FILE [--sig FILE.sig]",
		Short: "Upload a signed bundle to fleetd's registry",
		Long: `Upload FILE and its detached signature (default FILE.sig) to fleetd's
registry. fleetd refuses a bundle without a signature, or signed by none of
its trusted keys when it has some, and a different bundle under a
NAME@VERSION it already holds; pushing the same bundle again is a no-op.
On a terminal a progress bar on stderr shows the upload.`,
		Args: exactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if sigPath == "" {
				sigPath = args[0] + ".sig"
			}
			c, err := rf.client()
			if err != nil {
				return err
			}
			fi, err := os.Stat(args[0])
			if err != nil {
				return err
			}
			p := a.newProgress(fi.Size(), "pushing "+filepath.Base(args[0]))
			b, created, err := c.PushProgress(cmd.Context(), args[0], sigPath, p.writer())
			p.done(err)
			if err != nil {
				return err
			}
			if out.machine() {
				return out.write(a.stdout, struct {
					api.Bundle
					Created bool `json:"created"`
				}{*b, created})
			}
			what := "pushed"
			if !created {
				what = "already in the registry:"
			}
			verified := "signature NOT checked by fleetd (registry.insecureAcceptAnyKey)"
			if b.Verified {
				verified = "signature verified by fleetd"
			}
			_, err = fmt.Fprintf(a.stdout, "%s %s: %s, sha256 %s; %s\n", what, b.ID(), formatBytes(b.Size), b.SHA256, verified)
			return err
		},
	}
	cmd.Flags().StringVar(&sigPath, "sig", "", "signature file (default FILE.sig)")
	rf.register(cmd)
	out.register(cmd)
	return cmd
}

func newBundlePullCmd(a *app) *cobra.Command {
	var rf remoteFlags
	var file, sigPath string
	out := &outputFlag{}
	cmd := &cobra.Command{
		Use:   "pull NAME@VERSION [--out FILE] [--sig FILE.sig]",
		Short: "Download a bundle and its signature from fleetd's registry",
		Long: `Download NAME@VERSION from fleetd's registry into FILE (default
NAME-VERSION.bundle in the current directory) and its signature into
FILE.sig (or --sig). The file's size and sha256 must be the registry's;
each file is written atomically, replacing one that was there. The
signature is not checked here: fleetctl bundle verify --key signing.pub
FILE does. On a terminal a progress bar on stderr shows the download.`,
		Args: exactArgs("NAME@VERSION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, version, ok := strings.Cut(args[0], "@")
			if !ok || name == "" || version == "" || strings.ContainsAny(args[0], `/\`) {
				return usagef("bundle %q: want NAME@VERSION", args[0])
			}
			c, err := rf.client()
			if err != nil {
				return err
			}
			b, err := c.Bundle(cmd.Context(), name, version)
			if err != nil {
				return err
			}
			if file == "" {
				// From what was asked, not from fleetd's answer.
				file = registry.Entry{Name: name, Version: version}.FileName()
			}
			if sigPath == "" {
				sigPath = file + ".sig"
			}
			p := a.newProgress(b.Size, "pulling "+b.ID())
			err = c.Download(cmd.Context(), b, file, sigPath, p.writer())
			p.done(err)
			if err != nil {
				return err
			}
			if out.machine() {
				return out.write(a.stdout, pullResult{Entry: b.Entry, File: file, SigFile: sigPath})
			}
			_, err = fmt.Fprintf(a.stdout, "pulled %s: %s, sha256 %s; wrote %s and %s\n", b.ID(), formatBytes(b.Size), b.SHA256, file, sigPath)
			return err
		},
	}
	cmd.Flags().StringVar(&file, "out", "", "bundle file to write (default NAME-VERSION.bundle)")
	cmd.Flags().StringVar(&sigPath, "sig", "", "signature file to write (default FILE.sig)")
	rf.register(cmd)
	out.register(cmd)
	return cmd
}

// pullResult is what bundle pull prints with -o json or yaml.
type pullResult struct {
	registry.Entry
	// File and SigFile are the files written (Entry.Sig is the
	// signature itself).
	File    string `json:"file"`
	SigFile string `json:"sigFile"`
}

func newBundleListCmd(a *app) *cobra.Command {
	var rf remoteFlags
	out := &outputFlag{}
	cmd := &cobra.Command{
		Use:   "list [NAME]",
		Short: "List the bundles in fleetd's registry",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			c, err := rf.client()
			if err != nil {
				return err
			}
			list, err := c.Bundles(cmd.Context(), name)
			if err != nil {
				return err
			}
			if out.machine() {
				entries := make([]registry.Entry, len(list))
				for i, b := range list {
					entries[i] = b.Entry
				}
				return out.write(a.stdout, api.BundleList{Bundles: entries})
			}
			tw := newTable(a.stdout)
			fmt.Fprintln(tw, "NAME\tVERSION\tSIZE\tSHA256\tVERIFIED\tPUSHED")
			for _, b := range list {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%s\n", b.Name, b.Version, formatBytes(b.Size), b.SHA256[:12], b.Verified, formatTime(b.Pushed))
			}
			return tw.Flush()
		},
	}
	rf.register(cmd)
	out.register(cmd)
	return cmd
}
