package fetch

// When and how long to wait before trying again: the retry policy given
// to go-retryablehttp and the exponential backoff with jitter.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

// checkRetry is go-retryablehttp's policy (connection errors, 429, 5xx
// except 501), keeping the status in the final error.
func checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	retry, cerr := retryablehttp.ErrorPropagatedRetryPolicy(ctx, resp, err)
	if cerr != nil && err == nil && resp != nil && ctx.Err() == nil {
		cerr = fmt.Errorf("%w: %s", ErrStatus, resp.Status)
	}
	return retry, cerr
}

// Backoff is exponential backoff with full jitter: a random wait in
// [min, min·2^attempt] capped at max, or the server's Retry-After on 429
// and 503. It has go-retryablehttp's Backoff signature.
func Backoff(min, max time.Duration, attempt int, resp *http.Response) time.Duration {
	if resp != nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
			if d := time.Duration(s) * time.Second; d < max {
				return d
			}
			return max
		}
	}
	ceil := max
	if attempt < 30 {
		if c := min << attempt; c > 0 && c < max {
			ceil = c
		}
	}
	if ceil <= min {
		return min
	}
	return min + rand.N(ceil-min+1)
}
