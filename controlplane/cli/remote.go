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
// call fleetd's API.
type remoteFlags struct {
	server, tokenFile string
}

func (f *remoteFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.server, "server", "", "fleetd's URL (default $"+envServer+" or "+client.DefaultServer+")")
	cmd.Flags().StringVar(&f.tokenFile, "token-file", "", "file with the operator token (default $"+envToken+", $"+envTokenFile+
		", or ./"+defaultDataDir+"/"+operatorTokenRel+" when it exists)")
}

// serverURL is --server, $FLEETCTL_SERVER or the default.
func (f *remoteFlags) serverURL() string {
	switch {
	case f.server != "":
		return f.server
	case os.Getenv(envServer) != "":
		return os.Getenv(envServer)
	}
	return client.DefaultServer
}

// operatorToken finds the operator token: --token-file, $FLEETCTL_TOKEN,
// $FLEETCTL_TOKEN_FILE, then fleetd's default token file in the current
// directory.
func (f *remoteFlags) operatorToken() (string, error) {
	switch {
	case f.tokenFile != "":
		return readToken(f.tokenFile, "--token-file")
	case os.Getenv(envToken) != "":
		return strings.TrimSpace(os.Getenv(envToken)), nil
	case os.Getenv(envTokenFile) != "":
		return readToken(os.Getenv(envTokenFile), "$"+envTokenFile)
	}
	def := filepath.Join(defaultDataDir, operatorTokenRel)
	tok, err := readToken(def, "default token file")
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("no operator token: give --token-file, set $%s or $%s, or run where fleetd keeps %s", envToken, envTokenFile, def)
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
