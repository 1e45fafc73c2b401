package bundle

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/options"
)

// MaxEd25519Bytes bounds the files an Ed25519 key can verify: pure
// Ed25519 (what cosign sign-blob and verify-blob use) hashes the message
// twice, so the verifier holds the whole file in memory. ECDSA P-256
// streams and has no such bound; prefer it for large bundles.
const MaxEd25519Bytes = 512 << 20

// TrustRoot is the set of public keys a bundle's signature may be made
// with. It is immutable and safe for concurrent use.
type TrustRoot struct {
	keys []trustedKey
}

type trustedKey struct {
	id       string // first 16 hex digits of the sha256 of the PKIX DER
	alg      Algorithm
	file     string // where LoadTrustRoot read it; "" from ParseTrustRoot
	verifier signature.Verifier
}

// LoadTrustRoot reads PEM public keys ("PUBLIC KEY", PKIX, as GenerateKey
// and cosign generate-key-pair write) from files; a file may hold several.
func LoadTrustRoot(pemPaths ...string) (*TrustRoot, error) {
	pems := make([][]byte, 0, len(pemPaths))
	for _, p := range pemPaths {
		b, err := readSmallFile(p, maxKeyFileBytes)
		if err != nil {
			return nil, fmt.Errorf("reading public key: %w", err)
		}
		pems = append(pems, b)
	}
	t, err := parseTrustRoot(pemPaths, pems)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", strings.Join(pemPaths, ", "), err)
	}
	return t, nil
}

// ParseTrustRoot parses PEM-encoded public keys, ECDSA P-256 or Ed25519.
// Anything else (another PEM type, an RSA key, another curve) is an error.
func ParseTrustRoot(pems ...[]byte) (*TrustRoot, error) {
	return parseTrustRoot(nil, pems)
}

// parseTrustRoot is ParseTrustRoot, with files[i] (if given) the file
// pems[i] was read from.
func parseTrustRoot(files []string, pems [][]byte) (*TrustRoot, error) {
	t := &TrustRoot{}
	seen := map[string]bool{}
	for i, b := range pems {
		n := 0
		for {
			var block *pem.Block
			block, b = pem.Decode(b)
			if block == nil {
				break
			}
			n++
			if block.Type != "PUBLIC KEY" {
				return nil, fmt.Errorf("key %d: PEM block %q is not a \"PUBLIC KEY\"", i+1, block.Type)
			}
			pub, err := x509.ParsePKIXPublicKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("key %d: %w", i+1, err)
			}
			alg, err := keyAlgorithm(pub)
			if err != nil {
				return nil, fmt.Errorf("key %d: %w", i+1, err)
			}
			v, err := signature.LoadVerifier(pub, crypto.SHA256)
			if err != nil {
				return nil, fmt.Errorf("key %d: %w", i+1, err)
			}
			sum := sha256.Sum256(block.Bytes)
			id := hex.EncodeToString(sum[:8])
			if seen[id] {
				continue
			}
			seen[id] = true
			k := trustedKey{id: id, alg: alg, verifier: v}
			if i < len(files) {
				k.file = files[i]
			}
			t.keys = append(t.keys, k)
		}
		if n == 0 {
			return nil, fmt.Errorf("key %d: no PEM block found", i+1)
		}
	}
	if len(t.keys) == 0 {
		return nil, errors.New("no public keys given")
	}
	return t, nil
}

// KeyInfo describes one trusted key.
type KeyInfo struct {
	// ID is the short fingerprint (KeyIDs).
	ID        string    `json:"id"`
	Algorithm Algorithm `json:"algorithm"`
	// File is the PEM file LoadTrustRoot read it from (the first, for a
	// key given twice); empty for ParseTrustRoot.
	File string `json:"file,omitempty"`
}

// Keys describes the trusted keys, in the order they were given.
func (t *TrustRoot) Keys() []KeyInfo {
	ks := make([]KeyInfo, len(t.keys))
	for i, k := range t.keys {
		ks[i] = KeyInfo{ID: k.id, Algorithm: k.alg, File: k.file}
	}
	return ks
}

// KeyIDs lists the trusted keys' short fingerprints (the first 16 hex
// digits of the sha256 of each key's PKIX DER encoding).
func (t *TrustRoot) KeyIDs() []string {
	ids := make([]string, len(t.keys))
	for i, k := range t.keys {
		ids[i] = k.id
	}
	return ids
}

// VerifySignature checks sig (decoded as ReadSignature returns it, or the
// base64 text of a .sig file) over the whole file at bundlePath against
// every trusted key; one match is enough. The file is only read, never
// decompressed: ECDSA keys stream it through SHA-256 once; Ed25519 keys
// read it into memory (at most MaxEd25519Bytes). Errors wrap ErrSignature.
func (t *TrustRoot) VerifySignature(bundlePath string, sig []byte) error {
	_, err := t.Signer(bundlePath, sig)
	return err
}

// Signer is VerifySignature that also says which trusted key made sig.
func (t *TrustRoot) Signer(bundlePath string, sig []byte) (KeyInfo, error) {
	f, err := os.Open(bundlePath)
	if err != nil {
		return KeyInfo{}, fmt.Errorf("%w: %w", ErrSignature, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return KeyInfo{}, fmt.Errorf("%w: %w", ErrSignature, err)
	}
	if !fi.Mode().IsRegular() {
		return KeyInfo{}, fmt.Errorf("%w: %s is not a regular file", ErrSignature, bundlePath)
	}
	k, err := t.signer(context.Background(), io.NewSectionReader(f, 0, fi.Size()), sig)
	if err != nil {
		return KeyInfo{}, fmt.Errorf("verifying %s: %w", bundlePath, err)
	}
	return KeyInfo{ID: k.id, Algorithm: k.alg, File: k.file}, nil
}

// verify checks sig over all of r.
func (t *TrustRoot) verify(ctx context.Context, r *io.SectionReader, sig []byte) error {
	_, err := t.signer(ctx, r, sig)
	return err
}

// signer checks sig over all of r and returns the key that made it.
func (t *TrustRoot) signer(ctx context.Context, r *io.SectionReader, sig []byte) (trustedKey, error) {
	if t == nil || len(t.keys) == 0 {
		return trustedKey{}, fmt.Errorf("%w: no trusted keys", ErrSignature)
	}
	if len(sig) == 0 {
		return trustedKey{}, fmt.Errorf("%w: empty signature", ErrSignature)
	}
	if looksBase64(sig) {
		if d, err := decodeSignature(sig); err == nil {
			sig = d
		}
	}
	var digest []byte
	var message []byte
	// ECDSA keys first: they only need one streaming pass over the file,
	// and spare reading it into memory when one of them matches.
	ordered := make([]trustedKey, 0, len(t.keys))
	for _, alg := range []Algorithm{ECDSAP256, Ed25519} {
		for _, k := range t.keys {
			if k.alg == alg {
				ordered = append(ordered, k)
			}
		}
	}
	for _, k := range ordered {
		var err error
		switch k.alg {
		case ECDSAP256:
			if digest == nil {
				h := sha256.New()
				if _, err := io.Copy(h, ctxReader{ctx, io.NewSectionReader(r, 0, r.Size())}); err != nil {
					return trustedKey{}, fmt.Errorf("%w: reading: %w", ErrSignature, err)
				}
				digest = h.Sum(nil)
			}
			err = k.verifier.VerifySignature(bytes.NewReader(sig), nil, options.WithDigest(digest))
		case Ed25519:
			if message == nil {
				if r.Size() > MaxEd25519Bytes {
					return trustedKey{}, fmt.Errorf("%w: %w: %d bytes is more than an Ed25519 key can verify (%d); use ECDSA P-256 for large bundles", ErrSignature, ErrLimit, r.Size(), int64(MaxEd25519Bytes))
				}
				message = make([]byte, r.Size())
				if _, err := io.ReadFull(ctxReader{ctx, io.NewSectionReader(r, 0, r.Size())}, message); err != nil {
					return trustedKey{}, fmt.Errorf("%w: reading: %w", ErrSignature, err)
				}
			}
			err = k.verifier.VerifySignature(bytes.NewReader(sig), bytes.NewReader(message))
		}
		if err == nil {
			return k, nil
		}
	}
	ids := t.KeyIDs()
	return trustedKey{}, fmt.Errorf("%w: %w: made by none of the %d trusted key(s) %s, or the file was modified", ErrSignature, ErrUntrusted, len(ids), strings.Join(ids, ", "))
}

// looksBase64 reports whether b is entirely base64 text (plus
// whitespace), as a .sig file is; raw signatures are binary.
func looksBase64(b []byte) bool {
	for _, c := range b {
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '+', c == '/', c == '=',
			c == ' ', c == '\n', c == '\r', c == '\t':
		default:
			return false
		}
	}
	return true
}

// ctxReader fails reads once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
