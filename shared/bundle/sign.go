package bundle

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/edgefleet/edgefleet/shared/atomicfile"
)

// Algorithm is a signing key algorithm.
type Algorithm string

// The supported algorithms. Both give signatures `cosign verify-blob
// --key` accepts: ECDSA P-256 over SHA-256 (ASN.1 DER), and pure Ed25519.
const (
	ECDSAP256 Algorithm = "ecdsa-p256"
	Ed25519   Algorithm = "ed25519"
)

// File names GenerateKey writes.
const (
	PrivateKeyFile = "signing.key"
	PublicKeyFile  = "signing.pub"
)

// maxKeyFileBytes and maxSigFileBytes bound what is read from key and
// signature files.
const (
	maxKeyFileBytes = 64 << 10
	maxSigFileBytes = 16 << 10
)

// GenerateKey creates a key pair in dir (created 0700 if missing):
// signing.key, the PKCS#8 private key in PEM, mode 0600, and signing.pub,
// the PKIX public key in PEM. alg "" means ECDSAP256. It refuses to
// overwrite an existing key.
func GenerateKey(dir string, alg Algorithm) error {
	var priv crypto.Signer
	var err error
	switch alg {
	case "", ECDSAP256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case Ed25519:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		return fmt.Errorf("unknown key algorithm %q (want %q or %q)", alg, ECDSAP256, Ed25519)
	}
	if err != nil {
		return fmt.Errorf("generating key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return fmt.Errorf("encoding private key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		return fmt.Errorf("encoding public key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating key directory: %w", err)
	}
	keyPath, pubPath := filepath.Join(dir, PrivateKeyFile), filepath.Join(dir, PublicKeyFile)
	for _, p := range []string{keyPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s already exists; refusing to overwrite a key", p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if err := atomicfile.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("writing private key: %w", err)
	}
	if err := atomicfile.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		os.Remove(keyPath)
		return fmt.Errorf("writing public key: %w", err)
	}
	return nil
}

// LoadSigner reads an unencrypted PEM private key (PKCS#8 "PRIVATE KEY",
// as GenerateKey writes, or SEC 1 "EC PRIVATE KEY") and returns a signer
// for it: ECDSA P-256 with SHA-256, or pure Ed25519. Encrypted cosign keys
// are refused; sign with `cosign sign-blob` instead (see
// docs/bundle-format.md).
func LoadSigner(keyPath string) (signature.Signer, error) {
	b, err := readSmallFile(keyPath, maxKeyFileBytes)
	if err != nil {
		return nil, fmt.Errorf("reading signing key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("signing key %s: no PEM block", keyPath)
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
		return nil, fmt.Errorf("signing key %s is encrypted (%s); fleetctl reads unencrypted PKCS#8 keys: sign with `cosign sign-blob --key` instead", keyPath, block.Type)
	default:
		return nil, fmt.Errorf("signing key %s: unsupported PEM block %q (want \"PRIVATE KEY\")", keyPath, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", keyPath, err)
	}
	if _, err := keyAlgorithm(publicOf(key)); err != nil {
		return nil, fmt.Errorf("signing key %s: %w", keyPath, err)
	}
	s, err := signature.LoadSigner(key, crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", keyPath, err)
	}
	return s, nil
}

func publicOf(key any) crypto.PublicKey {
	if s, ok := key.(crypto.Signer); ok {
		return s.Public()
	}
	return nil
}

// keyAlgorithm names a supported public key's algorithm and refuses the
// rest (RSA, other curves).
func keyAlgorithm(pub crypto.PublicKey) (Algorithm, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return "", fmt.Errorf("ECDSA curve %s is not supported (want P-256)", k.Curve.Params().Name)
		}
		return ECDSAP256, nil
	case ed25519.PublicKey:
		return Ed25519, nil
	}
	return "", fmt.Errorf("key type %T is not supported (want ECDSA P-256 or Ed25519)", pub)
}

// SignFile signs the whole file at bundlePath and returns the signature
// as cosign sign-blob writes it: the base64 (standard encoding) of the
// ASN.1 DER ECDSA signature, or of the raw Ed25519 signature. ECDSA
// streams the file; pure Ed25519 needs it in memory.
func SignFile(bundlePath string, s signature.Signer) ([]byte, error) {
	f, err := os.Open(bundlePath)
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	defer f.Close()
	sig, err := s.SignMessage(f)
	if err != nil {
		return nil, fmt.Errorf("signing %s: %w", bundlePath, err)
	}
	out := make([]byte, base64.StdEncoding.EncodedLen(len(sig)))
	base64.StdEncoding.Encode(out, sig)
	return out, nil
}

// WriteSignature writes sig (as SignFile returns it) to sigPath
// atomically, mode 0644.
func WriteSignature(sigPath string, sig []byte) error {
	if len(sig) == 0 {
		return fmt.Errorf("%w: refusing to write an empty signature", ErrSignature)
	}
	if err := atomicfile.WriteFile(sigPath, sig, 0o644); err != nil {
		return fmt.Errorf("writing signature: %w", err)
	}
	return nil
}

// ReadSignature reads a detached signature file in cosign's format
// (base64 of the signature, surrounding whitespace ignored) and returns
// the decoded signature bytes. Errors wrap ErrSignature.
func ReadSignature(sigPath string) ([]byte, error) {
	b, err := readSmallFile(sigPath, maxSigFileBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: reading signature: %w", ErrSignature, err)
	}
	sig, err := decodeSignature(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrSignature, sigPath, err)
	}
	return sig, nil
}

// decodeSignature decodes cosign's base64 text form.
func decodeSignature(b []byte) ([]byte, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil, errors.New("empty signature")
	}
	sig := make([]byte, base64.StdEncoding.DecodedLen(len(b)))
	n, err := base64.StdEncoding.Decode(sig, b)
	if err != nil {
		return nil, fmt.Errorf("signature is not base64: %v", err)
	}
	return sig[:n], nil
}

// readSmallFile reads a file of at most max bytes.
func readSmallFile(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return b, nil
}
