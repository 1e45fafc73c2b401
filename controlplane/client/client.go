// Package client is a small Go client of fleetd's HTTP API (the wire
// types are package controlplane/api), used by fleetctl and tests.
package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/shared/atomicfile"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// DefaultServer is the fleetd a client talks to when none is given.
const DefaultServer = "http://127.0.0.1:8080"

// maxResponseBytes caps a response body read into memory.
const maxResponseBytes = 64 << 20

// ErrNotFound, ErrUnauthorized, ErrForbidden and ErrConflict are wrapped
// by an *Error with that status, for errors.Is.
var (
	ErrNotFound     = errors.New("not found")
	ErrUnauthorized = errors.New("unauthorized")
	ErrForbidden    = errors.New("forbidden")
	ErrConflict     = errors.New("conflict")
)

// Error is an error response from fleetd.
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Message is fleetd's "error" text.
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("fleetd: %s (HTTP %d)", e.Message, e.Status)
}

// Is makes errors.Is(err, ErrNotFound) (and the others) work.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	case ErrForbidden:
		return e.Status == http.StatusForbidden
	case ErrConflict:
		return e.Status == http.StatusConflict
	}
	return false
}

// Client calls one fleetd.
type Client struct {
	base  *url.URL
	token string
	hc    *http.Client
}

// InProcess returns a client that calls the fleetd API handler h in this
// process, without a socket (the web console calls the API this way, with
// a session's token). Responses arrive whole, so it does not suit the
// watch stream.
func InProcess(h http.Handler, token string) *Client {
	c, err := New("http://fleetd", token, &http.Client{Transport: handlerTransport{h}})
	if err != nil {
		panic(err) // the URL is a constant
	}
	return c
}

// handlerTransport serves each request with a handler and answers what
// it wrote once it returns.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	in := req.Clone(req.Context())
	if in.Body == nil {
		in.Body = http.NoBody
	}
	in.RequestURI = req.URL.RequestURI()
	in.RemoteAddr = "inproc"
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, in)
	if req.Body != nil {
		req.Body.Close()
	}
	resp := rec.Result()
	resp.Request = req
	return resp, nil
}

// New returns a client of the fleetd at server (e.g.
// "http://127.0.0.1:8080") authenticating with the operator token; hc nil
// means a client with a 5-minute timeout.
func New(server, token string, hc *http.Client) (*Client, error) {
	u, err := ParseServer(server)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if hc == nil {
		hc = &http.Client{Timeout: 5 * time.Minute}
	}
	return &Client{base: u, token: token, hc: hc}, nil
}

// ParseServer checks that server is a URL New accepts: http or https
// with a host, optionally a path, no query or fragment.
func ParseServer(server string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSuffix(server, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("server %q is not an http(s)://host:port URL", server)
	}
	return u, nil
}

// do sends a request to path (under api.Prefix) with the given bearer
// token and decodes a JSON answer into out (if not nil).
func (c *Client) do(ctx context.Context, method, path string, query url.Values, token, contentType string, body io.Reader, out any) error {
	u := *c.base
	u.Path += api.Prefix + path
	u.RawQuery = query.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return fmt.Errorf("client: %s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e api.Error
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
			if e.Error == "" {
				e.Error = http.StatusText(resp.StatusCode)
			}
		}
		return &Error{Status: resp.StatusCode, Message: e.Error}
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("client: %s %s: decoding the answer: %w", method, path, err)
	}
	return nil
}

func (c *Client) getJSON(ctx context.Context, path string, q url.Values, out any) error {
	return c.do(ctx, http.MethodGet, path, q, c.token, "", nil, out)
}

func (c *Client) postJSON(ctx context.Context, path, token string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	return c.do(ctx, http.MethodPost, path, nil, token, "application/json", bytes.NewReader(b), out)
}

// Health calls GET /health (no token needed).
func (c *Client) Health(ctx context.Context) (*api.Health, error) {
	var h api.Health
	return &h, c.do(ctx, http.MethodGet, "/health", nil, "", "", nil, &h)
}

// Whoami calls GET /whoami: whose token the client holds, and its role.
func (c *Client) Whoami(ctx context.Context) (*api.Whoami, error) {
	var w api.Whoami
	return &w, c.getJSON(ctx, "/whoami", nil, &w)
}

// Fleet calls GET /fleet: counts over every device.
func (c *Client) Fleet(ctx context.Context) (*api.FleetSummary, error) {
	var f api.FleetSummary
	return &f, c.getJSON(ctx, "/fleet", nil, &f)
}

// DevicesQuery picks a page of devices.
type DevicesQuery struct {
	// Selector is a label selector ("" for all); Search a substring of
	// the id.
	Selector, Search string
	// Offset and Limit pick the page (Limit 0: all from Offset).
	Offset, Limit int
}

// DevicesPage returns the page of devices dq picks, with how many
// matched in all.
func (c *Client) DevicesPage(ctx context.Context, dq DevicesQuery) (*api.DeviceList, error) {
	q := url.Values{}
	if dq.Selector != "" {
		q.Set("selector", dq.Selector)
	}
	if dq.Search != "" {
		q.Set("q", dq.Search)
	}
	if dq.Offset > 0 {
		q.Set("offset", strconv.Itoa(dq.Offset))
	}
	if dq.Limit > 0 {
		q.Set("limit", strconv.Itoa(dq.Limit))
	}
	var l api.DeviceList
	return &l, c.getJSON(ctx, "/devices", q, &l)
}

// Devices lists the devices a label selector picks ("" for all).
func (c *Client) Devices(ctx context.Context, selector string) ([]api.Device, error) {
	q := url.Values{}
	if selector != "" {
		q.Set("selector", selector)
	}
	var l api.DeviceList
	return l.Devices, c.getJSON(ctx, "/devices", q, &l)
}

// Device returns one device.
func (c *Client) Device(ctx context.Context, id string) (*api.Device, error) {
	var d api.Device
	return &d, c.getJSON(ctx, "/devices/"+url.PathEscape(id), nil, &d)
}

// DeleteDevice removes a device and its records.
func (c *Client) DeleteDevice(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/devices/"+url.PathEscape(id), nil, c.token, "", nil, nil)
}

// Enroll enrols a device with an enrolment token (not the operator's) and
// returns its MQTT credentials.
func (c *Client) Enroll(ctx context.Context, enrolToken, id string, labels map[string]string) (*api.Enrolment, error) {
	var e api.Enrolment
	return &e, c.postJSON(ctx, "/devices", enrolToken, api.EnrolRequest{ID: id, Labels: labels}, &e)
}

// Assign has device id run bundle "name@version" (action "" is install).
func (c *Client) Assign(ctx context.Context, id, bundleID, action string) (*api.Assignment, error) {
	var a api.Assignment
	req := api.AssignRequest{Bundle: bundleID, Action: protocol.Action(action)}
	return &a, c.postJSON(ctx, "/devices/"+url.PathEscape(id)+"/assign", c.token, req, &a)
}

// RecordsQuery selects records of a device; zero fields select all.
type RecordsQuery struct {
	Kind         string
	Since, Until time.Time
	// Limit caps the result (fleetd's default when zero): the oldest
	// records, or the newest with NewestFirst.
	Limit int
	// NewestFirst asks for the newest records first (order=desc);
	// otherwise they come oldest first.
	NewestFirst bool
}

// Records returns records a device delivered, with its counters.
func (c *Client) Records(ctx context.Context, id string, rq RecordsQuery) (*api.Records, error) {
	q := url.Values{}
	if rq.Kind != "" {
		q.Set("kind", rq.Kind)
	}
	if !rq.Since.IsZero() {
		q.Set("since", rq.Since.Format(api.TimeFormat))
	}
	if !rq.Until.IsZero() {
		q.Set("until", rq.Until.Format(api.TimeFormat))
	}
	if rq.Limit > 0 {
		q.Set("limit", strconv.Itoa(rq.Limit))
	}
	if rq.NewestFirst {
		q.Set("order", "desc")
	}
	var r api.Records
	return &r, c.getJSON(ctx, "/devices/"+url.PathEscape(id)+"/records", q, &r)
}

// Keys calls GET /keys: the publisher keys fleetd verifies pushes with.
func (c *Client) Keys(ctx context.Context) (*api.Keys, error) {
	var k api.Keys
	if err := c.getJSON(ctx, "/keys", nil, &k); err != nil {
		return nil, err
	}
	return &k, nil
}

// Bundles lists the registry's bundles, or the versions of name.
func (c *Client) Bundles(ctx context.Context, name string) ([]api.Bundle, error) {
	path := "/bundles"
	if name != "" {
		path += "/" + url.PathEscape(name)
	}
	var l api.BundleList
	if err := c.getJSON(ctx, path, nil, &l); err != nil {
		return nil, err
	}
	out := make([]api.Bundle, len(l.Bundles))
	for i, e := range l.Bundles {
		out[i] = api.Bundle{Entry: e}
	}
	return out, nil
}

// Bundle returns name@version with download URLs.
func (c *Client) Bundle(ctx context.Context, name, version string) (*api.Bundle, error) {
	var b api.Bundle
	return &b, c.getJSON(ctx, "/bundles/"+url.PathEscape(name)+"/"+url.PathEscape(version), nil, &b)
}

// Push uploads a bundle file and its signature (streamed, not buffered).
// created is false when the registry already had this exact bundle.
func (c *Client) Push(ctx context.Context, bundlePath, sigPath string) (b *api.Bundle, created bool, err error) {
	return c.PushProgress(ctx, bundlePath, sigPath, nil)
}

// PushProgress is Push that also writes every byte of the bundle file to
// progress (if not nil) as it is sent, e.g. to a progress bar.
func (c *Client) PushProgress(ctx context.Context, bundlePath, sigPath string, progress io.Writer) (b *api.Bundle, created bool, err error) {
	for _, p := range []string{bundlePath, sigPath} {
		if _, err := os.Stat(p); err != nil {
			return nil, false, fmt.Errorf("client: %w", err)
		}
	}
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		pw.CloseWithError(writeParts(mw, bundlePath, sigPath, progress))
	}()
	u := *c.base
	u.Path += api.Prefix + "/bundles"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), pr)
	if err != nil {
		pr.Close()
		return nil, false, fmt.Errorf("client: %w", err)
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, false, fmt.Errorf("client: pushing %s: %w", bundlePath, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, false, fmt.Errorf("client: pushing %s: %w", bundlePath, err)
	}
	if resp.StatusCode >= 300 {
		var e api.Error
		if json.Unmarshal(body, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(body))
		}
		return nil, false, &Error{Status: resp.StatusCode, Message: e.Error}
	}
	var out api.Bundle
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, false, fmt.Errorf("client: decoding the push answer: %w", err)
	}
	return &out, resp.StatusCode == http.StatusCreated, nil
}

func writeParts(mw *multipart.Writer, bundlePath, sigPath string, progress io.Writer) error {
	for _, p := range []struct{ field, path string }{{"bundle", bundlePath}, {"sig", sigPath}} {
		f, err := os.Open(p.path)
		if err != nil {
			return err
		}
		var r io.Reader = f
		if p.field == "bundle" && progress != nil {
			r = io.TeeReader(f, progress)
		}
		w, err := mw.CreateFormFile(p.field, filepath.Base(p.path))
		if err == nil {
			_, err = io.Copy(w, r)
		}
		f.Close()
		if err != nil {
			return err
		}
	}
	return mw.Close()
}

// Download fetches a bundle's file and signature from the download URLs
// of b (as Bundle returns it) into bundlePath and sigPath, each written
// atomically (a temporary file beside it, renamed into place) so that
// neither is ever left half-written. The file's size and sha256 must be
// the registry's, or nothing is written. The URLs are signed: the
// operator token is not sent with them. progress, if not nil, is written
// every byte of the bundle file as it arrives.
func (c *Client) Download(ctx context.Context, b *api.Bundle, bundlePath, sigPath string, progress io.Writer) error {
	if b.URL == "" || b.SigURL == "" {
		return fmt.Errorf("client: %s: fleetd gave no download URL", b.ID())
	}
	tmpBundle, err := c.fetch(ctx, b.URL, bundlePath, b.Size, progress)
	if err != nil {
		return fmt.Errorf("client: downloading %s: %w", b.ID(), err)
	}
	defer os.Remove(tmpBundle)
	if size, sum, err := FileDigest(tmpBundle); err != nil {
		return fmt.Errorf("client: %w", err)
	} else if size != b.Size || sum != b.SHA256 {
		return fmt.Errorf("client: downloading %s: got %d bytes with sha256 %s; the registry has %d bytes with sha256 %s", b.ID(), size, sum, b.Size, b.SHA256)
	}
	tmpSig, err := c.fetch(ctx, b.SigURL, sigPath, maxSigBytes, nil)
	if err != nil {
		return fmt.Errorf("client: downloading the signature of %s: %w", b.ID(), err)
	}
	defer os.Remove(tmpSig)
	if err := os.Rename(tmpBundle, bundlePath); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	if err := os.Rename(tmpSig, sigPath); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	return atomicfile.SyncDir(filepath.Dir(bundlePath))
}

// maxSigBytes caps a downloaded signature (fleetd's own cap on uploads).
const maxSigBytes = 64 << 10

// fetch GETs rawURL (resolved against the server's URL) into a new
// temporary file beside dst, of at most limit bytes, and returns its
// path; the caller renames or removes it.
func (c *Client) fetch(ctx context.Context, rawURL, dst string, limit int64, progress io.Writer) (path string, err error) {
	u, err := c.base.Parse(rawURL)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		msg := strings.TrimSpace(string(b))
		if msg == "" {
			msg = http.StatusText(resp.StatusCode)
		}
		return "", &Error{Status: resp.StatusCode, Message: msg}
	}
	f, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-")
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	var r io.Reader = io.LimitReader(resp.Body, limit+1)
	if progress != nil {
		r = io.TeeReader(r, progress)
	}
	n, err := io.Copy(f, r)
	if err != nil {
		return "", err
	}
	if n > limit {
		return "", fmt.Errorf("more than the %d bytes expected", limit)
	}
	if err := f.Chmod(0o644); err != nil {
		return "", err
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	return f.Name(), f.Close()
}

// FileDigest returns the size of the file at path and its sha256 in
// lowercase hex, as the registry records a bundle's.
func FileDigest(path string) (size int64, sha256Hex string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}
