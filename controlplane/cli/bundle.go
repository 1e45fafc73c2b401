package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgefleet/edgefleet/controlplane/client"
	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/mlflow"
	"github.com/edgefleet/edgefleet/shared/model"
	"github.com/edgefleet/edgefleet/shared/tensor"
)

func newBundleCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bundle",
		Short: "Build, sign, verify and inspect model bundles",
		Long: `A bundle is one file (NAME-VERSION.bundle): a zstd-compressed tar holding
manifest.json and the files it lists, with a detached signature beside it
(NAME-VERSION.bundle.sig) that cosign verify-blob also accepts.
See docs/bundle-format.md.`,
	}
	cmd.AddCommand(
		newBundleBuildCmd(a),
		newBundleSignCmd(a),
		newBundleVerifyCmd(a),
		newBundleInspectCmd(a),
		newBundlePushCmd(a),
		newBundlePullCmd(a),
		newBundleListCmd(a),
	)
	return cmd
}

func newBundleBuildCmd(a *app) *cobra.Command {
	var file, fromMLflow, mlflowURI, name, version string
	var noCheck bool
	out := &outputFlag{}
	cmd := &cobra.Command{
		Use:   "build [SPEC_DIR] [--from-mlflow DIR] [--out FILE] [--no-check]",
		Short: "Build a bundle from a bundle.yaml spec or an MLflow model",
		Long: `Build a bundle from SPEC_DIR/bundle.yaml. The files are staged, the
manifest written, and the model checked as a device will check it: loaded
through ONNX Runtime, its inputs and outputs compared with the spec, and
every smoke vector run. Only then is FILE (default NAME-VERSION.bundle in
the current directory) written, atomically. The same spec and files give
the same bytes; set SOURCE_DATE_EPOCH to record a creation time.

With --from-mlflow DIR the model, its inputs and outputs and its lineage
(run_id, model_uuid, source URI) come from the MLflow model directory DIR
(MLmodel with the onnx flavor and a tensor signature), and the signature is
held to the ONNX graph first; bundle.yaml, if given, must not set model,
inputs, outputs or lineage. Without SPEC_DIR, --name and --version say what
the bundle is. See docs/integrations.md.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if fromMLflow != "" && len(args) > 1 {
				return usagef("%s: unexpected argument %q (usage: %s)", cmd.CommandPath(), args[1], cmd.UseLine())
			}
			if fromMLflow != "" {
				return nil
			}
			return exactArgs("SPEC_DIR")(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var spec *bundle.Spec
			var err error
			if fromMLflow == "" {
				if name != "" || version != "" || mlflowURI != "" {
					return usagef("--name, --version and --mlflow-uri go with --from-mlflow")
				}
				spec, err = bundle.LoadSpec(args[0])
			} else {
				spec, err = mlflowSpec(args, fromMLflow, mlflowURI, name, version, noCheck)
			}
			if err != nil {
				return err
			}
			if file == "" {
				file = spec.Name + "-" + spec.Version + ".bundle"
			}
			created, err := sourceDateEpoch()
			if err != nil {
				return err
			}
			opts := bundle.BuildOptions{Logger: a.log, Created: created}
			if noCheck {
				fmt.Fprintln(a.stderr, "fleetctl: WARNING: --no-check: the model was NOT loaded and its smoke vectors were NOT run.")
				fmt.Fprintln(a.stderr, "fleetctl: WARNING: devices run them before activating and will refuse a bundle that fails them.")
				a.log.Warn("building without checking the model", "spec", args)
			} else {
				opts.Check = func(ctx context.Context, dir string, m *bundle.Manifest) error {
					return a.check(ctx, dir, m, a.log)
				}
			}
			m, err := bundle.BuildSpec(ctx, spec, file, opts)
			if err != nil {
				return err
			}
			size, sum, err := client.FileDigest(file)
			if err != nil {
				return err
			}
			if out.machine() {
				return out.write(a.stdout, buildResult{
					File: file, ID: m.ID(), Name: m.Name, Version: m.Version,
					Files: len(m.Files), Size: size, SHA256: sum, Checked: !noCheck,
					Lineage: m.Lineage,
				})
			}
			checked := "checked"
			if noCheck {
				checked = "NOT checked"
			}
			fmt.Fprintf(a.stdout, "built %s: %s, %d files, %s, sha256 %s (model %s)\n", file, m.ID(), len(m.Files), formatBytes(size), sum, checked)
			if m.Lineage != nil {
				fmt.Fprintf(a.stdout, "lineage: %s\n", lineageText(m.Lineage))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&file, "out", "", "bundle file to write (default NAME-VERSION.bundle)")
	cmd.Flags().BoolVar(&noCheck, "no-check", false, "skip loading the model and running the smoke vectors (not recommended)")
	cmd.Flags().StringVar(&fromMLflow, "from-mlflow", "", "take the model, its signature and lineage from this MLflow model `DIR`")
	cmd.Flags().StringVar(&mlflowURI, "mlflow-uri", "", "with --from-mlflow: the `URI` the model was taken from, e.g. models:/vad/3 (default runs:/RUN_ID/ARTIFACT_PATH)")
	cmd.Flags().StringVar(&name, "name", "", "with --from-mlflow: the bundle's name (overrides the spec's)")
	cmd.Flags().StringVar(&version, "version", "", "with --from-mlflow: the bundle's version (overrides the spec's)")
	out.register(cmd)
	return cmd
}

// mlflowSpec is the spec of bundle build --from-mlflow: SPEC_DIR's (if
// given) or an empty one, with the MLflow model's file, signature and
// lineage. Unless noCheck, the signature is held to the ONNX graph.
func mlflowSpec(args []string, dir, uri, name, version string, noCheck bool) (*bundle.Spec, error) {
	mm, err := mlflow.Load(dir)
	if err != nil {
		return nil, err
	}
	var spec *bundle.Spec
	if len(args) == 1 {
		if spec, err = bundle.ReadSpec(args[0]); err != nil {
			return nil, err
		}
	} else {
		if name == "" || version == "" {
			return nil, usagef("bundle build --from-mlflow without SPEC_DIR needs --name and --version")
		}
		cwd, err := os.Getwd()
		if err != nil {
			return nil, err
		}
		spec = bundle.NewSpec(cwd, name, version)
	}
	if name != "" {
		spec.Name = name
	}
	if version != "" {
		spec.Version = version
	}
	if err := spec.UseModel(mm.Source(uri)); err != nil {
		return nil, err
	}
	if !noCheck {
		if err := model.CheckIO(mm.ONNX, mm.Inputs, mm.Outputs, model.Options{}); err != nil {
			return nil, fmt.Errorf("MLflow signature of %s does not match its ONNX graph %s: %w", dir, mm.ONNX, err)
		}
	}
	return spec, nil
}

// lineageText is a bundle's lineage on one line, for people.
func lineageText(l *bundle.Lineage) string {
	parts := []string{l.Source}
	for _, f := range []struct{ k, v string }{
		{"run", l.RunID}, {"model", l.ModelUUID}, {"uri", l.URI}, {"version", l.SourceVersion}, {"created", l.Created},
	} {
		if f.v != "" {
			parts = append(parts, f.k+" "+f.v)
		}
	}
	return strings.Join(parts, ", ")
}

// buildResult is what bundle build prints with -o json or yaml.
type buildResult struct {
	File    string `json:"file"`
	ID      string `json:"id"`
	Name    string `json:"name"`
	Version string `json:"version"`
	Files   int    `json:"files"`
	Size    int64  `json:"size"`
	SHA256  string `json:"sha256"`
	// Checked is false with --no-check: the model was not loaded.
	Checked bool `json:"checked"`
	// Lineage is where the model came from (--from-mlflow).
	Lineage *bundle.Lineage `json:"lineage,omitempty"`
}

// sourceDateEpoch reads SOURCE_DATE_EPOCH (reproducible-builds.org), the
// creation time to record; unset means none, which keeps builds
// byte-for-byte reproducible.
func sourceDateEpoch() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Time{}, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q is not a number of seconds", s)
	}
	return time.Unix(n, 0).UTC(), nil
}

func newBundleSignCmd(a *app) *cobra.Command {
	var keyPath, sigPath string
	cmd := &cobra.Command{
		Use:   "sign --key signing.key FILE [--sig FILE.sig]",
		Short: "Sign a bundle (detached, cosign-compatible)",
		Long: `Sign the whole bundle file with a private key and write the detached
signature to FILE.sig: base64 of the DER signature, as cosign sign-blob
writes it. Check it with fleetctl bundle verify, or with
cosign verify-blob --key signing.pub --signature FILE.sig --insecure-ignore-tlog=true FILE.`,
		Args: exactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := args[0]
			if sigPath == "" {
				sigPath = path + ".sig"
			}
			s, err := bundle.LoadSigner(keyPath)
			if err != nil {
				return err
			}
			sig, err := bundle.SignFile(path, s)
			if err != nil {
				return err
			}
			if err := bundle.WriteSignature(sigPath, sig); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "signed %s: wrote %s\n", path, sigPath)
			return nil
		},
	}
	cmd.Flags().StringVar(&keyPath, "key", "", "private key (PEM, from fleetctl keys generate)")
	cmd.Flags().StringVar(&sigPath, "sig", "", "signature file to write (default FILE.sig)")
	cmd.MarkFlagRequired("key")
	return cmd
}

// verified unpacks a bundle into a temporary directory after checking its
// signature, and removes the directory again.
func verified(ctx context.Context, path, sigPath string, keys []string) (*bundle.Manifest, *bundle.TrustRoot, error) {
	if sigPath == "" {
		sigPath = path + ".sig"
	}
	tr, err := bundle.LoadTrustRoot(keys...)
	if err != nil {
		return nil, nil, err
	}
	tmp, err := os.MkdirTemp("", "fleetctl-verify-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(tmp)
	m, err := bundle.VerifyAndUnpack(ctx, path, sigPath, tr, tmp, bundle.Limits{})
	if err != nil {
		return nil, nil, err
	}
	return m, tr, nil
}

func newBundleVerifyCmd(a *app) *cobra.Command {
	var keys []string
	var sigPath string
	out := &outputFlag{}
	cmd := &cobra.Command{
		Use:   "verify --key signing.pub [--sig FILE.sig] FILE",
		Short: "Verify a bundle's signature and every file's digest",
		Long: `Verify FILE as a device does: the signature first (nothing is
decompressed before it holds), then a defensive unpack into a temporary
directory checking every entry and digest against the manifest. Exits 0
only when everything holds. --key may be given several times; one
matching key is enough.`,
		Args: exactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := args[0]
			m, tr, err := verified(cmd.Context(), path, sigPath, keys)
			if err != nil {
				return err
			}
			var total int64
			for _, f := range m.Files {
				total += f.Size
			}
			if out.machine() {
				return out.write(a.stdout, verifyResult{
					Verified: true, Bundle: path, ID: m.ID(), Name: m.Name, Version: m.Version,
					TrustedKeys: tr.KeyIDs(), Files: m.Files, TotalBytes: total,
				})
			}
			fmt.Fprintf(a.stdout, "OK %s (%s)\n", m.ID(), path)
			fmt.Fprintf(a.stdout, "  signature: valid, by one of %d trusted key(s) %s\n", len(tr.KeyIDs()), strings.Join(tr.KeyIDs(), ", "))
			fmt.Fprintf(a.stdout, "  files:     %d of %d verified (sha256 and size), %s unpacked\n", len(m.Files), len(m.Files), formatBytes(total))
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&keys, "key", nil, "trusted public key (PEM); repeatable")
	cmd.Flags().StringVar(&sigPath, "sig", "", "signature file (default FILE.sig)")
	cmd.MarkFlagRequired("key")
	out.register(cmd)
	return cmd
}

type verifyResult struct {
	Verified    bool          `json:"verified"`
	Bundle      string        `json:"bundle"`
	ID          string        `json:"id"`
	Name        string        `json:"name"`
	Version     string        `json:"version"`
	TrustedKeys []string      `json:"trustedKeys"`
	Files       []bundle.File `json:"files"`
	TotalBytes  int64         `json:"totalBytes"`
}

const unverifiedNote = "UNVERIFIED: no --key given; this is what the file claims. Its signature and digests were not checked."

func newBundleInspectCmd(a *app) *cobra.Command {
	var keys []string
	var sigPath string
	out := &outputFlag{}
	cmd := &cobra.Command{
		Use:   "inspect FILE [-o json] [--key signing.pub [--sig FILE.sig]]",
		Short: "Print a bundle's manifest",
		Long: `Print the manifest of FILE. Without --key nothing is verified: the
output is marked UNVERIFIED. With --key the bundle is verified in full
first, as fleetctl bundle verify does.`,
		Args: exactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := args[0]
			var m *bundle.Manifest
			var err error
			verifiedOK := len(keys) > 0
			if verifiedOK {
				m, _, err = verified(cmd.Context(), path, sigPath, keys)
			} else {
				m, err = bundle.ReadManifest(cmd.Context(), path, bundle.Limits{})
			}
			if err != nil {
				return err
			}
			if out.machine() {
				if !verifiedOK {
					fmt.Fprintln(a.stderr, "fleetctl: "+unverifiedNote)
				}
				return out.write(a.stdout, struct {
					Verified bool             `json:"verified"`
					Manifest *bundle.Manifest `json:"manifest"`
				}{verifiedOK, m})
			}
			if verifiedOK {
				fmt.Fprintf(a.stdout, "VERIFIED: signature and every digest checked.\n\n")
			} else {
				fmt.Fprintf(a.stdout, "%s\n\n", unverifiedNote)
			}
			return printManifest(a.stdout, m)
		},
	}
	cmd.Flags().StringArrayVar(&keys, "key", nil, "verify against this public key (PEM) first; repeatable")
	cmd.Flags().StringVar(&sigPath, "sig", "", "signature file (default FILE.sig)")
	out.register(cmd)
	return cmd
}

func printManifest(w io.Writer, m *bundle.Manifest) error {
	or := func(s, dflt string) string {
		if s == "" {
			return dflt
		}
		return s
	}
	tw := newTable(w)
	fmt.Fprintf(tw, "bundle\t%s\n", m.ID())
	fmt.Fprintf(tw, "schema\t%d\n", m.SchemaVersion)
	fmt.Fprintf(tw, "created\t%s\n", or(m.Created, "-"))
	fmt.Fprintf(tw, "min agent\t%s\n", or(m.MinAgentVersion, "-"))
	fmt.Fprintf(tw, "model\t%s\n", m.Runtime.Model)
	fmt.Fprintf(tw, "inputs\t%s\n", specList(m.Runtime.Inputs))
	fmt.Fprintf(tw, "outputs\t%s\n", specList(m.Runtime.Outputs))
	pre, post := "-", "-"
	if m.Runtime.Pre != nil {
		pre = m.Runtime.Pre.Module
	}
	if m.Runtime.Post != nil {
		post = m.Runtime.Post.Module
	}
	fmt.Fprintf(tw, "pre\t%s\n", pre)
	fmt.Fprintf(tw, "post\t%s\n", post)
	providers := strings.Join(m.Runtime.ExecutionProviders, ", ")
	if !slices.Contains(m.Runtime.ExecutionProviders, "cpu") {
		providers = strings.TrimPrefix(providers+", cpu (implicit)", ", ")
	}
	fmt.Fprintf(tw, "providers\t%s\n", providers)
	nonFinite := "refused"
	if m.Runtime.AllowNonFinite {
		nonFinite = "allowed"
	}
	fmt.Fprintf(tw, "NaN/Inf inputs\t%s\n", nonFinite)
	fmt.Fprintf(tw, "profile\t%s\n", or(m.Profile, "-"))
	if m.Lineage != nil {
		fmt.Fprintf(tw, "lineage\t%s\n", lineageText(m.Lineage))
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintf(w, "\nfiles:\n")
	tw = newTable(w)
	fmt.Fprintf(tw, "  PATH\tSIZE\tSHA256\n")
	for _, f := range m.Files {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", f.Path, formatBytes(f.Size), f.SHA256)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintf(w, "\nsmoke vectors:\n")
	if len(m.Smoke) == 0 {
		fmt.Fprintf(w, "  none\n")
		return nil
	}
	tw = newTable(w)
	fmt.Fprintf(tw, "  NAME\tINPUT\tEXPECTED\tTOLERANCE\n")
	for _, v := range m.Smoke {
		in := fmt.Sprintf("raw, %d bytes (through pre)", len(v.Raw))
		if len(v.Inputs) > 0 {
			names := make([]string, len(v.Inputs))
			for i, t := range v.Inputs {
				names[i] = t.Name
			}
			in = "tensors " + strings.Join(names, ", ") + " (to the model)"
		}
		exp := make([]string, len(v.Expected))
		for i, t := range v.Expected {
			exp[i] = fmt.Sprintf("%s %v", t.Name, t.Shape)
		}
		tol := fmt.Sprintf("abs %g", v.Tolerance.Abs)
		if v.Tolerance.Rel != 0 {
			tol += fmt.Sprintf(", rel %g", v.Tolerance.Rel)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", v.Name, in, strings.Join(exp, ", "), tol)
	}
	return tw.Flush()
}

func specList(specs []tensor.Spec) string {
	parts := make([]string, len(specs))
	for i, s := range specs {
		parts[i] = fmt.Sprintf("%s %s %v", s.Name, s.Datatype, s.Shape)
	}
	return strings.Join(parts, "; ")
}
