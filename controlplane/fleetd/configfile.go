package fleetd

import (
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"

	"github.com/edgefleet/edgefleet/shared/configfile"
)

// configWords are fleetd's words in configuration messages (as before
// it shared configfile).
var configWords = func() configfile.Words {
	w := configfile.DefaultWords()
	w.Bool = "a boolean (true or false)"
	return w
}()

func configOptions(file string) configfile.Options {
	return configfile.Options{File: file, MaxBytes: MaxConfigBytes, Words: &configWords}
}

// configErrors wraps each problem in ErrConfig, joined.
func configErrors(errs []*configfile.Error) error {
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = fmt.Errorf("%w: %w", ErrConfig, e)
	}
	return errors.Join(out...)
}

// LoadConfig reads the YAML configuration file at path, strictly: an
// unknown key, a value of the wrong type or a second document is refused
// with the file, line, column and key named, every problem at once.
// Relative paths in the file are relative to its directory. The result is
// not validated yet (flags may still change it; New validates, naming the
// file's lines too).
func LoadConfig(path string) (*Config, error) {
	data, err := configfile.ReadFile(path, configOptions(path))
	if err != nil {
		if ce, ok := err.(*configfile.Error); ok {
			return nil, configErrors([]*configfile.Error{ce})
		}
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return ParseConfig(data, path, filepath.Dir(abs))
}

// ParseConfig is LoadConfig for YAML in memory; file names it in errors
// and relative paths are taken relative to dir.
func ParseConfig(data []byte, file, dir string) (*Config, error) {
	c := &Config{}
	src, errs := configfile.Decode(data, c, configOptions(file))
	if len(errs) > 0 {
		return nil, configErrors(errs)
	}
	c.resolvePaths(dir)
	c.src = src
	return c, nil
}

// Set sets one key (e.g. "http.listen", "auth.enrolTokenFiles.ci",
// "registry.trustedKeys" with comma-separated values) from a string, as a
// command-line flag does. The error names the key. An error about the key
// later no longer names the file's line.
func (c *Config) Set(key, value string) error {
	if err := configfile.Set(c, key, value, configOptions("")); err != nil {
		return configErrors([]*configfile.Error{err})
	}
	c.src.Forget(key)
	return nil
}

// resolvePaths makes the file paths set in a configuration file absolute,
// relative to the file's directory dir.
func (c *Config) resolvePaths(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	for _, p := range []*string{
		&c.DataDir, &c.HTTP.CertFile, &c.HTTP.KeyFile, &c.Auth.OperatorTokenFile,
		&c.Broker.PasswordFile, &c.Broker.CAFile, &c.Broker.Mosquitto.PasswordFile, &c.Broker.Mosquitto.PIDFile,
		&c.Registry.Dir, &c.Registry.URLKeyFile, &c.Registry.S3.CredentialsFile, &c.Samples.Dir,
	} {
		abs(p)
	}
	if t := c.Broker.TLS; t != nil {
		abs(&t.CertFile)
		abs(&t.KeyFile)
		abs(&t.ClientCAFile)
	}
	for _, name := range slices.Sorted(maps.Keys(c.Auth.EnrolTokenFiles)) {
		p := c.Auth.EnrolTokenFiles[name]
		abs(&p)
		c.Auth.EnrolTokenFiles[name] = p
	}
	for i := range c.Auth.Tokens {
		abs(&c.Auth.Tokens[i].File)
	}
	for i := range c.Registry.TrustedKeys {
		abs(&c.Registry.TrustedKeys[i])
	}
	c.Events.resolvePaths(abs)
}
