package registry

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Query parameters of a signed download URL.
const (
	paramExpires = "exp" // unix seconds
	paramDevice  = "dev" // device id, may be absent
	paramSig     = "sig" // base64url HMAC-SHA256
)

// signQuery returns the query that signs path for deviceID until exp.
func signQuery(key []byte, path, deviceID string, exp time.Time) url.Values {
	q := url.Values{}
	q.Set(paramExpires, strconv.FormatInt(exp.Unix(), 10))
	if deviceID != "" {
		q.Set(paramDevice, deviceID)
	}
	q.Set(paramSig, base64.RawURLEncoding.EncodeToString(urlMAC(key, path, deviceID, exp.Unix())))
	return q
}

// urlMAC is the HMAC-SHA256 of a versioned, newline-separated message; no
// field can contain a newline (paths, device ids and numbers are checked).
func urlMAC(key []byte, path, deviceID string, exp int64) []byte {
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "edgefleet-registry-url-v1\n%s\n%s\n%d", path, deviceID, exp)
	return m.Sum(nil)
}

// Reasons a signed URL is refused.
var (
	errURLExpired   = errors.New("download URL expired")
	errURLSignature = errors.New("download URL signature not valid")
)

// checkSignedURL verifies the signed query q for path at now and returns
// the device id it was issued to.
func checkSignedURL(key []byte, path string, q url.Values, now time.Time) (string, error) {
	if len(q[paramSig]) != 1 || len(q[paramExpires]) != 1 || len(q[paramDevice]) > 1 {
		return "", errURLSignature
	}
	mac, err := base64.RawURLEncoding.DecodeString(q.Get(paramSig))
	if err != nil {
		return "", errURLSignature
	}
	exp, err := strconv.ParseInt(q.Get(paramExpires), 10, 64)
	if err != nil {
		return "", errURLSignature
	}
	dev := q.Get(paramDevice)
	if checkDevice(dev) != nil {
		return "", errURLSignature
	}
	if !hmac.Equal(mac, urlMAC(key, path, dev, exp)) {
		return "", errURLSignature
	}
	if now.Unix() >= exp {
		return "", errURLExpired
	}
	return dev, nil
}

// Handler serves downloads of the registry's bundles and signatures at
// BaseURL's path + /bundles/NAME/VERSION/NAME-VERSION.bundle[.sig]: mount
// it on fleetd's mux at BaseURL's path, e.g.
//
//	mux.Handle("/registry/", reg.Handler())
//
// for BaseURL "https://fleetd.example.com/registry". A request is served
// if its signed URL is valid and unexpired, or else if
// FSConfig.Authorize admits it, or if FSConfig.Public. GET and HEAD are
// served with http.ServeContent: Range and If-Range requests, a strong
// ETag (the file's sha256 in quotes), Last-Modified (the push time) and
// an exact Content-Length.
func (f *FS) Handler() http.Handler {
	return http.HandlerFunc(f.serve)
}

func (f *FS) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	rel, ok := strings.CutPrefix(r.URL.Path, f.base.Path)
	if !ok {
		http.NotFound(w, r)
		return
	}
	name, version, file, ok := splitDownloadPath(rel)
	if !ok {
		http.NotFound(w, r)
		return
	}

	who, status, err := f.admit(r, rel)
	if err != nil {
		f.log.Info("registry: download refused", "path", rel, "remote", r.RemoteAddr, "err", err)
		http.Error(w, err.Error(), status)
		return
	}

	se, err := f.readEntry(name, version)
	if err != nil {
		if !errors.Is(err, ErrNotFound) {
			f.log.Error("registry: download", "path", rel, "err", err)
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		http.NotFound(w, r)
		return
	}
	base := se.FileName()
	var disk, etag, ctype string
	switch file {
	case base:
		disk, etag, ctype = bundleFile, se.SHA256, "application/octet-stream"
	case base + ".sig":
		sum := sha256.Sum256([]byte(se.Sig + "\n"))
		disk, etag, ctype = sigFile, hex.EncodeToString(sum[:]), "text/plain; charset=utf-8"
	default:
		http.NotFound(w, r)
		return
	}
	fh, err := os.Open(filepath.Join(f.versionDir(name, version), disk))
	if err != nil {
		// Deleted between reading the entry and opening the file.
		http.NotFound(w, r)
		return
	}
	defer fh.Close()
	h := w.Header()
	h.Set("ETag", `"`+etag+`"`)
	h.Set("Content-Type", ctype)
	// no-transform: a proxy that recompresses would break signatures and
	// ranges.
	h.Set("Cache-Control", "private, no-transform")
	h.Set("Content-Disposition", `attachment; filename="`+file+`"`)
	if r.Method == http.MethodGet && r.Header.Get("Range") == "" {
		f.log.Debug("registry: download", "file", file, "by", who)
	}
	http.ServeContent(w, r, file, se.Pushed, fh)
}

// admit decides whether r may download: it returns who asks (for logs),
// or the HTTP status and reason of a refusal.
func (f *FS) admit(r *http.Request, rel string) (string, int, error) {
	q := r.URL.Query()
	if q.Has(paramSig) {
		if f.cfg.URLKey == nil {
			return "", http.StatusForbidden, errors.New("signed URLs are not enabled")
		}
		dev, err := checkSignedURL(f.cfg.URLKey, rel, q, f.now())
		if err != nil {
			return "", http.StatusForbidden, err
		}
		return "device " + dev, 0, nil
	}
	if f.cfg.Authorize != nil {
		if err := f.cfg.Authorize(r); err != nil {
			// The hook's reason goes to the log, not to the client.
			f.log.Info("registry: download not authorized", "path", rel, "remote", r.RemoteAddr, "err", err)
			return "", http.StatusUnauthorized, errors.New("unauthorized")
		}
		return "authorized", 0, nil
	}
	if f.cfg.Public {
		return "public", 0, nil
	}
	return "", http.StatusForbidden, errors.New("a signed download URL is required")
}

// splitDownloadPath splits /bundles/NAME/VERSION/FILE, checking NAME and
// VERSION.
func splitDownloadPath(p string) (name, version, file string, ok bool) {
	rest, ok := strings.CutPrefix(p, "/bundles/")
	if !ok {
		return "", "", "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || checkID(parts[0], parts[1]) != nil {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}
