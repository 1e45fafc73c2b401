package slot

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgefleet/edgefleet/shared/bundle"
)

// BenchmarkInstall compares Install (verify, unpack, rename, state
// commit, removal of the replaced directory) of a ~64 KiB bundle from a
// local path with bundle.VerifyAndUnpack alone, the work it wraps.
func BenchmarkInstall(b *testing.B) {
	k := newKeys(b)
	bs := []built{buildBundle(b, k, "1.0.0"), buildBundle(b, k, "2.0.0")}
	noop := func(context.Context, string, *bundle.Manifest) error { return nil }
	b.Run("slot-install", func(b *testing.B) {
		opts := testOptions(b, k)
		opts.Logger = nil
		s := openStore(b, b.TempDir(), opts)
		i := 0
		for b.Loop() {
			if _, err := s.Install(b.Context(), Request{Bundle: bs[i%2].path, AllowDowngrade: true}, noop); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("bundle-verify-and-unpack", func(b *testing.B) {
		dir := b.TempDir()
		i := 0
		for b.Loop() {
			dest := filepath.Join(dir, fmt.Sprint(i))
			if _, err := bundle.VerifyAndUnpack(b.Context(), bs[i%2].path, bs[i%2].sig, k.trust, dest, bundle.Limits{}); err != nil {
				b.Fatal(err)
			}
			os.RemoveAll(dest)
			i++
		}
	})
}
