package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"

	"github.com/edgefleet/edgefleet/agent/fetch"
)

// ErrNotRunning: no agent answers on the socket (it does not exist, or
// nobody listens on it).
var ErrNotRunning = errors.New("agent: no running agent answers on the socket")

// Client talks to a running agent over its unix socket: the admin API
// for the CLI, and the inference API.
type Client struct {
	socket string
	// HTTP is the client over the socket; requests go to http://edge-agent/PATH.
	HTTP *http.Client
}

// NewClient returns a client for the agent listening on socket.
func NewClient(socket string) *Client {
	return &Client{socket: socket, HTTP: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConnsPerHost: 16,
	}}}
}

// RemoteError is an error answered by the agent.
type RemoteError struct {
	// Code is the HTTP status.
	Code int
	ErrorBody
}

func (e *RemoteError) Error() string { return e.ErrorBody.Error }

// Ping checks that an agent answers on the socket: nil, ErrNotRunning,
// or why the socket cannot be used (e.g. permission denied).
func (c *Client) Ping(ctx context.Context) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w: %s: %w", ErrNotRunning, c.socket, err)
		}
		return fmt.Errorf("agent: connecting to %s: %w", c.socket, err)
	}
	conn.Close()
	return nil
}

// Status returns the running agent's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.do(ctx, http.MethodGet, PathStatus, "", nil, &s)
	return s, err
}

// Rollback asks the running agent to return to its last-known-good
// version.
func (c *Client) Rollback(ctx context.Context) (Result, error) {
	var r Result
	err := c.do(ctx, http.MethodPost, PathRollback, "", nil, &r)
	return r, err
}

// Install asks the running agent to install a bundle. A URL is passed on
// for the agent to download; a local file and its signature (sig, or
// src + ".sig") are uploaded, so the agent needs no access to the
// caller's files.
func (c *Client) Install(ctx context.Context, src, sig string, opts InstallOptions) (Result, error) {
	var r Result
	if fetch.IsURL(src) {
		body, err := json.Marshal(InstallRequest{Bundle: src, Sig: sig, InstallOptions: opts})
		if err != nil {
			return r, err
		}
		err = c.do(ctx, http.MethodPost, PathInstall, "application/json", bytes.NewReader(body), &r)
		return r, err
	}
	if sig == "" {
		sig = src + ".sig"
	}
	bf, err := os.Open(src)
	if err != nil {
		return r, fmt.Errorf("agent: bundle: %w", err)
	}
	defer bf.Close()
	sf, err := os.Open(sig)
	if err != nil {
		return r, fmt.Errorf("agent: signature: %w", err)
	}
	defer sf.Close()
	opt, err := json.Marshal(InstallRequest{InstallOptions: opts})
	if err != nil {
		return r, err
	}
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		pw.CloseWithError(writeParts(mw, opt, src, bf, sf))
	}()
	err = c.do(ctx, http.MethodPost, PathInstall, mw.FormDataContentType(), pr, &r)
	pr.Close()
	return r, err
}

func writeParts(mw *multipart.Writer, opt []byte, name string, bundle, sig io.Reader) error {
	w, err := mw.CreateFormField(PartOptions)
	if err != nil {
		return err
	}
	if _, err := w.Write(opt); err != nil {
		return err
	}
	for _, p := range []struct {
		part, file string
		r          io.Reader
	}{{PartBundle, filepath.Base(name), bundle}, {PartSig, filepath.Base(name) + ".sig", sig}} {
		w, err := mw.CreateFormFile(p.part, p.file)
		if err != nil {
			return err
		}
		if _, err := io.Copy(w, p.r); err != nil {
			return err
		}
	}
	return mw.Close()
}

func (c *Client) do(ctx context.Context, method, path, contentType string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://edge-agent"+path, body)
	if err != nil {
		return err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w: %s: %w", ErrNotRunning, c.socket, err)
		}
		return fmt.Errorf("agent: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("agent: %s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		e := &RemoteError{Code: resp.StatusCode}
		if json.Unmarshal(b, &e.ErrorBody) != nil || e.ErrorBody.Error == "" {
			e.ErrorBody.Error = fmt.Sprintf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
		}
		return e
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("agent: %s %s: decoding the answer: %w", method, path, err)
	}
	return nil
}

// Close releases the client's idle connections.
func (c *Client) Close() { c.HTTP.CloseIdleConnections() }
