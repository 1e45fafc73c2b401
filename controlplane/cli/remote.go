package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgefleet/edgefleet/controlplane/client"
)

// Environment variables of the commands that talk to fleetd.
const (
	envServer        = "FLEETCTL_SERVER"
	envToken         = "FLEETCTL_TOKEN"
	envTokenFile     = "FLEETCTL_TOKEN_FILE"
	envEnrolToken    = "FLEETCTL_ENROL_TOKEN"
	defaultDataDir   = "fleetd-data" // fleetd's default data directory, relative to where it runs
	operatorTokenRel = "operator.token"
	enrolTokenRel    = "enrol.token"
)

// remoteFlags are the --server and --token-file flags of commands that
// call fleetd's API, and the context (config.go) that fills in what they
// and the environment leave out.
type remoteFlags struct {
	server, tokenFile string
	// cfg and ctx are the client configuration and the context in use
	// (nil when none is named or current); set before the command runs.
	cfg *clientConfig
	ctx *configContext
}

func (f *remoteFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.server, "server", "", "fleetd's URL (default $"+envServer+", the context's server, or "+client.DefaultServer+")")
	cmd.Flags().StringVar(&f.tokenFile, "token-file", "", "file with the operator token (default $"+envToken+", $"+envTokenFile+
		", the context's token file, or ./"+defaultDataDir+"/"+operatorTokenRel+" when it exists)")
	prev := cmd.PreRunE
	cmd.PreRunE = func(cmd *cobra.Command, args []string) error {
		if err := f.useContext(contextFlag(cmd)); err != nil {
			return err
		}
		if prev != nil {
			return prev(cmd, args)
		}
		return nil
	}
}

// useContext picks the context (named by --context, $FLEETCTL_CONTEXT or
// the configuration's currentContext). The configuration is read only
// when a context is named or something is left to take from one, so that
// with everything given by flags or the environment a broken file does
// not stand in the way.
func (f *remoteFlags) useContext(name string) error {
	serverGiven := f.server != "" || os.Getenv(envServer) != ""
	tokenGiven := f.tokenFile != "" || os.Getenv(envToken) != "" || os.Getenv(envTokenFile) != ""
	if name == "" && os.Getenv(envContext) == "" && serverGiven && tokenGiven {
		return nil
	}
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	ctx, err := cfg.selected(name)
	if err != nil {
		return err
	}
	f.cfg, f.ctx = cfg, ctx
	return nil
}

// serverURL is --server, $FLEETCTL_SERVER, the context's server or the
// default.
func (f *remoteFlags) serverURL() string {
	switch {
	case f.server != "":
		return f.server
	case os.Getenv(envServer) != "":
		return os.Getenv(envServer)
	case f.ctx != nil:
		return f.ctx.Server
	}
	return client.DefaultServer
}

// operatorToken finds the operator token: --token-file, $FLEETCTL_TOKEN,
// $FLEETCTL_TOKEN_FILE, the context's token file, then fleetd's default
// token file in the current directory.
func (f *remoteFlags) operatorToken() (string, error) {
	switch {
	case f.tokenFile != "":
		return readToken(f.tokenFile, "--token-file")
	case os.Getenv(envToken) != "":
		return strings.TrimSpace(os.Getenv(envToken)), nil
	case os.Getenv(envTokenFile) != "":
		return readToken(os.Getenv(envTokenFile), "$"+envTokenFile)
	case f.ctx != nil && f.ctx.TokenFile != "":
		return readToken(f.cfg.tokenPath(f.ctx), fmt.Sprintf("tokenFile of context %q in %s", f.ctx.Name, f.cfg.path))
	}
	def := filepath.Join(defaultDataDir, operatorTokenRel)
	tok, err := readToken(def, "default token file")
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("no operator token: give --token-file, set $%s or $%s, use a context with a token file (fleetctl config set-context), or run where fleetd keeps %s", envToken, envTokenFile, def)
	}
	return tok, err
}

func readToken(path, what string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading the token (%s): %w", what, err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("%s %s is empty", what, path)
	}
	return tok, nil
}

// client returns an API client with the operator token.
func (f *remoteFlags) client() (*client.Client, error) {
	tok, err := f.operatorToken()
	if err != nil {
		return nil, err
	}
	return client.New(f.serverURL(), tok, nil)
}

// formatTime is t in UTC to the second, or "-" for the zero time.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
