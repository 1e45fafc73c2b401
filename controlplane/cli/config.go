package cli

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/edgefleet/edgefleet/controlplane/client"
	"github.com/edgefleet/edgefleet/shared/atomicfile"
	"github.com/edgefleet/edgefleet/shared/configfile"
)

// The client configuration: named contexts (a fleetd's URL and the file
// with its operator token), one of them current, as kubectl's contexts.
const (
	envConfig  = "FLEETCTL_CONFIG"
	envContext = "FLEETCTL_CONTEXT"
	// maxConfigBytes caps the configuration file.
	maxConfigBytes = 1 << 20
)

// clientConfig is the configuration file:
//
//	currentContext: prod
//	contexts:
//	  - name: prod
//	    server: https://fleetd.example.com:8080
//	    tokenFile: /home/me/.config/fleetctl/prod.token
type clientConfig struct {
	CurrentContext string          `yaml:"currentContext,omitempty" json:"currentContext,omitempty"`
	Contexts       []configContext `yaml:"contexts" json:"contexts" must:"a list of contexts"`

	path string // the file it was read from (it may not exist yet)
}

// configContext is one context. TokenFile is as written in the file: a
// relative path is relative to the file's directory (tokenPath).
type configContext struct {
	Name      string `yaml:"name" json:"name"`
	Server    string `yaml:"server" json:"server"`
	TokenFile string `yaml:"tokenFile,omitempty" json:"tokenFile,omitempty"`
}

// contextList is what get-contexts prints with -o json, yaml or name.
type contextList struct {
	File           string        `json:"file"`
	CurrentContext string        `json:"currentContext,omitempty"`
	Contexts       []contextInfo `json:"contexts"`
}

type contextInfo struct {
	configContext
	Current bool `json:"current"`
}

// configPath is where the configuration lives: $FLEETCTL_CONFIG, else
// $XDG_CONFIG_HOME/fleetctl/config.yaml, else
// ~/.config/fleetctl/config.yaml.
func configPath() (string, error) {
	if p := os.Getenv(envConfig); p != "" {
		return p, nil
	}
	// The XDG base directory spec says a relative $XDG_CONFIG_HOME is
	// invalid and to be ignored.
	if d := os.Getenv("XDG_CONFIG_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "fleetctl", "config.yaml"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no place for the client configuration: set $%s (%v)", envConfig, err)
	}
	return filepath.Join(home, ".config", "fleetctl", "config.yaml"), nil
}

// loadConfig reads the configuration file; one that does not exist is an
// empty configuration.
func loadConfig() (*clientConfig, error) {
	path, err := configPath()
	if err != nil {
		return nil, err
	}
	data, err := configfile.ReadFile(path, configOptions(path))
	if errors.Is(err, fs.ErrNotExist) {
		return &clientConfig{path: path}, nil
	}
	if ce, ok := err.(*configfile.Error); ok {
		return nil, configErrors([]*configfile.Error{ce})
	}
	if err != nil {
		return nil, fmt.Errorf("reading the client configuration: %w", err)
	}
	return parseConfig(path, data)
}

// configWords are the configuration file's words in messages (as before
// it shared configfile).
var configWords = func() configfile.Words {
	w := configfile.DefaultWords()
	w.Root = "the file"
	w.Got = "not the value %s"
	w.GotNode = "not %s"
	return w
}()

func configOptions(path string) configfile.Options {
	return configfile.Options{File: path, MaxBytes: maxConfigBytes, Words: &configWords}
}

// configErrors is every problem of a configuration file, each as
// FILE:LINE:COLUMN: FIELD: what is wrong, in the order of the file, on one
// line.
func configErrors(errs []*configfile.Error) error {
	slices.SortStableFunc(errs, func(a, b *configfile.Error) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return fmt.Errorf("client configuration: %s (fix or remove the file; %s)", strings.Join(msgs, "; "), configFormatHint)
}

const configFormatHint = "its keys are currentContext and contexts, a list of {name, server, tokenFile}"

// parseConfig decodes a configuration strictly: an unknown key, a key set
// twice, a value of the wrong kind, anchors and aliases, a second
// document, a bad name or URL, two contexts of one name and a
// currentContext naming none are refused, every problem with its line and
// column.
func parseConfig(path string, data []byte) (*clientConfig, error) {
	cfg := &clientConfig{path: path}
	o := configOptions(path)
	o.Check = cfg.check
	if _, errs := configfile.Decode(data, cfg, o); len(errs) > 0 {
		return nil, configErrors(errs)
	}
	return cfg, nil
}

// check reports what is wrong with the contexts' values.
func (c *clientConfig) check(r *configfile.Report) {
	first := map[string]int{} // name -> index
	for i, ctx := range c.Contexts {
		field := fmt.Sprintf("contexts[%d]", i)
		if ctx.Name == "" {
			r.Add(field, "name missing")
		} else if err := checkContextName(ctx.Name); err != nil {
			r.Add(field+".name", "%v", err)
		}
		if ctx.Server == "" {
			r.Add(field, "server missing")
		} else if _, err := client.ParseServer(ctx.Server); err != nil {
			r.Add(field+".server", "%v", err)
		}
		if ctx.Name == "" {
			continue
		}
		if j, dup := first[ctx.Name]; dup {
			r.Add(field+".name", "context %q is already defined on line %d", ctx.Name, r.Source().Pos(fmt.Sprintf("contexts[%d]", j)).Line)
		} else {
			first[ctx.Name] = i
		}
	}
	if c.CurrentContext != "" && c.context(c.CurrentContext) == nil {
		r.Add("currentContext", "%q is none of the contexts (%s)", c.CurrentContext, c.names())
	}
}

var contextNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@:/-]*$`)

// checkContextName accepts names of letters, digits and . _ @ : / -,
// starting with a letter or digit, at most 128 characters.
func checkContextName(name string) error {
	if !contextNameRE.MatchString(name) || len(name) > 128 {
		return fmt.Errorf("context name %q: want letters, digits and . _ @ : / - (starting with a letter or digit, at most 128)", name)
	}
	return nil
}

// context returns the context of that name, or nil.
func (c *clientConfig) context(name string) *configContext {
	for i := range c.Contexts {
		if c.Contexts[i].Name == name {
			return &c.Contexts[i]
		}
	}
	return nil
}

// names lists the contexts' names for messages.
func (c *clientConfig) names() string {
	if len(c.Contexts) == 0 {
		return "there are none"
	}
	names := make([]string, len(c.Contexts))
	for i, x := range c.Contexts {
		names[i] = x.Name
	}
	return "have: " + strings.Join(names, ", ")
}

// tokenPath is ctx's token file, a relative one taken relative to the
// configuration file's directory (as kubectl does).
func (c *clientConfig) tokenPath(ctx *configContext) string {
	if ctx.TokenFile == "" || filepath.IsAbs(ctx.TokenFile) {
		return ctx.TokenFile
	}
	return filepath.Join(filepath.Dir(c.path), ctx.TokenFile)
}

// unknownContext is the usage error for a name (from source: --context,
// $FLEETCTL_CONTEXT, an argument) that no context has.
func (c *clientConfig) unknownContext(source, name string) error {
	return usagef("%s %q: no such context in %s (%s; fleetctl config set-context %s --server URL adds it)", source, name, c.path, c.names(), name)
}

// loadConfigHaving is loadConfig for a command on the context name: an
// unknown name is a usage error.
func loadConfigHaving(name string) (*clientConfig, error) {
	cfg, err := loadConfig()
	if err != nil {
		return nil, err
	}
	if cfg.context(name) == nil {
		return nil, cfg.unknownContext("context", name)
	}
	return cfg, nil
}

// selected is the context a command uses: the one named by --context
// (flagName non-empty), else $FLEETCTL_CONTEXT, else the current one; nil
// when none is named or current.
func (c *clientConfig) selected(flagName string) (*configContext, error) {
	name, source := flagName, "--context"
	if name == "" {
		name, source = os.Getenv(envContext), "$"+envContext
	}
	if name == "" {
		name, source = c.CurrentContext, "currentContext"
	}
	if name == "" {
		return nil, nil
	}
	ctx := c.context(name)
	if ctx == nil {
		return nil, c.unknownContext(source, name)
	}
	return ctx, nil
}

// save writes the configuration atomically, mode 0600: a temporary file
// in the same directory, synced, renamed over the old one.
func (c *clientConfig) save() error {
	var b bytes.Buffer
	b.WriteString("# fleetctl client configuration: see fleetctl config --help and docs/cli.md.\n")
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	dir := filepath.Dir(c.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("writing the client configuration: %w", err)
	}
	err := atomicfile.WriteFile(c.path, b.Bytes(), 0o600)
	if err != nil {
		return fmt.Errorf("writing the client configuration %s: %w", c.path, err)
	}
	return nil
}

// contextFlag is the value of the global --context flag.
func contextFlag(cmd *cobra.Command) string {
	if f := cmd.Flag("context"); f != nil {
		return f.Value.String()
	}
	return ""
}

func newConfigCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Manage contexts: which fleetd to talk to, with which token",
		Long: `A context names a fleetd (its URL) and the file holding its operator
token, as kubectl's contexts do. The commands that talk to fleetd use the
current context, or the one --context NAME or $` + envContext + ` names,
for whatever --server, --token-file, $` + envServer + `,
$` + envToken + ` and $` + envTokenFile + ` do not give (flags first, then
the environment, then the context, then the defaults).

The contexts live in $` + envConfig + `, else
$XDG_CONFIG_HOME/fleetctl/config.yaml, else ~/.config/fleetctl/config.yaml,
written with mode 0600 and replaced atomically. A relative tokenFile in it
is relative to the file's directory.`,
	}
	cmd.AddCommand(
		newConfigSetContextCmd(a),
		newConfigUseContextCmd(a),
		newConfigCurrentContextCmd(a),
		newConfigGetContextsCmd(a),
		newConfigDeleteContextCmd(a),
	)
	return cmd
}

// completeContexts completes a context name argument.
func completeContexts(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return contextNames(), cobra.ShellCompDirectiveNoFileComp
}

func contextNames() []string {
	cfg, err := loadConfig()
	if err != nil {
		return nil
	}
	var names []string
	for _, c := range cfg.Contexts {
		names = append(names, c.Name)
	}
	return names
}

func newConfigSetContextCmd(a *app) *cobra.Command {
	var server, tokenFile string
	cmd := &cobra.Command{
		Use:   "set-context NAME [--server URL] [--token-file FILE]",
		Short: "Add a context, or change one",
		Long: `Add the context NAME (--server is required then) or change the fields of
an existing one that the flags give; --token-file "" removes its token
file. The token file must exist; its absolute path is recorded. It does
not make NAME current: fleetctl config use-context NAME does.`,
		Args:              exactArgs("NAME"),
		ValidArgsFunction: completeContexts,
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := checkContextName(name); err != nil {
				return withCode(ExitUsage, err)
			}
			if server != "" {
				if _, err := client.ParseServer(server); err != nil {
					return usagef("--server: %v", err)
				}
			}
			setToken := cmd.Flags().Changed("token-file")
			if tokenFile != "" {
				abs, err := filepath.Abs(tokenFile)
				if err != nil {
					return err
				}
				if _, err := readToken(abs, "--token-file"); err != nil {
					return err
				}
				tokenFile = abs
			}
			cfg, err := loadConfig()
			if err != nil {
				return err
			}
			c, what := cfg.context(name), "modified"
			if c == nil {
				if server == "" {
					return usagef("context %q is new: give its fleetd with --server URL", name)
				}
				cfg.Contexts = append(cfg.Contexts, configContext{Name: name})
				c, what = &cfg.Contexts[len(cfg.Contexts)-1], "created"
			} else if server == "" && !setToken {
				return usagef("context %q exists: give --server or --token-file to change it", name)
			}
			if server != "" {
				c.Server = strings.TrimSuffix(server, "/")
			}
			if setToken {
				c.TokenFile = tokenFile
			}
			if err := cfg.save(); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "context %q %s in %s\n", name, what, cfg.path)
			if cfg.CurrentContext != name {
				fmt.Fprintf(a.stderr, "fleetctl: note: fleetctl config use-context %s makes it the current context\n", name)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&server, "server", "", "fleetd's URL, http(s)://host:port")
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "file with the operator token (\"\": none)")
	return cmd
}

// newContextCmd is a config command "USE NAME" on one existing context:
// run gets the configuration (loaded with loadConfigHaving) and NAME.
func newContextCmd(use, short string, run func(cfg *clientConfig, name string) error) *cobra.Command {
	return &cobra.Command{
		Use:               use + " NAME",
		Short:             short,
		Args:              exactArgs("NAME"),
		ValidArgsFunction: completeContexts,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfigHaving(args[0])
			if err != nil {
				return err
			}
			return run(cfg, args[0])
		},
	}
}

func newConfigUseContextCmd(a *app) *cobra.Command {
	return newContextCmd("use-context", "Make a context the current one", func(cfg *clientConfig, name string) error {
		cfg.CurrentContext = name
		if err := cfg.save(); err != nil {
			return err
		}
		_, err := fmt.Fprintf(a.stdout, "switched to context %q\n", name)
		return err
	})
}

func newConfigCurrentContextCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "current-context",
		Short: "Print the name of the context commands use",
		Long: `Print the name of the context the commands that talk to fleetd use: the
one --context or $` + envContext + ` names, else the current one.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig()
			if err != nil {
				return err
			}
			c, err := cfg.selected(contextFlag(cmd))
			if err != nil {
				return err
			}
			if c == nil {
				return fmt.Errorf("no current context in %s (fleetctl config use-context NAME sets one)", cfg.path)
			}
			_, err = fmt.Fprintln(a.stdout, c.Name)
			return err
		},
	}
}

func newConfigGetContextsCmd(a *app) *cobra.Command {
	out := &outputFlag{}
	cmd := &cobra.Command{
		Use:               "get-contexts [NAME]",
		Short:             "List the contexts (the one in use marked *)",
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: completeContexts,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig()
			if err != nil {
				return err
			}
			cur, err := cfg.selected(contextFlag(cmd))
			if err != nil {
				return err
			}
			list := contextList{File: cfg.path, Contexts: []contextInfo{}}
			if cur != nil {
				list.CurrentContext = cur.Name
			}
			for _, c := range cfg.Contexts {
				if len(args) == 1 && c.Name != args[0] {
					continue
				}
				list.Contexts = append(list.Contexts, contextInfo{configContext: c, Current: cur != nil && c.Name == cur.Name})
			}
			if len(args) == 1 && len(list.Contexts) == 0 {
				return cfg.unknownContext("context", args[0])
			}
			if out.machine() {
				return out.write(a.stdout, list)
			}
			tw := newTable(a.stdout)
			fmt.Fprintln(tw, "CURRENT\tNAME\tSERVER\tTOKEN FILE")
			for _, c := range list.Contexts {
				mark := ""
				if c.Current {
					mark = "*"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", mark, c.Name, c.Server, orDash(c.TokenFile))
			}
			return tw.Flush()
		},
	}
	out.register(cmd)
	return cmd
}

func newConfigDeleteContextCmd(a *app) *cobra.Command {
	return newContextCmd("delete-context", "Delete a context (not its token file)", func(cfg *clientConfig, name string) error {
		cfg.Contexts = slices.DeleteFunc(cfg.Contexts, func(c configContext) bool { return c.Name == name })
		wasCurrent := cfg.CurrentContext == name
		if wasCurrent {
			cfg.CurrentContext = ""
		}
		if err := cfg.save(); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "deleted context %q from %s\n", name, cfg.path)
		if wasCurrent {
			fmt.Fprintln(a.stderr, "fleetctl: note: it was the current context; there is none now")
		}
		return nil
	})
}
