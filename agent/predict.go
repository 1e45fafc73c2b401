package agent

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"

	"github.com/edgefleet/edgefleet/agent/api"
	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/model"
)

// OneShot is one prediction without a daemon (edge-agent predict).
type OneShot struct {
	// Bundle is the .bundle file; Sig its signature ("" => Bundle+".sig").
	Bundle, Sig string
	// Keys are publisher public keys (PEM files); empty uses the
	// configuration's trust.publicKeys.
	Keys []string
	// Body is the request: an Open Inference Protocol inference request
	// (JSON), or raw bytes for the bundle's pre-processor if Raw.
	Body []byte
	Raw  bool
}

// Predict verifies and unpacks a signed bundle into a temporary
// directory, loads its model with cfg's runtime settings and answers one
// inference request through the same HTTP handler as the API. It returns
// the HTTP status and the response body, which is the error object for a
// status other than 200.
func Predict(ctx context.Context, cfg *config.Config, logger *slog.Logger, o OneShot) (int, []byte, error) {
	keys := o.Keys
	if len(keys) == 0 {
		keys = cfg.Trust.PublicKeys
	}
	trust, _, err := loadTrust(keys)
	if err != nil {
		return 0, nil, err
	}
	sig := o.Sig
	if sig == "" {
		sig = o.Bundle + ".sig"
	}
	tmp, err := os.MkdirTemp("", "edge-agent-predict-")
	if err != nil {
		return 0, nil, fmt.Errorf("agent: %w", err)
	}
	defer os.RemoveAll(tmp)
	dir := filepath.Join(tmp, "bundle")
	m, err := bundle.VerifyAndUnpack(ctx, o.Bundle, sig, trust, dir, bundle.Limits{MaxBundleBytes: int64(cfg.Install.MaxBundleBytes)})
	if err != nil {
		return 0, nil, fmt.Errorf("agent: %s: %w", o.Bundle, err)
	}
	a, err := New(cfg, logger)
	if err != nil {
		return 0, nil, err
	}
	a.mopts.WASM.CacheDir = "" // nothing to keep from a one-shot
	mdl, err := model.Load(ctx, dir, m, a.mopts)
	if err != nil {
		return 0, nil, fmt.Errorf("agent: loading the model of %s: %w", m.ID(), err)
	}
	defer mdl.Close()
	reg := api.NewRegistry()
	reg.Set(mdl)
	srv, err := api.New(api.Options{Backend: reg, Logger: logger, MaxBodyBytes: int64(cfg.API.MaxBodyBytes)})
	if err != nil {
		return 0, nil, fmt.Errorf("agent: %w", err)
	}
	defer srv.Shutdown(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "/v2/models/"+m.Name+"/infer", bytes.NewReader(o.Body))
	if err != nil {
		return 0, nil, err
	}
	req.ContentLength = int64(len(o.Body))
	if o.Raw {
		req.Header.Set("Content-Type", "application/octet-stream")
	} else {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes(), nil
}
