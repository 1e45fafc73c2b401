package cli

import (
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/firmware"
	"github.com/edgefleet/edgefleet/shared/atomicfile"
	"github.com/edgefleet/edgefleet/shared/bundle"
)

// Files enroll --agent-config writes beside the configuration; the
// configuration names them relative to its own directory.
const (
	agentPasswordFile = "mqtt.password"
	agentTrustDir     = "trust"
	agentTrustGlob    = agentTrustDir + "/*.pub" // as the package's default: /etc/edge-agent/trust/*.pub
)

// placeholderBroker stands in for fleetd's broker URL, which only the
// enrolment answer gives, when the configuration is checked beforehand.
const placeholderBroker = "tcp://fleetd.invalid:1883"

// agentFiles is what enroll --agent-config writes: the configuration,
// the password file and the pinned keys, each through a temporary file in
// its directory that is renamed (--force) or hard-linked (never replacing
// a file) into place.
type agentFiles struct {
	deviceID string
	labels   map[string]string
	dataDir  string
	broker   string // --broker, or "" for fleetd's first
	force    bool

	given    string // --agent-config as given, for messages
	config   string // absolute paths
	password string
	trustDir string
	keys     []pinnedKey

	created []string   // directories prepare made, parents first
	files   []*outFile // in the order they are installed: keys, password, config last
	done    bool       // committed: abort leaves everything
}

// pinnedKey is one publisher public key for the device's trust/.
type pinnedKey struct {
	id     string // bundle key id (fingerprint)
	source string // the --trust-key file
	pem    []byte // the key alone, PEM
}

// outFile is one file to write.
type outFile struct {
	path string
	mode os.FileMode
	data []byte
	tmp  string
	// installed: the final path now holds data.
	installed bool
}

// planAgentConfig checks everything --agent-config needs before fleetd
// is asked: the flags, the keys, the files it would write, and the
// configuration itself, parsed by the agent's own loader.
func planAgentConfig(id string, lbls map[string]string, f agentConfigFlags) (*agentFiles, error) {
	if len(f.trustKeys) == 0 {
		return nil, usagef("--agent-config needs at least one --trust-key FILE.pub: the device installs only bundles signed by a key it pins itself, and takes none from fleetd (fleetctl keys generate writes one)")
	}
	if !filepath.IsAbs(f.dataDir) {
		return nil, usagef("--data-dir %q: want an absolute path on the device, such as %s", f.dataDir, config.DefaultDataDir)
	}
	abs, err := filepath.Abs(f.file)
	if err != nil {
		return nil, usagef("--agent-config %q: %v", f.file, err)
	}
	if strings.HasSuffix(f.file, string(filepath.Separator)) {
		return nil, usagef("--agent-config %q: want a file name, such as %s", f.file, filepath.Join(f.file, "config.yaml"))
	}
	dir := filepath.Dir(abs)
	p := &agentFiles{
		deviceID: id, labels: lbls, dataDir: filepath.Clean(f.dataDir), broker: f.broker, force: f.force,
		given: f.file, config: abs,
		password: filepath.Join(dir, agentPasswordFile),
		trustDir: filepath.Join(dir, agentTrustDir),
	}
	if p.password == p.config {
		return nil, usagef("--agent-config %q: that name is the password file's; use e.g. config.yaml", f.file)
	}
	if p.keys, err = readPinnedKeys(f.trustKeys); err != nil {
		return nil, err
	}

	// The places to write: none may exist unless --force, and none may be
	// a directory (or anything but a file) even then.
	targets := []string{p.config, p.password}
	for _, k := range p.keys {
		targets = append(targets, k.path(p.trustDir))
	}
	var exist []string
	for _, t := range targets {
		fi, err := os.Lstat(t)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, err
		case !fi.Mode().IsRegular():
			return nil, usagef("%s exists and is not a regular file", p.display(t))
		default:
			exist = append(exist, p.display(t))
		}
	}
	if len(exist) > 0 && !f.force {
		return nil, fmt.Errorf("%s already exist%s: nothing enrolled (give --force to replace %s)", strings.Join(exist, ", "), plural(len(exist), "s", ""), plural(len(exist), "it", "them"))
	}
	for _, d := range []string{dir, p.trustDir} {
		if fi, err := os.Stat(d); err == nil && !fi.IsDir() {
			return nil, usagef("%s exists and is not a directory", p.display(d))
		}
	}
	// Other keys already in trust/ would be trusted by the device too.
	if others := p.otherKeys(); len(others) > 0 && !f.force {
		return nil, fmt.Errorf("%s holds other keys (%s) that the device would trust too (%s): nothing enrolled (remove them, or give --force to keep them)",
			p.display(p.trustDir), strings.Join(others, ", "), agentTrustGlob)
	}

	// The configuration, parsed and checked as the agent will: with a
	// placeholder for the broker fleetd has not named yet.
	broker := f.broker
	if broker == "" {
		broker = placeholderBroker
	}
	if _, err := p.render(broker, id); err != nil {
		return nil, withCode(ExitUsage, err)
	}
	return p, nil
}

// readPinnedKeys reads the --trust-key files: PEM public keys the agent
// accepts (ECDSA P-256, Ed25519), one or more per file, each kept once.
func readPinnedKeys(files []string) ([]pinnedKey, error) {
	var keys []pinnedKey
	seen := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("--trust-key: %w", err)
		}
		n := 0
		for rest := b; ; {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				break
			}
			n++
			one := pem.EncodeToMemory(&pem.Block{Type: block.Type, Bytes: block.Bytes})
			tr, err := bundle.ParseTrustRoot(one)
			if err != nil {
				return nil, fmt.Errorf("--trust-key %s: %w (want a publisher public key, as fleetctl keys generate writes signing.pub)", f, err)
			}
			id := tr.KeyIDs()[0]
			if seen[id] {
				continue
			}
			seen[id] = true
			keys = append(keys, pinnedKey{id: id, source: f, pem: one})
		}
		if n == 0 {
			return nil, fmt.Errorf("--trust-key %s: no PEM public key in it (want a publisher public key, as fleetctl keys generate writes signing.pub)", f)
		}
	}
	return keys, nil
}

func (k pinnedKey) path(trustDir string) string { return filepath.Join(trustDir, k.id+".pub") }

// otherKeys lists the *.pub files in trust/ that are not being written.
func (p *agentFiles) otherKeys() []string {
	m, _ := filepath.Glob(filepath.Join(p.trustDir, "*.pub"))
	var others []string
	for _, f := range m {
		if !slices.ContainsFunc(p.keys, func(k pinnedKey) bool { return k.path(p.trustDir) == f }) {
			others = append(others, filepath.Base(f))
		}
	}
	return others
}

// display is path as the user named it: relative to --agent-config as
// given.
func (p *agentFiles) display(path string) string {
	rel, err := filepath.Rel(filepath.Dir(p.config), path)
	if err != nil {
		return path
	}
	return filepath.Join(filepath.Dir(p.given), rel)
}

// render is the device's configuration: the package's default
// (firmware/edge-agent.yaml) with the device's settings, checked by the
// agent's configuration loader as if it were read from p.config.
func (p *agentFiles) render(broker, username string) ([]byte, error) {
	data, err := agentConfigYAML(agentConfigValues{
		DeviceID: p.deviceID, Labels: p.labels, DataDir: p.dataDir,
		Broker: broker, Username: username,
	})
	if err != nil {
		return nil, err
	}
	if _, err := config.Parse(data, filepath.Dir(p.config)); err != nil {
		var msgs []string
		for _, fe := range config.Problems(err) {
			msgs = append(msgs, fe.Key+": "+fe.Msg)
		}
		if len(msgs) == 0 {
			msgs = []string{err.Error()}
		}
		return nil, fmt.Errorf("the edge agent would refuse this configuration: %s", strings.Join(msgs, "; "))
	}
	return data, nil
}

// prepare makes the missing directories and a temporary file for each
// file to write, so that a place that cannot be written fails before the
// device is enrolled.
func (p *agentFiles) prepare() error {
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{filepath.Dir(p.config), 0o700}, {p.trustDir, 0o755}} {
		if err := p.mkdirs(d.path, d.mode); err != nil {
			p.abort()
			return err
		}
	}
	for _, k := range p.keys {
		p.files = append(p.files, &outFile{path: k.path(p.trustDir), mode: 0o644, data: k.pem})
	}
	p.files = append(p.files,
		&outFile{path: p.password, mode: 0o600},
		&outFile{path: p.config, mode: 0o644})
	for _, f := range p.files {
		t, err := os.CreateTemp(filepath.Dir(f.path), ".fleetctl-enroll-*")
		if err != nil {
			p.abort()
			return fmt.Errorf("--agent-config: %w", err)
		}
		f.tmp = t.Name()
		if err := t.Close(); err != nil {
			p.abort()
			return err
		}
	}
	return nil
}

// mkdirs makes dir and its missing parents with mode, recording those it
// made.
func (p *agentFiles) mkdirs(dir string, mode os.FileMode) error {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("--agent-config: %w", err)
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	for _, d := range slices.Backward(missing) {
		if err := os.Mkdir(d, mode); err != nil {
			return fmt.Errorf("--agent-config: %w", err)
		}
		p.created = append(p.created, d)
	}
	return nil
}

// commit writes the files for enrolment e and moves them into place,
// the configuration last.
func (p *agentFiles) commit(e *api.Enrolment) error {
	broker := p.broker
	if broker == "" {
		if len(e.Brokers) == 0 {
			return errors.New("fleetd named no broker URL for devices; give --broker URL (and set fleetd's broker.publicURLs)")
		}
		broker = e.Brokers[0]
	}
	cfg, err := p.render(broker, e.Username)
	if err != nil {
		return fmt.Errorf("with fleetd's broker %s: %w (give --broker URL)", broker, err)
	}
	for _, f := range p.files {
		switch f.path {
		case p.password:
			f.data = []byte(e.Password + "\n")
		case p.config:
			f.data = cfg
		}
		if err := writeSynced(f.tmp, f.data, f.mode); err != nil {
			return err
		}
	}
	for _, f := range p.files {
		if err := p.install(f); err != nil {
			return err
		}
	}
	for _, d := range []string{p.trustDir, filepath.Dir(p.config)} {
		if err := atomicfile.SyncDir(d); err != nil {
			return err
		}
	}
	p.broker = broker
	p.done = true
	return nil
}

// install moves f's temporary file into place: a rename with --force,
// otherwise a hard link, which fails rather than replace a file that
// appeared since the check.
func (p *agentFiles) install(f *outFile) error {
	if p.force {
		if err := os.Rename(f.tmp, f.path); err != nil {
			return err
		}
		f.tmp, f.installed = "", true
		return nil
	}
	if err := os.Link(f.tmp, f.path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s appeared meanwhile; not replacing it (give --force to)", p.display(f.path))
		}
		return err
	}
	f.installed = true
	if err := os.Remove(f.tmp); err != nil {
		return err
	}
	f.tmp = ""
	return nil
}

// abort removes what prepare and an unfinished commit left: temporary
// files, files installed without --force (they were new), and the
// directories made, when empty. After a commit it does nothing.
func (p *agentFiles) abort() {
	if p.done {
		return
	}
	for _, f := range p.files {
		if f.tmp != "" {
			os.Remove(f.tmp)
			f.tmp = ""
		}
		if f.installed && !p.force {
			os.Remove(f.path)
		}
	}
	for _, d := range slices.Backward(p.created) {
		os.Remove(d)
	}
	p.created = nil
}

// report says what was written and where it goes on the device.
func (p *agentFiles) report(w io.Writer) {
	fmt.Fprintf(w, "wrote %s: edge-agent configuration of %s (uplink %s, data in %s)\n", p.display(p.config), p.deviceID, p.broker, p.dataDir)
	fmt.Fprintf(w, "wrote %s (mode 0600): its MQTT password, shown nowhere else\n", p.display(p.password))
	for _, k := range p.keys {
		fmt.Fprintf(w, "wrote %s: publisher key %s (from %s), pinned on the device\n", p.display(k.path(p.trustDir)), k.id, k.source)
	}
	dir := p.display(filepath.Dir(p.config))
	fmt.Fprintf(w, "on the device, as root, after installing the edge-agent package:\n"+
		"  install -m 0640 -g edge-agent %s %s /etc/edge-agent/ && install -m 0644 %s /etc/edge-agent/trust/\n",
		p.display(p.config), p.display(p.password), filepath.Join(dir, agentTrustGlob))
	if filepath.Base(p.config) != "config.yaml" {
		fmt.Fprintf(w, "  (as /etc/edge-agent/config.yaml: the unit reads that file)\n")
	}
}

// writeSynced writes data to the existing file path with mode, and syncs it.
func writeSynced(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// agentConfigValues are what enroll sets in the package's default
// configuration.
type agentConfigValues struct {
	DeviceID string
	Labels   map[string]string
	DataDir  string
	Broker   string
	Username string
}

// agentConfigYAML is firmware/edge-agent.yaml (the configuration the
// Debian package installs) with v's settings: deviceID, labels, dataDir
// (and the WASM cache under it), the pinned keys in trust/ and the uplink
// with the password file beside the configuration. Everything else stays
// as the package has it, comments included.
func agentConfigYAML(v agentConfigValues) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(firmware.DefaultConfig, &doc); err != nil {
		return nil, fmt.Errorf("the package's default configuration: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("the package's default configuration is not a mapping")
	}
	top := doc.Content[0]
	doc.HeadComment = fmt.Sprintf(`# edge-agent configuration of device %[1]s, written by fleetctl enroll
# --agent-config from the Debian package's default (firmware/edge-agent.yaml).
# Every key, with its meaning and default: docs/agent.md.
#
# %[2]s and %[3]s/ are relative to this file's directory: install
# the three together as /etc/edge-agent/config.yaml,
# /etc/edge-agent/%[2]s (root:edge-agent 0640) and
# /etc/edge-agent/%[3]s/.`, v.DeviceID, agentPasswordFile, agentTrustDir)
	// The package's commented-out uplink example: the real one follows.
	doc.FootComment, top.FootComment = "", ""
	if n := len(top.Content); n > 0 {
		top.Content[n-1].FootComment = ""
		if last := top.Content[n-1]; last.Kind == yaml.MappingNode && len(last.Content) > 0 {
			last.Content[len(last.Content)-1].FootComment = ""
		}
	}

	idKey, idVal := mapEntry(top, "deviceID")
	idVal.SetString(v.DeviceID)
	idKey.HeadComment = "# The device's id as enrolled with fleetd (MQTT username and client id)."
	// deviceID first, where the package's file explains it.
	if i := slices.Index(top.Content, idKey); i > 0 {
		top.Content = slices.Insert(slices.Delete(top.Content, i, i+2), 0, idKey, idVal)
	}

	lk, lv := mapEntry(top, "labels")
	lk.HeadComment = "# Reported to fleetd; rollout selectors match them."
	*lv = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	if len(v.Labels) == 0 {
		lv.Style = yaml.FlowStyle
	}
	for _, k := range slices.Sorted(maps.Keys(v.Labels)) {
		kn, vn := &yaml.Node{}, &yaml.Node{}
		kn.SetString(k)
		vn.SetString(v.Labels[k])
		lv.Content = append(lv.Content, kn, vn)
	}

	_, dd := mapEntry(top, "dataDir")
	oldData := dd.Value
	dd.SetString(v.DataDir)
	if _, wasm := mapEntry(top, "wasm"); wasm.Kind == yaml.MappingNode {
		if _, cache := mapEntry(wasm, "cacheDir"); oldData != "" && strings.HasPrefix(cache.Value, oldData+"/") {
			cache.SetString(v.DataDir + strings.TrimPrefix(cache.Value, oldData))
		}
	}

	tk, trust := mapEntry(top, "trust")
	if trust.Kind != yaml.MappingNode {
		*trust = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	}
	pk, keys := mapEntry(trust, "publicKeys")
	tk.HeadComment = ""
	pk.HeadComment = fmt.Sprintf(`# Publisher public keys pinned at enrolment (fleetctl enroll --trust-key):
# the agent installs only bundles signed by one of them, whatever fleetd
# sends. To trust another key too (a rotation), drop it into %s/.`, agentTrustDir)
	*keys = yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
	g := &yaml.Node{}
	g.SetString(agentTrustGlob)
	keys.Content = []*yaml.Node{g}

	uk, up := mapEntry(top, "uplink")
	uk.HeadComment = "# The MQTT uplink to fleetd; the password is the first line of " + agentPasswordFile + "."
	if up.Kind != yaml.MappingNode {
		*up = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	}
	for _, kv := range [][2]string{{"broker", v.Broker}, {"username", v.Username}, {"passwordFile", agentPasswordFile}} {
		_, n := mapEntry(up, kv[0])
		n.SetString(kv[1])
	}

	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// mapEntry returns the key and value nodes of key in mapping m, adding an
// empty entry at the end when there is none.
func mapEntry(m *yaml.Node, key string) (k, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i], m.Content[i+1]
		}
	}
	k, v = &yaml.Node{}, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}
	k.SetString(key)
	m.Content = append(m.Content, k, v)
	return k, v
}
