package testenv

import (
	"context"
	"net/http"
)

// CutWriter is a download server's failure: it passes Left body bytes,
// then kills the connection (http.ErrAbortHandler), or, with Hold set,
// keeps it open without sending more until Hold is done (a stalled
// transfer). Held, when not nil, is closed as the stall begins.
type CutWriter struct {
	http.ResponseWriter
	Left int64
	Hold context.Context
	Held chan struct{}
}

func (c *CutWriter) Write(p []byte) (int, error) {
	if int64(len(p)) <= c.Left {
		c.Left -= int64(len(p))
		return c.ResponseWriter.Write(p)
	}
	n, _ := c.ResponseWriter.Write(p[:c.Left])
	c.Left = 0
	c.ResponseWriter.(http.Flusher).Flush()
	if c.Hold == nil {
		panic(http.ErrAbortHandler)
	}
	if c.Held != nil {
		close(c.Held)
	}
	<-c.Hold.Done()
	return n, c.Hold.Err()
}
