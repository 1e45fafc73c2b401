package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/agent"
	"github.com/edgefleet/edgefleet/agent/api"
	"github.com/edgefleet/edgefleet/agent/config"
)

// Agent is one device of a Fleet: a real edge agent (agent.Agent) running
// in this process with its own configuration file, data directory, unix
// socket and MQTT credentials.
type Agent struct {
	// ID is the device id; Labels its labels.
	ID     string
	Labels map[string]string
	// ConfigFile is its configuration (YAML, as on a device), DataDir its
	// data directory, Socket its API socket.
	ConfigFile, DataDir, Socket string
	// Client talks to it over its socket (admin API and HTTP).
	Client *agent.Client

	fleet    *Fleet
	password string

	mu      sync.Mutex
	agent   *agent.Agent
	cancel  context.CancelFunc
	done    chan error
	stopErr error
}

// AgentWASMTimeout is the per-call WASM deadline of the fleet's agents.
const AgentWASMTimeout = 30 * time.Second

// setup writes the agent's configuration and password file.
func (a *Agent) setup(f *Fleet, sharedWASM string) error {
	o := f.opts
	dir := filepath.Join(f.dir, "agents", a.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	a.ConfigFile = filepath.Join(dir, "config.yaml")
	a.DataDir = filepath.Join(dir, "data")
	a.Socket = filepath.Join(f.sockDir, a.ID+".sock")
	pw := filepath.Join(dir, "mqtt.password")
	if err := os.WriteFile(pw, []byte(a.password+"\n"), 0o600); err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	rate := o.SampleRate
	switch {
	case rate == 0:
		rate = 1
	case rate < 0:
		rate = 0
	}
	wasm := filepath.Join(a.DataDir, "cache", "wasm")
	if !o.SeparateWASMCache {
		wasm = sharedWASM
	}
	var y strings.Builder
	fmt.Fprintf(&y, "deviceID: %s\ndataDir: %s\nlogLevel: %s\n", a.ID, quote(a.DataDir), o.AgentLogLevel)
	if len(a.Labels) > 0 {
		y.WriteString("labels:\n")
		for k, v := range a.Labels {
			fmt.Fprintf(&y, "  %s: %s\n", quote(k), quote(v))
		}
	}
	if len(o.TrustKeys) > 0 {
		y.WriteString("trust:\n  publicKeys:\n")
		for _, k := range o.TrustKeys {
			fmt.Fprintf(&y, "    - %s\n", quote(k))
		}
	}
	fmt.Fprintf(&y, "api:\n  socket: %s\n", quote(a.Socket))
	fmt.Fprintf(&y, "buffer:\n  predictionSampleRate: %g\n", rate)
	fmt.Fprintf(&y, "runtime:\n  ortLibrary: %s\n  intraOpThreads: 1\n", quote(o.Artifacts.ORTLibrary))
	// A generous WASM deadline: the device default (2 s a call) is for one
	// agent on its own CPU, not for dozens sharing two busy cores, where
	// one slow call would fail a prediction the tests count on.
	fmt.Fprintf(&y, "wasm:\n  cacheDir: %s\n  timeout: %s\n", quote(wasm), AgentWASMTimeout)
	fmt.Fprintf(&y, "uplink:\n  broker: tcp://%s\n  username: %s\n  passwordFile: %s\n", f.Proxy.Addr(), a.ID, quote(pw))
	if err := os.WriteFile(a.ConfigFile, []byte(y.String()), 0o600); err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	a.Client = agent.NewClient(a.Socket)
	return nil
}

// Start starts the agent from its configuration file (again, after
// Stop: a restart on the same data directory).
func (a *Agent) Start() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.agent != nil {
		return fmt.Errorf("fleet: agent %s is running", a.ID)
	}
	cfg, err := config.Load(a.ConfigFile)
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	f := a.fleet
	opts := []agent.Option{agent.WithUplinkConfig(f.uplinkTune)}
	if f.opts.MetricsInterval > 0 {
		opts = append(opts, agent.WithMetricsInterval(f.opts.MetricsInterval))
	}
	if f.opts.ModelCache != nil {
		opts = append(opts, agent.WithModelCache(f.opts.ModelCache))
	}
	opts = append(opts, f.opts.AgentOptions...)
	ag, err := agent.New(cfg, f.log.With("device", a.ID), opts...)
	if err != nil {
		return fmt.Errorf("fleet: agent %s: %w", a.ID, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.agent, a.cancel, a.done, a.stopErr = ag, cancel, make(chan error, 1), nil
	go func(done chan<- error) { done <- ag.Run(ctx) }(a.done)
	return nil
}

// waitServing waits until the agent's socket answers (or its Run
// failed).
func (a *Agent) waitServing(ctx context.Context) error {
	a.mu.Lock()
	done := a.done
	a.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	for {
		err := a.Client.Ping(ctx)
		if err == nil {
			return nil
		}
		select {
		case rerr := <-done:
			done <- rerr
			return fmt.Errorf("fleet: agent %s stopped while starting: %v", a.ID, rerr)
		case <-ctx.Done():
			return fmt.Errorf("fleet: agent %s does not answer on %s: %w", a.ID, a.Socket, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Agent is the running agent.Agent, nil when stopped.
func (a *Agent) Agent() *agent.Agent {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.agent
}

// Status is the running agent's status (agent.Agent.Status): active
// bundle, outbox counters, uplink state.
func (a *Agent) Status() (agent.Status, error) {
	ag := a.Agent()
	if ag == nil {
		return agent.Status{}, fmt.Errorf("fleet: agent %s is stopped", a.ID)
	}
	return ag.Status()
}

// Stop shuts the agent down as SIGTERM would (it publishes its offline
// status if connected and flushes its outbox) and returns Run's error. It
// is a no-op on a stopped agent.
func (a *Agent) Stop() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.agent == nil {
		return nil
	}
	err := a.agent.Close()
	if rerr := <-a.done; rerr != nil {
		err = errors.Join(err, rerr)
	}
	a.cancel()
	a.agent = nil
	a.Client.Close()
	if err != nil {
		err = fmt.Errorf("fleet: agent %s: %w", a.ID, err)
	}
	return err
}

// Prediction is an agent's answer as the harness reads it.
type Prediction struct {
	api.Response
	// Bundle is the X-Edgefleet-Bundle header: "name@version".
	Bundle string `json:"-"`
}

// ErrPredict wraps an answer other than 200 from an agent's inference
// API.
var ErrPredict = errors.New("fleet: prediction refused")

// Predict posts an Open Inference Protocol request to model on the
// agent's unix socket, as a local application would: body is the JSON
// request, or raw bytes for the bundle's pre-processor if raw.
func (a *Agent) Predict(ctx context.Context, model string, body []byte, raw bool) (*Prediction, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://edge-agent/v2/models/"+model+"/infer", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if raw {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := a.Client.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fleet: predicting on %s: %w", a.ID, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("fleet: predicting on %s: %w", a.ID, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: %s: %s: %s", ErrPredict, a.ID, resp.Status, bytes.TrimSpace(b))
	}
	var p Prediction
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("fleet: %s: decoding the answer: %w: %s", a.ID, err, b)
	}
	p.Bundle = resp.Header.Get("X-Edgefleet-Bundle")
	return &p, nil
}

// TensorRequest is an Open Inference Protocol request with the two-sine
// frame as tensors (input, a zero state, sr), with the request id id (""
// for none).
func (art Artifacts) TensorRequest(id string) ([]byte, error) {
	inputs, err := os.ReadFile(filepath.Join(art.SmokeDir, "two-sine.inputs.json"))
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	var b bytes.Buffer
	b.WriteString("{")
	if id != "" {
		idJSON, _ := json.Marshal(id)
		fmt.Fprintf(&b, `"id":%s,`, idJSON)
	}
	b.WriteString(`"inputs":`)
	b.Write(bytes.TrimSpace(inputs))
	b.WriteString("}")
	return b.Bytes(), nil
}

// PCMFrame is the two-sine frame as 16-bit little-endian PCM, a raw
// request for the pre-processor.
func (art Artifacts) PCMFrame() ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(art.SmokeDir, "two-sine.pcm"))
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	return b, nil
}
