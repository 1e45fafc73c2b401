package bundle_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/edgefleet/edgefleet/shared/bundle"
)

// BenchmarkVerifyUnpack measures the device-side path on a 100 MB bundle
// (60 MB of incompressible bytes, 40 MB of low-entropy float32 weights)
// next to its raw ingredients on the same file: SHA-256 of the file (what
// signature verification costs) and plain zstd decoding (what unpacking
// costs before writing and hashing). MB/s is of the bundle file's bytes.
func BenchmarkVerifyUnpack(b *testing.B) {
	dir := b.TempDir()
	rng := rand.New(rand.NewChaCha8([32]byte{1}))
	random := make([]byte, 60<<20)
	for i := 0; i < len(random); i += 8 {
		binary.LittleEndian.PutUint64(random[i:], rng.Uint64())
	}
	levels := make([]float32, 256)
	for i := range levels {
		levels[i] = float32(math.Sin(float64(i))) * 0.1
	}
	weights := make([]byte, 40<<20)
	for i := 0; i < len(weights); i += 4 {
		binary.LittleEndian.PutUint32(weights[i:], math.Float32bits(levels[rng.IntN(len(levels))]))
	}
	yaml := "name: bench\nversion: 1.0.0\nmodel: model.onnx\nextra: [weights.bin]\n" +
		"inputs: [{name: x, datatype: FP32, shape: [1]}]\noutputs: [{name: z, datatype: FP32, shape: [1]}]\n"
	spec := writeSpec(b, yaml, map[string][]byte{"model.onnx": random, "weights.bin": weights})
	random, weights = nil, nil
	path := filepath.Join(dir, "bench-1.0.0.bundle")
	if _, err := bundle.Build(context.Background(), spec, path, bundle.BuildOptions{}); err != nil {
		b.Fatal(err)
	}
	keyPath, pubPath := keyPair(b, bundle.ECDSAP256)
	sigPath := sign(b, path, keyPath)
	tr := trust(b, pubPath)
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	size := fi.Size()
	b.Logf("bundle: %d bytes compressed, %d bytes of files", size, 100<<20)

	b.Run("sha256-file", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			f, err := os.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			h := sha256.New()
			if _, err := io.Copy(h, f); err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
	})
	b.Run("zstd-decode", func(b *testing.B) {
		b.SetBytes(size)
		lim := bundle.DefaultLimits()
		for b.Loop() {
			f, err := os.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			dec, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
				zstd.WithDecoderMaxWindow(lim.MaxWindowBytes), zstd.WithDecoderMaxMemory(lim.MaxDecoderMemory))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, dec); err != nil {
				b.Fatal(err)
			}
			dec.Close()
			f.Close()
		}
	})
	b.Run("verify", func(b *testing.B) {
		b.SetBytes(size)
		sig, err := bundle.ReadSignature(sigPath)
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if err := tr.VerifySignature(path, sig); err != nil {
				b.Fatal(err)
			}
		}
	})
	n := 0
	b.Run("unpack", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			n++
			dest := filepath.Join(dir, "unpack-"+strconv.Itoa(n))
			if _, err := bundle.Unpack(context.Background(), path, dest, bundle.Limits{}); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			os.RemoveAll(dest)
			b.StartTimer()
		}
	})
	b.Run("verify+unpack", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			n++
			dest := filepath.Join(dir, "unpack-"+strconv.Itoa(n))
			if _, err := bundle.VerifyAndUnpack(context.Background(), path, sigPath, tr, dest, bundle.Limits{}); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			os.RemoveAll(dest)
			b.StartTimer()
		}
	})
}
