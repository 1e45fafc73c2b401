package testenv

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// update is -update, which every test binary importing testenv takes:
// Golden rewrites its files instead of comparing them.
var update = flag.Bool("update", false, "rewrite golden files with what the tests produce")

// Golden fails tb unless the file at path holds got, naming the first
// line that differs and the command that rewrites the file. With -update
// it writes got to path first (creating its directory).
func Golden(tb testing.TB, path string, got []byte) {
	tb.Helper()
	test, _, _ := strings.Cut(tb.Name(), "/")
	rewrite := fmt.Sprintf("go test -run '^%s$' -update rewrites it", test)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		tb.Fatalf("golden file: %v (%s)", err, rewrite)
	}
	if !bytes.Equal(got, want) {
		tb.Errorf("%s is not what the test produced (%s); first difference at %s", path, rewrite, firstDiff(want, got))
	}
}

// firstDiff names the first line where file and got differ.
func firstDiff(file, got []byte) string {
	fl, gl := strings.Split(string(file), "\n"), strings.Split(string(got), "\n")
	for i := range max(len(fl), len(gl)) {
		var f, g string
		if i < len(fl) {
			f = fl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if f != g {
			return fmt.Sprintf("line %d:\n\tfile: %.300q\n\tgot:  %.300q", i+1, f, g)
		}
	}
	return "none"
}
