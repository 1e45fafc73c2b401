package fleetd

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/edgefleet/edgefleet/shared/atomicfile"
)

// minTokenLen is the shortest operator or enrolment token accepted.
const minTokenLen = 16

// newToken returns 32 random bytes, base64url without padding, behind
// prefix.
func newToken(prefix string) string {
	b := make([]byte, 32)
	rand.Read(b)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// secret reads the secret in file (surrounding space trimmed). If the
// file does not exist and generate is set, it creates one (0600) with a
// new token, prints it once to announce and returns it; otherwise a
// missing file is an error naming key.
func secret(key, file string, generate bool, prefix, what string, announce io.Writer) (string, error) {
	b, err := os.ReadFile(file)
	switch {
	case err == nil:
		s := strings.TrimSpace(string(b))
		if len(s) < minTokenLen {
			return "", fmt.Errorf("%w: %s: %s holds %d bytes; a secret needs at least %d", ErrConfig, key, file, len(s), minTokenLen)
		}
		return s, nil
	case !errors.Is(err, fs.ErrNotExist) || !generate:
		return "", fmt.Errorf("%w: %s: %w", ErrConfig, key, err)
	}
	tok := newToken(prefix)
	if err := writeFile(file, []byte(tok+"\n"), 0o600, false); err != nil {
		return "", fmt.Errorf("fleetd: generating %s in %s: %w", what, file, err)
	}
	if announce != nil {
		fmt.Fprintf(announce, "fleetd: generated %s (shown once; saved in %s, mode 0600):\n  %s\n", what, file, tok)
	}
	return tok, nil
}

// s3Credentials reads an S3 credentials file: AWS_ACCESS_KEY_ID=... and
// AWS_SECRET_ACCESS_KEY=... lines (an optional "export " prefix, quotes,
// blank lines and # comments allowed), as a systemd EnvironmentFile.
func s3Credentials(file string) (access, secret string, err error) {
	const key = "registry.s3.credentialsFile"
	b, err := os.ReadFile(file)
	if err != nil {
		return "", "", fmt.Errorf("%w: %s: %w", ErrConfig, key, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, val, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if !ok {
			return "", "", fmt.Errorf("%w: %s: %s:%d: want NAME=VALUE", ErrConfig, key, file, n)
		}
		val = strings.Trim(strings.TrimSpace(val), `"'`)
		switch strings.TrimSpace(name) {
		case "AWS_ACCESS_KEY_ID":
			access = val
		case "AWS_SECRET_ACCESS_KEY":
			secret = val
		default:
			return "", "", fmt.Errorf("%w: %s: %s:%d: unknown name %q (want AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)", ErrConfig, key, file, n, name)
		}
	}
	if access == "" || secret == "" {
		return "", "", fmt.Errorf("%w: %s: %s needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", ErrConfig, key, file)
	}
	return access, secret, nil
}

// writeFile writes data to path atomically (shared/atomicfile), creating
// its directory (0700) if needed. Unless replace is set, an existing path
// is an error (fs.ErrExist) and stays as it was.
func writeFile(path string, data []byte, perm fs.FileMode, replace bool) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	if replace {
		return atomicfile.WriteFile(path, data, perm)
	}
	return atomicfile.WriteNew(path, data, perm)
}
