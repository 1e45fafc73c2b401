package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/edgefleet/edgefleet/agent"
	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/shared/onnx"
	"github.com/edgefleet/edgefleet/shared/version"
)

// DefaultConfig is where the agent looks for its configuration; when it
// does not exist (and --config was not given) the defaults apply.
const DefaultConfig = "/etc/edge-agent/config.yaml"

// CrashPointEnv names a slot crash point (slot.Point*) at which the agent
// kills itself with SIGKILL during an install. It is a test hook for the
// crash-safety tests and must never be set in production.
const CrashPointEnv = "EDGEFLEET_TEST_CRASHPOINT"

// errUsage marks a command line error (exit status 2).
var errUsage = errors.New("usage")

// ExitConfig is the exit status for a configuration the agent cannot run
// with (sysexits' EX_CONFIG): the unit's RestartPreventExitStatus, since
// restarting cannot help.
const ExitConfig = 78

// configError marks an unusable configuration (exit status ExitConfig).
type configError struct{ err error }

func (e configError) Error() string { return e.err.Error() }
func (e configError) Unwrap() error { return e.err }

const usage = `edge-agent: the edgefleet edge agent

Usage:
  edge-agent [run] [--config FILE]        run the daemon
  edge-agent install [--config FILE] [--sig SIG] [--force] [--allow-downgrade] FILE|URL
  edge-agent rollback [--config FILE]     return to the last-known-good version
  edge-agent status [--config FILE] [-o text|json]
  edge-agent predict [--config FILE] --bundle FILE [--sig SIG] [--key PUB]
                     (--request REQUEST.json | --raw FILE)
  edge-agent version

install, rollback and status go through the running daemon's socket, or
work on the data directory directly when no daemon runs.
The configuration defaults to ` + DefaultConfig + `; without that file the
built-in defaults apply.
`

// run runs the command line args and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		cmd, args = "help", args[1:]
	} else if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "run":
		err = cmdRun(ctx, args, stderr)
	case "install":
		err = cmdInstall(ctx, args, stdout, stderr)
	case "rollback":
		err = cmdRollback(ctx, args, stdout, stderr)
	case "status":
		err = cmdStatus(ctx, args, stdout, stderr)
	case "predict":
		err = cmdPredict(ctx, args, stdout, stderr)
	case "version":
		fmt.Fprintf(stdout, "edge-agent %s (%s %s/%s)\n", version.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	case "help", "-h", "--help":
		printHelp(ctx, stdout)
	default:
		err = fmt.Errorf("%w: unknown command %q", errUsage, cmd)
	}
	var cfgErr configError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "edge-agent: %v\n\n%s", err, usage)
		return 2
	case errors.As(err, &cfgErr):
		fmt.Fprintf(stderr, "edge-agent: %v\n", err)
		return ExitConfig
	}
	fmt.Fprintf(stderr, "edge-agent: %v\n", err)
	return 1
}

// printHelp prints the usage and every subcommand's flags, as each
// subcommand's own -h prints them (so the list cannot miss one).
func printHelp(ctx context.Context, w io.Writer) {
	fmt.Fprint(w, usage)
	fmt.Fprintf(w, "\nExit codes: 0 success, 1 error (such as a listen address in use; systemd restarts it), 2 usage, %d unusable configuration (systemd does not restart it).\n", ExitConfig)
	help := []string{"-h"}
	for _, cmd := range []func() error{
		func() error { return cmdRun(ctx, help, w) },
		func() error { return cmdInstall(ctx, help, w, w) },
		func() error { return cmdRollback(ctx, help, w, w) },
		func() error { return cmdStatus(ctx, help, w, w) },
		func() error { return cmdPredict(ctx, help, w, w) },
	} {
		fmt.Fprintln(w)
		_ = cmd() // flag.ErrHelp
	}
}

// flags is a subcommand's flag set with the common --config.
type flags struct {
	*flag.FlagSet
	config string
}

func newFlags(name string, stderr io.Writer) *flags {
	f := &flags{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError)}
	f.SetOutput(stderr)
	f.Usage = func() {
		fmt.Fprintf(f.Output(), "edge-agent %s flags:\n", name)
		f.PrintDefaults()
	}
	f.StringVar(&f.config, "config", DefaultConfig, "configuration `FILE`")
	return f
}

// parse parses args, flags and positional arguments interleaved, and
// returns the positional ones.
func (f *flags) parse(args []string) ([]string, error) {
	var pos []string
	for {
		if err := f.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %s: %v", errUsage, f.Name(), err)
		}
		args = f.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// loadConfig reads the configuration: the file named by --config, or the
// default file, or the built-in defaults when the default file does not
// exist.
func (f *flags) loadConfig() (*config.Config, error) {
	explicit := false
	f.Visit(func(fl *flag.Flag) { explicit = explicit || fl.Name == "config" })
	if !explicit {
		if _, err := os.Stat(f.config); errors.Is(err, fs.ErrNotExist) {
			return config.Default(), nil
		}
	}
	c, err := config.Load(f.config)
	if err != nil {
		return nil, configError{err}
	}
	return c, nil
}

func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

func cmdRun(ctx context.Context, args []string, stderr io.Writer) error {
	f := newFlags("run", stderr)
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: run takes no arguments, got %q", errUsage, pos)
	}
	cfg, err := f.loadConfig()
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.SlogLevel())
	setProcs(cfg, log)
	a, err := agent.New(cfg, log, agentOptions(log)...)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// setProcs lowers GOMAXPROCS to leave ONNX Runtime's intra-op worker
// threads a core of their own (onnx.GoMaxProcs), unless the GOMAXPROCS
// environment variable chose. It never raises it (a container's CPU
// limit may have lowered it already).
func setProcs(cfg *config.Config, log *slog.Logger) {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	n := onnx.GoMaxProcs(cfg.Runtime.IntraOpThreads)
	if prev := runtime.GOMAXPROCS(0); n < prev {
		runtime.GOMAXPROCS(n)
		log.Info("GOMAXPROCS lowered to leave ONNX Runtime's intra-op threads room; set GOMAXPROCS to override",
			"gomaxprocs", n, "was", prev, "intra_op_threads", onnx.IntraOpThreads(cfg.Runtime.IntraOpThreads))
	}
}

// agentOptions are the options of an agent that may install: the crash
// test hook when CrashPointEnv is set.
func agentOptions(log *slog.Logger) []agent.Option {
	point := os.Getenv(CrashPointEnv)
	if point == "" {
		return nil
	}
	log.Warn("test hook armed: the agent kills itself during the next install", "env", CrashPointEnv, "point", point)
	return []agent.Option{agent.WithInstallHook(func(p string) {
		if p == point {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	})}
}

// local is how a CLI command reaches the agent: the running daemon's
// admin API, or the data directory itself when no daemon runs.
type local interface {
	Install(ctx context.Context, src, sig string, o agent.InstallOptions) (agent.Result, error)
	Rollback(ctx context.Context) (agent.Result, error)
	Status(ctx context.Context) (agent.Status, error)
	close() error
}

// running is the daemon, reached through its admin API.
type running struct{ *agent.Client }

func (r running) close() error { r.Client.Close(); return nil }

// offline is the data directory opened in this process because no daemon
// runs.
type offline struct{ *agent.Agent }

func (o offline) Status(context.Context) (agent.Status, error) { return o.Agent.Status() }
func (o offline) close() error                                 { return o.Agent.Close() }

func connect(ctx context.Context, f *flags, stderr io.Writer) (local, error) {
	cfg, err := f.loadConfig()
	if err != nil {
		return nil, err
	}
	c := agent.NewClient(cfg.API.Socket)
	err = c.Ping(ctx)
	if err == nil {
		return running{c}, nil
	}
	if !errors.Is(err, agent.ErrNotRunning) {
		return nil, err
	}
	if err := checkOwner(cfg.DataDir); err != nil {
		return nil, err
	}
	log := newLogger(stderr, slog.LevelWarn)
	a, err := agent.New(cfg, log, agentOptions(log)...)
	if err != nil {
		return nil, err
	}
	if err := a.Open(); err != nil {
		return nil, fmt.Errorf("no agent answers on %s, and the data directory cannot be opened: %w", cfg.API.Socket, err)
	}
	return offline{a}, nil
}

// checkOwner refuses to work on the data directory of another user:
// files written there (state, bundles) would then belong to the caller
// and the daemon could no longer replace them.
func checkOwner(dir string) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || int(st.Uid) == os.Geteuid() {
		return nil
	}
	return fmt.Errorf("no agent is running, and %s belongs to uid %d, not to you (uid %d): run this command as that user (e.g. sudo -u edge-agent edge-agent ...), so that the files it writes stay the agent's", dir, st.Uid, os.Geteuid())
}

func cmdInstall(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	f := newFlags("install", stderr)
	var o agent.InstallOptions
	sig := f.String("sig", "", "signature `FILE` or URL (default: the bundle's path or URL + .sig)")
	f.BoolVar(&o.Force, "force", false, "reinstall the active version")
	f.BoolVar(&o.AllowDowngrade, "allow-downgrade", false, "permit a version lower than the active one")
	f.StringVar(&o.ID, "id", "", "the `NAME@VERSION` the bundle must be")
	f.StringVar(&o.SHA256, "sha256", "", "the bundle file's sha256 (hex)")
	f.Int64Var(&o.Size, "size", 0, "the bundle file's size in bytes")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: install takes one bundle file or URL, got %d arguments", errUsage, len(pos))
	}
	l, err := connect(ctx, f, stderr)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, l.close()) }()
	res, err := l.Install(ctx, pos[0], *sig, o)
	if err != nil {
		return fmt.Errorf("install %s: %w", pos[0], err)
	}
	printResult(stdout, "installed", res)
	return nil
}

func cmdRollback(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	f := newFlags("rollback", stderr)
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: rollback takes no arguments", errUsage)
	}
	l, err := connect(ctx, f, stderr)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, l.close()) }()
	res, err := l.Rollback(ctx)
	if err != nil {
		return fmt.Errorf("rollback: %w", err)
	}
	printResult(stdout, "rolled back", res)
	return nil
}

func printResult(w io.Writer, what string, r agent.Result) {
	switch {
	case r.Active == nil:
		fmt.Fprintf(w, "%s: nothing active\n", what)
	case !r.Changed:
		fmt.Fprintf(w, "%s is already active\n", r.Active.ID)
	default:
		fmt.Fprintf(w, "%s: %s is active", what, r.Active.ID)
		if r.LastKnownGood != nil {
			fmt.Fprintf(w, " (last-known-good: %s)", r.LastKnownGood.ID)
		}
		fmt.Fprintln(w)
	}
}

func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	f := newFlags("status", stderr)
	output := f.String("o", "text", "output `format`: text or json")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: status takes no arguments", errUsage)
	}
	if *output != "text" && *output != "json" {
		return fmt.Errorf("%w: -o %q: want text or json", errUsage, *output)
	}
	l, err := connect(ctx, f, stderr)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, l.close()) }()
	s, err := l.Status(ctx)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	printStatus(stdout, s)
	return nil
}

func printStatus(out io.Writer, s agent.Status) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	state := "not running (read from the data directory)"
	if s.Running {
		state = fmt.Sprintf("running (pid %d, since %s)", s.PID, s.StartedAt.Local().Format(time.DateTime))
		if s.Ready {
			state += ", ready"
		} else {
			state += ", not ready"
		}
	}
	fmt.Fprintf(w, "agent:\tedge-agent %s, device %s, %s\n", s.AgentVersion, s.DeviceID, state)
	slotLine := func(name, id string, at time.Time) {
		if id == "" {
			fmt.Fprintf(w, "%s:\tnone\n", name)
			return
		}
		fmt.Fprintf(w, "%s:\t%s (installed %s)\n", name, id, at.Local().Format(time.DateTime))
	}
	if s.Active != nil {
		slotLine("active", s.Active.ID, s.Active.InstalledAt)
	} else {
		slotLine("active", "", time.Time{})
	}
	if s.Provider != "" {
		fmt.Fprintf(w, "provider:\t%s\n", s.Provider)
	}
	if s.Degraded != "" {
		fmt.Fprintf(w, "degraded:\t%s\n", s.Degraded)
	}
	if s.LastKnownGood != nil {
		slotLine("last-known-good", s.LastKnownGood.ID, s.LastKnownGood.InstalledAt)
	} else {
		slotLine("last-known-good", "", time.Time{})
	}
	if e := s.LastError; e != nil {
		what := e.Op
		if e.ID != "" {
			what += " " + e.ID
		}
		fmt.Fprintf(w, "last error:\t%s %s: %s\n", e.Time.Local().Format(time.DateTime), what, e.Error)
	}
	if s.Trust.Error != "" {
		fmt.Fprintf(w, "trust:\t%s\n", s.Trust.Error)
	} else {
		fmt.Fprintf(w, "trust:\t%s\n", strings.Join(s.Trust.Keys, ", "))
	}
	b := s.Buffer
	fmt.Fprintf(w, "buffer:\t%d records, %d bytes (appended %d, acked %d, dropped %d)\n", b.Records, b.Bytes, b.Appended, b.Acked, b.Dropped)
	if p := s.Predictions; p != nil {
		fmt.Fprintf(w, "predictions:\t%d observed, %d sampled at %g, %d dropped, %d failed\n", p.Observed, p.Sampled, p.SampleRate, p.Dropped, p.Failed)
	}
	if sh := s.Shadow; sh != nil {
		fmt.Fprintf(w, "shadow:\t%s since %s: %d of %d samples agreed (rate %g), %d failed, %d dropped\n",
			sh.Candidate, sh.Since.Local().Format(time.DateTime), sh.Agreed, sh.Samples, sh.Rate, sh.Errors, sh.Dropped)
	}
	switch u := s.Uplink; {
	case u != nil:
		conn := "disconnected"
		if u.Connected {
			conn = fmt.Sprintf("connected (session %d)", u.Session)
		}
		fmt.Fprintf(w, "uplink:\t%s %s, desired seq %d, applied %d, failed %d\n", u.Broker, conn, u.AcceptedSeq, u.Applied, u.ApplyFailed)
	case s.Running:
		fmt.Fprintf(w, "uplink:\tnone (standalone)\n")
	}
	fmt.Fprintf(w, "data:\t%s\n", s.DataDir)
	fmt.Fprintf(w, "socket:\t%s\n", s.Socket)
	w.Flush()
}

func cmdPredict(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlags("predict", stderr)
	var o agent.OneShot
	f.StringVar(&o.Bundle, "bundle", "", "signed bundle `FILE`")
	f.StringVar(&o.Sig, "sig", "", "signature `FILE` (default: the bundle + .sig)")
	request := f.String("request", "", "inference request `FILE` (Open Inference Protocol JSON; - for stdin)")
	raw := f.String("raw", "", "raw input `FILE` for the bundle's pre-processor (- for stdin)")
	f.Func("key", "publisher public key `FILE` (PEM; repeatable; default: the configuration's trust.publicKeys)", func(s string) error {
		o.Keys = append(o.Keys, s)
		return nil
	})
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) > 0:
		return fmt.Errorf("%w: predict takes no arguments, got %q", errUsage, pos)
	case o.Bundle == "":
		return fmt.Errorf("%w: predict needs --bundle", errUsage)
	case (*request == "") == (*raw == ""):
		return fmt.Errorf("%w: predict needs one of --request and --raw", errUsage)
	}
	cfg, err := f.loadConfig()
	if err != nil {
		return err
	}
	in := *request
	if *raw != "" {
		in, o.Raw = *raw, true
	}
	if in == "-" {
		o.Body, err = io.ReadAll(io.LimitReader(os.Stdin, int64(cfg.API.MaxBodyBytes)+1))
	} else {
		o.Body, err = os.ReadFile(in)
	}
	if err != nil {
		return fmt.Errorf("reading the request: %w", err)
	}
	code, body, err := agent.Predict(ctx, cfg, newLogger(stderr, slog.LevelWarn), o)
	if err != nil {
		return err
	}
	stdout.Write(body)
	if code != 200 {
		return fmt.Errorf("the model answered %d", code)
	}
	return nil
}
