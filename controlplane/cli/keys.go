package cli

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/edgefleet/edgefleet/shared/bundle"
)

func newKeysCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Manage bundle signing keys",
	}
	cmd.AddCommand(newKeysGenerateCmd(a))
	return cmd
}

func newKeysGenerateCmd(a *app) *cobra.Command {
	var dir, alg string
	out := &outputFlag{}
	cmd := &cobra.Command{
		Use:   "generate --out DIR [--algorithm ecdsa-p256|ed25519]",
		Short: "Generate a bundle signing key pair",
		Long: `Generate a key pair for signing bundles: DIR/signing.key (PKCS#8 PEM,
mode 0600) and DIR/signing.pub (PEM). Keep signing.key with the publisher,
never on the control plane; give signing.pub to devices. ECDSA P-256 is
the default; Ed25519 signatures need the whole bundle in memory to verify.
Existing keys are never overwritten.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := bundle.GenerateKey(dir, bundle.Algorithm(alg)); err != nil {
				return err
			}
			keyPath, pubPath := filepath.Join(dir, bundle.PrivateKeyFile), filepath.Join(dir, bundle.PublicKeyFile)
			tr, err := bundle.LoadTrustRoot(pubPath)
			if err != nil {
				return err
			}
			if out.json() {
				return writeJSON(a.stdout, map[string]string{
					"algorithm":  alg,
					"privateKey": keyPath,
					"publicKey":  pubPath,
					"keyID":      tr.KeyIDs()[0],
				})
			}
			fmt.Fprintf(a.stdout, "wrote %s (private %s key, mode 0600: keep it secret and off the control plane)\n", keyPath, alg)
			fmt.Fprintf(a.stdout, "wrote %s (public key %s: give it to devices and to fleetctl bundle verify --key)\n", pubPath, tr.KeyIDs()[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "out", "", "directory to write signing.key and signing.pub into (created 0700)")
	cmd.Flags().StringVar(&alg, "algorithm", string(bundle.ECDSAP256), "key algorithm: ecdsa-p256 or ed25519")
	cmd.MarkFlagRequired("out")
	out.register(cmd)
	return cmd
}
