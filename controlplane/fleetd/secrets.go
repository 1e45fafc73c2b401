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
	if err := writeFileAtomic(file, []byte(tok+"\n"), 0o600, false); err != nil {
		return "", fmt.Errorf("fleetd: generating %s in %s: %w", what, file, err)
	}
	if announce != nil {
		fmt.Fprintf(announce, "fleetd: generated %s (shown once; saved in %s, mode 0600):\n  %s\n", what, file, tok)
	}
	return tok, nil
}

// writeFileAtomic writes data to path through a temporary file in the
// same directory, fsynced and renamed into place, and fsyncs the
// directory. Unless replace is set, an existing path is an error
// (fs.ErrExist).
func writeFileAtomic(path string, data []byte, perm fs.FileMode, replace bool) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if replace {
		err = os.Rename(tmp.Name(), path)
	} else {
		// A hard link fails if path exists; then the temp file goes.
		err = os.Link(tmp.Name(), path)
	}
	if err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
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
