package bundle

import (
	"cmp"
	"fmt"
)

// Limits bound what the unpacker accepts, so that a hostile or broken
// bundle cannot exhaust a device's disk, memory or CPU. A zero field
// means the DefaultLimits value for that field.
type Limits struct {
	MaxBundleBytes   int64  // size of the .bundle file
	MaxFiles         int    // entries in the tar, manifest.json included
	MaxFileBytes     int64  // one file, uncompressed
	MaxTotalBytes    int64  // all files, uncompressed
	MaxWindowBytes   uint64 // zstd decoder window (zstd.WithDecoderMaxWindow)
	MaxDecoderMemory uint64 // zstd.WithDecoderMaxMemory
}

// MaxManifestBytes caps manifest.json, which is read into memory.
const MaxManifestBytes = 16 << 20

// EncoderWindowBytes is the zstd window Build compresses with. Readers
// must allow at least this much (the default MaxWindowBytes does).
const EncoderWindowBytes = 8 << 20

// DefaultLimits are sized for models of up to 2 GiB on devices with
// 512 MB of memory: the decoder never needs more than about 8 MiB of
// window, whatever the bundle's size.
func DefaultLimits() Limits {
	return Limits{
		MaxBundleBytes:   2 << 30,
		MaxFiles:         64,
		MaxFileBytes:     2 << 30,
		MaxTotalBytes:    4 << 30,
		MaxWindowBytes:   EncoderWindowBytes,
		MaxDecoderMemory: 16 << 20,
	}
}

// withDefaults returns l with every zero field set from DefaultLimits.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	l.MaxBundleBytes = cmp.Or(l.MaxBundleBytes, d.MaxBundleBytes)
	l.MaxFiles = cmp.Or(l.MaxFiles, d.MaxFiles)
	l.MaxFileBytes = cmp.Or(l.MaxFileBytes, d.MaxFileBytes)
	l.MaxTotalBytes = cmp.Or(l.MaxTotalBytes, d.MaxTotalBytes)
	l.MaxWindowBytes = cmp.Or(l.MaxWindowBytes, d.MaxWindowBytes)
	l.MaxDecoderMemory = cmp.Or(l.MaxDecoderMemory, d.MaxDecoderMemory)
	return l
}

// validate refuses negative limits, which are always a caller's mistake.
func (l Limits) validate() error {
	if l.MaxBundleBytes < 0 || l.MaxFiles < 0 || l.MaxFileBytes < 0 || l.MaxTotalBytes < 0 {
		return fmt.Errorf("bundle: negative limit in %+v", l)
	}
	return nil
}

// checkManifest refuses a manifest whose declared files exceed the limits,
// before a byte of them is decompressed.
func (l Limits) checkManifest(m *Manifest) error {
	if n := len(m.Files) + 1; n > l.MaxFiles {
		return fmt.Errorf("%w: manifest lists %d files (%d entries with manifest.json), the limit is %d entries", ErrLimit, len(m.Files), n, l.MaxFiles)
	}
	var total int64
	for _, f := range m.Files {
		if f.Size > l.MaxFileBytes {
			return fmt.Errorf("%w: file %q is %d bytes, the limit is %d per file", ErrLimit, f.Path, f.Size, l.MaxFileBytes)
		}
		if f.Size > l.MaxTotalBytes-total {
			return fmt.Errorf("%w: files total more than %d bytes (limit)", ErrLimit, l.MaxTotalBytes)
		}
		total += f.Size
	}
	return nil
}
