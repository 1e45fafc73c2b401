package config

import (
	"fmt"
	"path/filepath"

	"github.com/edgefleet/edgefleet/shared/configfile"
)

// MaxFileBytes caps the size of a configuration file.
const MaxFileBytes = configfile.DefaultMaxBytes

// words are the configuration's words in messages (as before it shared
// configfile).
var words = func() configfile.Words {
	w := configfile.DefaultWords()
	w.Struct = "a mapping of settings (key: value)"
	w.Int = "an integer"
	w.Syntax = ""
	return w
}()

func options(file string) configfile.Options {
	return configfile.Options{File: file, MaxBytes: MaxFileBytes, Words: &words}
}

// Load reads, checks and returns the configuration in the YAML file at
// path, on top of Default. Relative paths in it are taken relative to the
// file's directory. Every problem found is reported, each as a
// *FieldError naming the file, line, column and key; errors.Is(err,
// ErrInvalid) holds for all of them.
func Load(path string) (*Config, error) {
	data, err := configfile.ReadFile(path, options(path))
	if err != nil {
		if ce, ok := err.(*configfile.Error); ok {
			return nil, fieldErrors([]*configfile.Error{ce})
		}
		return nil, fmt.Errorf("config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return parse(data, path, filepath.Dir(abs))
}

// Parse is Load for YAML already in memory; relative paths are taken
// relative to dir.
func Parse(data []byte, dir string) (*Config, error) {
	return parse(data, "", dir)
}

func parse(data []byte, file, dir string) (*Config, error) {
	c := defaults()
	o := options(file)
	// A setting that failed to decode kept its default, so checking the
	// rest is meaningful: every problem is reported at once.
	o.Check = func(r *configfile.Report) {
		c.resolve(dir)
		c.derive()
		c.check(r)
	}
	src, errs := configfile.Decode(data, c, o)
	if len(errs) > 0 {
		return nil, fieldErrors(errs)
	}
	c.src = src
	return c, nil
}

// resolve makes the relative paths set in a file absolute, against dir.
func (c *Config) resolve(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) && dir != "" {
			*p = filepath.Join(dir, *p)
		}
	}
	abs(&c.DataDir)
	for i := range c.Trust.PublicKeys {
		abs(&c.Trust.PublicKeys[i])
	}
	abs(&c.API.Socket)
	abs(&c.API.GRPCSocket)
	abs(&c.API.GRPCTLS.Cert)
	abs(&c.API.GRPCTLS.Key)
	abs(&c.API.GRPCTLS.ClientCA)
	abs(&c.Runtime.ORTLibrary)
	abs(&c.WASM.CacheDir)
	abs(&c.Uplink.PasswordFile)
	abs(&c.Uplink.TLS.CA)
	abs(&c.Uplink.TLS.Cert)
	abs(&c.Uplink.TLS.Key)
}
