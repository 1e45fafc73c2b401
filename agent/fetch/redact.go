package fetch

// Keeping a URL's secrets (query, password) out of errors and logs,
// go-retryablehttp's included.

import (
	"log/slog"
	"net/url"
	"regexp"
	"strings"
)

// scrubbed is an error whose message has a URL's secrets removed; it
// unwraps to the original.
type scrubbed struct {
	msg string
	err error
}

func (e *scrubbed) Error() string { return e.msg }
func (e *scrubbed) Unwrap() error { return e.err }

// scrub removes src's query (often a presigned token) and password from
// err's message: net/http and go-retryablehttp quote the URL in theirs,
// and error messages end up in logs and reported state.
func scrub(src string, err error) error {
	u, perr := url.Parse(src)
	if perr != nil {
		return err
	}
	msg := err.Error()
	if u.RawQuery != "" {
		msg = strings.ReplaceAll(msg, u.RawQuery, "REDACTED")
	}
	if p, ok := u.User.Password(); ok && p != "" {
		msg = strings.ReplaceAll(msg, p, "REDACTED")
	}
	if msg == err.Error() {
		return err
	}
	return &scrubbed{msg: msg, err: err}
}

// redact drops credentials and the query (often a presigned token) from a
// URL for logs and errors.
func redact(src string) string {
	u, err := url.Parse(src)
	if err != nil {
		return "<unparsable URL>"
	}
	u.User = nil
	if u.RawQuery != "" {
		u.RawQuery = "REDACTED"
	}
	return u.String()
}

// slogAdapter is go-retryablehttp's LeveledLogger on top of slog.
// Failed attempts it will retry are warnings for us, not errors. It
// removes URL queries (presigned tokens) from the values it logs.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Error(msg string, kv ...any) { a.l.Warn("fetch: "+msg, scrubKV(kv)...) }
func (a slogAdapter) Info(msg string, kv ...any)  { a.l.Info("fetch: "+msg, scrubKV(kv)...) }
func (a slogAdapter) Debug(msg string, kv ...any) { a.l.Debug("fetch: "+msg, scrubKV(kv)...) }
func (a slogAdapter) Warn(msg string, kv ...any)  { a.l.Warn("fetch: "+msg, scrubKV(kv)...) }

var queryRE = regexp.MustCompile(`\?[^\s"]*`)

func scrubKV(kv []any) []any {
	out := make([]any, len(kv))
	for i, v := range kv {
		switch v := v.(type) {
		case string:
			out[i] = queryRE.ReplaceAllString(v, "?REDACTED")
		case error:
			out[i] = queryRE.ReplaceAllString(v.Error(), "?REDACTED")
		default:
			out[i] = v
		}
	}
	return out
}
