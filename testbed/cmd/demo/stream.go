package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	agentapi "github.com/edgefleet/edgefleet/agent/api"
	"github.com/edgefleet/edgefleet/testbed/audio"
)

// frameBytes is one Silero VAD frame: 512 samples of 16-bit PCM at 16 kHz,
// 32 ms of audio.
const (
	frameSamples = 512
	frameBytes   = 2 * frameSamples
	frameEvery   = time.Second * frameSamples / audio.SampleRate
)

// streamer plays the part of a local application on one device: it
// streams synthetic audio through the agent's inference API on its unix
// socket, one raw PCM frame per request at the pace of real time, and
// keeps what came back.
type streamer struct {
	device string
	socket string
	model  string // the model name in the URL
	audio  audio.Config
	client *http.Client

	mu        sync.Mutex
	sent      int
	ok        int
	failed    int
	lastErr   string
	speech    int            // answers with probability ≥ 0.5
	byVersion map[string]int // answers per bundle version
	latency   map[string]*latencies
	recent    []float64 // the latest speech probabilities
}

// latencies keeps the latest request latencies of one bundle version.
type latencies struct {
	ring []time.Duration
	next int
}

const latencyKeep = 256

func (l *latencies) add(d time.Duration) {
	if len(l.ring) < latencyKeep {
		l.ring = append(l.ring, d)
		return
	}
	l.ring[l.next] = d
	l.next = (l.next + 1) % latencyKeep
}

// quantile returns the q-quantile (nearest rank) of the kept latencies.
func (l *latencies) quantile(q float64) time.Duration {
	if len(l.ring) == 0 {
		return 0
	}
	s := slices.Clone(l.ring)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

func newStreamer(device, socket, model string, a audio.Config) *streamer {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConnsPerHost: 1,
	}
	return &streamer{
		device: device, socket: socket, model: model, audio: a,
		client:    &http.Client{Transport: tr, Timeout: 10 * time.Second},
		byVersion: map[string]int{},
		latency:   map[string]*latencies{},
	}
}

// run streams until ctx ends. When a request takes longer than a frame,
// frames are dropped, as a live microphone would.
func (s *streamer) run(ctx context.Context) error {
	gen, err := audio.New(s.audio)
	if err != nil {
		return fmt.Errorf("audio for %s: %w", s.device, err)
	}
	defer s.client.CloseIdleConnections()
	tick := time.NewTicker(frameEvery)
	defer tick.Stop()
	frame := make([]byte, frameBytes)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if _, err := io.ReadFull(gen, frame); err != nil {
			return fmt.Errorf("audio for %s: %w", s.device, err)
		}
		s.infer(ctx, frame)
	}
}

func (s *streamer) infer(ctx context.Context, frame []byte) {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://agent/v2/models/"+s.model+"/infer", bytes.NewReader(frame))
	if err != nil {
		s.fail(err)
		return
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := s.client.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			s.fail(err)
		}
		return
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	took := time.Since(start)
	if err != nil {
		s.fail(err)
		return
	}
	if resp.StatusCode != http.StatusOK {
		s.fail(fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(body)))
		return
	}
	var r agentapi.Response
	if err := json.Unmarshal(body, &r); err != nil {
		s.fail(fmt.Errorf("decoding the answer: %w", err))
		return
	}
	p, found := r.Output("output")
	if !found {
		s.fail(fmt.Errorf("no output tensor in the answer"))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent++
	s.ok++
	if p >= 0.5 {
		s.speech++
	}
	s.byVersion[r.ModelVersion]++
	l := s.latency[r.ModelVersion]
	if l == nil {
		l = &latencies{}
		s.latency[r.ModelVersion] = l
	}
	l.add(took)
	s.recent = append(s.recent, p)
	if len(s.recent) > 8 {
		s.recent = s.recent[len(s.recent)-8:]
	}
}

func (s *streamer) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent++
	s.failed++
	s.lastErr = err.Error()
}

// streamStats is a snapshot of a streamer.
type streamStats struct {
	Device    string
	Sent, OK  int
	Failed    int
	LastErr   string
	Speech    int
	ByVersion map[string]int
	P95       map[string]time.Duration // by version
	Recent    []float64
}

func (s *streamer) stats() streamStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := streamStats{
		Device: s.device, Sent: s.sent, OK: s.ok, Failed: s.failed, LastErr: s.lastErr, Speech: s.speech,
		ByVersion: map[string]int{}, P95: map[string]time.Duration{}, Recent: slices.Clone(s.recent),
	}
	for v, n := range s.byVersion {
		st.ByVersion[v] = n
	}
	for v, l := range s.latency {
		st.P95[v] = l.quantile(0.95)
	}
	return st
}
