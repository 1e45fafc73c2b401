package cli

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/client"
	"github.com/edgefleet/edgefleet/shared/bundle"
)

func newKeysCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Manage bundle signing keys",
	}
	cmd.AddCommand(newKeysGenerateCmd(a), newKeysFingerprintCmd(a), newKeysListCmd(a))
	return cmd
}

func newKeysFingerprintCmd(a *app) *cobra.Command {
	out := &outputFlag{}
	cmd := &cobra.Command{
		Use:   "fingerprint FILE.pub...",
		Short: "Print the id (fingerprint) of public keys",
		Long: `Print the id of each public key in the files (PEM, as keys generate and
cosign generate-key-pair write): the first 16 hex digits of the sha256 of
its PKIX DER, the id fleetd and devices name keys by.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("%s: missing FILE.pub (usage: %s)", cmd.CommandPath(), cmd.UseLine())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var keys []bundle.KeyInfo
			for _, f := range args {
				tr, err := bundle.LoadTrustRoot(f)
				if err != nil {
					return err
				}
				keys = append(keys, tr.Keys()...)
			}
			if out.machine() {
				return out.write(a.stdout, keys)
			}
			return printKeys(a.stdout, keys)
		},
	}
	out.register(cmd)
	return cmd
}

func newKeysListCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the publisher keys fleetd accepts pushes from",
		Long: `List the keys of fleetd's registry.trustedKeys: a push is stored only when
one of them made its signature. Devices trust their own pinned keys
(trust.publicKeys in their configuration), which fleetd cannot change.`,
		Args: exactArgs(),
	}
	return newFetchCmd(a, cmd, func(ctx context.Context, c *client.Client, _ []string) (*api.Keys, error) {
		return c.Keys(ctx)
	}, func(w io.Writer, k *api.Keys) error {
		switch {
		case len(k.Keys) == 0 && k.InsecureAcceptAnyKey:
			fmt.Fprintln(w, "fleetd trusts no key and stores any signed bundle (registry.insecureAcceptAnyKey)")
			return nil
		case len(k.Keys) == 0:
			fmt.Fprintln(w, "fleetd trusts no key: every push is refused (set registry.trustedKeys)")
			return nil
		}
		return printKeys(w, k.Keys)
	})
}

// printKeys is the table of keys fingerprint and keys list.
func printKeys(w io.Writer, keys []bundle.KeyInfo) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tALGORITHM\tFILE")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", k.ID, k.Algorithm, k.File)
	}
	return tw.Flush()
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
			if out.machine() {
				return out.write(a.stdout, map[string]string{
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
